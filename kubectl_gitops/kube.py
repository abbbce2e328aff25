"""The one module that talks to the Kubernetes API.

A thin REST client: the kubeconfig is read by :mod:`kubectl_gitops.kubeconfig`
(which hands exec plugins and auth providers to the official client), and
requests go over a small pool of keep-alive HTTP/1.1 connections built on the
standard library, so applies and reads run concurrently without the
generated models' overhead. Server errors become :mod:`kubectl_gitops.errors`
exceptions at this boundary.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from kubectl_gitops import kubeconfig as kubeconfig_mod
from kubectl_gitops.errors import ClusterError, ConflictError, NotFoundError
from kubectl_gitops.resources import Mapper, ResourceType

FIELD_MANAGER = "kubectl-gitops"
_AGGREGATED = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
               "application/json")

_METADATA = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class ClusterInfo:
    server: str
    context: str
    namespace: str  # the context's namespace, else "default"


class Kube:
    """A connection to one cluster, from a kubeconfig and an optional context."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None,
                 *, concurrency: int = 16, timeout: float = 30.0) -> None:
        conn = kubeconfig_mod.load(kubeconfig, context)
        self.info = ClusterInfo(server=conn.server, context=conn.context,
                                namespace=conn.namespace)
        self._conn = conn
        self._http = _Pool(conn, connect_timeout=10.0, read_timeout=timeout)
        self.concurrency = concurrency
        self._discovery: dict[tuple[str, str], ResourceType] | None = None
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._pool_lock = threading.Lock()  # not _lock: discovery maps while holding it

    # --- plumbing -----------------------------------------------------------

    def _headers(self, content_type: str | None = None, accept: str = "application/json") \
            -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": "kubectl-gitops"}
        if content_type:
            headers["Content-Type"] = content_type
        auth = self._conn.authorization()
        if auth:
            headers["Authorization"] = auth
        return headers

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json",
                accept: str = "application/json", obj: str = "") -> Any:
        if params:
            path += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        try:
            status, payload = self._http.request(
                method, path, self._headers(content_type if data else None, accept), data)
        except (OSError, http.client.HTTPException) as e:
            raise ClusterError(f"cannot reach the cluster at {self._conn.server}: "
                               f"{_reason(e)}") from e
        if status >= 400:
            raise _status_error(status, payload, obj)
        return json.loads(payload) if payload else None

    def close(self) -> None:
        """Stop the worker threads and close the idle connections (the process
        exiting does both too)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._http.close()

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``fn`` over ``items`` with bounded concurrency, results in order.

        The worker threads live as long as this object: starting 16 threads
        for each of a run's dozen maps costs more than the requests of a
        no-change sync. A map inside ``fn`` runs in the calling worker.
        """
        items = list(items)
        if len(items) <= 1 or self.concurrency <= 1 or getattr(_worker, "active", False):
            return iter([fn(i) for i in items])
        futures = [self._executor().submit(_in_worker, fn, i) for i in items]
        try:
            return iter([f.result() for f in futures])
        except BaseException:
            for f in futures:  # an error or Ctrl-C: start nothing more, and
                f.cancel()     # return only when nothing runs any more
            wait(futures)
            raise

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None or self._pool_size != self.concurrency:
                if self._pool is not None:
                    self._pool.shutdown(wait=False)
                self._pool = ThreadPoolExecutor(max_workers=self.concurrency,
                                                thread_name_prefix="kube")
                self._pool_size = self.concurrency
            return self._pool

    # --- discovery ----------------------------------------------------------

    def resource_types(self) -> dict[tuple[str, str], ResourceType]:
        """Every served (group, kind), from one aggregated discovery round trip."""
        with self._lock:
            if self._discovery is None:
                docs = list(self.map(lambda p: self.request("GET", p, accept=_AGGREGATED),
                                     ["/api", "/apis"]))
                self._discovery = {}
                for doc in docs:
                    self._discovery.update(_parse_discovery(doc))
            return self._discovery

    def mapper(self) -> Mapper:
        return Mapper(self.resource_types())

    def forget_discovery(self) -> None:
        with self._lock:
            self._discovery = None

    # --- objects ------------------------------------------------------------

    @staticmethod
    def path(rt: ResourceType, namespace: str = "", name: str = "", version: str = "") -> str:
        version = version or rt.version
        base = f"/api/{version}" if not rt.group else f"/apis/{rt.group}/{version}"
        if rt.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{rt.plural}"
        return base + (f"/{quote(name, safe='')}" if name else "")

    def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", self.path(rt, namespace, name))
        except NotFoundError:
            return None

    def list(self, rt: ResourceType, namespace: str = "", *,
             label_selector: str | None = None,
             metadata_only: bool = False) -> list[dict[str, Any]]:
        """All objects of a type (in a namespace), in pages, with kind filled in.
        ``metadata_only`` asks for metadata alone (no Secret data crosses the wire)."""
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"labelSelector": label_selector, "limit": 500}
        accept = _METADATA if metadata_only else "application/json"
        while True:
            doc = self.request("GET", self.path(rt, namespace), params=params, accept=accept)
            api_version = doc.get("apiVersion", "v1")
            for item in doc.get("items") or []:
                if metadata_only:
                    item["kind"] = rt.kind
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", rt.kind)
                items.append(item)
            cont = (doc.get("metadata") or {}).get("continue")
            if not cont:
                return items
            params["continue"] = cont

    def apply(self, rt: ResourceType, obj: dict[str, Any], *, dry_run: bool = False,
              force: bool = False, field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply; ``dry_run`` predicts the result without writing."""
        params = {"fieldManager": field_manager, "force": "true" if force else None,
                  "dryRun": "All" if dry_run else None}
        return self.request("PATCH", self._object_path(rt, obj, named=True), params=params,
                            body=obj, content_type="application/apply-patch+yaml",
                            obj=_label(obj))

    def create(self, rt: ResourceType, obj: dict[str, Any], *, dry_run: bool = False,
               field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """A plain create (POST), with strict field validation as an apply
        has. As a dry-run it predicts an apply that creates the object at
        about half the server's cost: no read of the store, no merge."""
        params = {"fieldManager": field_manager, "fieldValidation": "Strict",
                  "dryRun": "All" if dry_run else None}
        return self.request("POST", self._object_path(rt, obj, named=False), params=params,
                            body=obj, obj=_label(obj))

    def _object_path(self, rt: ResourceType, obj: dict[str, Any], *, named: bool) -> str:
        """The object's URL (``named``) or its collection's, in the object's
        own apiVersion."""
        meta = obj["metadata"]
        return self.path(rt, meta.get("namespace", ""), meta["name"] if named else "",
                         obj["apiVersion"].rpartition("/")[2])

    def delete(self, rt: ResourceType, namespace: str, name: str, *,
               uid: str | None = None, propagation: str = "Background") -> None:
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions",
                                "propagationPolicy": propagation}
        if uid:
            body["preconditions"] = {"uid": uid}  # never delete a re-created namesake
        try:
            self.request("DELETE", self.path(rt, namespace, name), body=body,
                         obj=f"{rt.kind} {namespace + '/' if namespace else ''}{name}")
        except NotFoundError:
            pass

    def whoami(self) -> str:
        """The cluster user, from a SelfSubjectReview (empty when not allowed)."""
        try:
            doc = self.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                               body={"apiVersion": "authentication.k8s.io/v1",
                                     "kind": "SelfSubjectReview"})
        except ClusterError:
            return ""
        return ((doc.get("status") or {}).get("userInfo") or {}).get("username", "")


_worker = threading.local()


def _in_worker(fn: Callable[[T], R], item: T) -> R:
    _worker.active = True
    try:
        return fn(item)
    finally:
        _worker.active = False


def _label(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')} {ns + '/' if ns else ''}{meta.get('name')}"


def _parse_discovery(doc: dict[str, Any]) -> dict[tuple[str, str], ResourceType]:
    types: dict[tuple[str, str], ResourceType] = {}
    for group_doc in doc.get("items") or []:
        group = (group_doc.get("metadata") or {}).get("name", "")
        # Versions are listed in preference order; the first serving a kind wins.
        for ver in group_doc.get("versions") or []:
            for res in ver.get("resources") or []:
                kind = (res.get("responseKind") or {}).get("kind")
                if not kind or (group, kind) in types or "/" in res.get("resource", "/"):
                    continue
                types[(group, kind)] = ResourceType(group, kind, res.get("scope") == "Namespaced",
                                                    plural=res["resource"],
                                                    version=ver["version"],
                                                    verbs=tuple(res.get("verbs") or ()))
    return types


def _status_error(status: int, data: bytes, obj: str) -> ClusterError:
    try:
        doc = json.loads(data)
        message = doc.get("message") or data.decode("utf-8", "replace")
        reason = doc.get("reason", "")
    except ValueError:
        message, reason = data.decode("utf-8", "replace").strip()[:300], ""
    if status == 401:
        message = f"unauthorized: {message}; check the kubeconfig's credentials"
    cls = NotFoundError if status == 404 else ConflictError if status == 409 and \
        reason == "Conflict" and "conflict" in message.lower() else ClusterError
    return cls(message, status=status, reason=reason, obj=obj)


# --- transport --------------------------------------------------------------

class _Pool:
    """Keep-alive HTTP/1.1 connections to one API server.

    Each request is written with one ``sendall`` (head and body together):
    ``http.client`` and ``urllib3`` write them separately, which costs the
    server an extra wake-up and read per request, and on a busy machine that
    is a third of a small request's time. A connection is taken by one
    thread at a time; there are never more than the threads using the pool.
    """

    def __init__(self, conn: kubeconfig_mod.Connection, *, connect_timeout: float,
                 read_timeout: float) -> None:
        url = urlsplit(conn.server)
        self._tls = url.scheme == "https"
        self._host = url.hostname or "localhost"
        self._port = url.port or (443 if self._tls else 80)
        self._prefix = url.path.rstrip("/")  # a server URL may carry a path
        self._host_header = url.netloc.rpartition("@")[2]
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._conn = conn
        self._context: ssl.SSLContext | None = None
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()

    def _ssl_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._context is None:
                c = self._conn
                ctx = ssl.create_default_context(cafile=c.ca_file)
                if not c.verify:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                if c.cert_file:
                    ctx.load_cert_chain(c.cert_file, c.key_file)
                self._context = ctx
            return self._context

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self._host, self._port), timeout=self._connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls:
                sock = self._ssl_context().wrap_socket(sock, server_hostname=self._host)
            sock.settimeout(self._read_timeout)
        except BaseException:
            sock.close()
            raise
        return sock

    def request(self, method: str, path: str, headers: dict[str, str],
                body: bytes | None) -> tuple[int, bytes]:
        lines = [f"{method} {self._prefix}{path} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        message = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        while True:
            with self._lock:
                sock, reused = (self._idle.pop(), True) if self._idle else (None, False)
            if sock is None:
                sock = self._connect()
            try:
                sock.sendall(message)
                resp = http.client.HTTPResponse(sock, method=method)
                resp.begin()
                payload = resp.read()
            except (ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
                sock.close()
                if reused:  # the server closed an idle connection: the request never ran
                    continue
                raise
            except BaseException:
                sock.close()
                raise
            if resp.will_close:
                sock.close()
            else:
                with self._lock:
                    self._idle.append(sock)
            return resp.status, payload

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()


def _reason(e: BaseException) -> str:
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {e.verify_message}"
    return str(getattr(e, "strerror", None) or e) or type(e).__name__
