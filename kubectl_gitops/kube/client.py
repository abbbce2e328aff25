"""The one module that talks to the Kubernetes API.

A thin REST client: the kubeconfig is read by :mod:`kubectl_gitops.kube.kubeconfig`
and credentials come from :mod:`kubectl_gitops.kube.credentials` (kubectl's rules,
without the official client), and requests go over the keep-alive HTTP/1.1
connections of :mod:`kubectl_gitops.kube.transport`, so applies and reads
run concurrently without the generated models' overhead. Retries, the
server's warnings, discovery and its cache are here; server errors become
:mod:`kubectl_gitops.errors` exceptions at this boundary.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.message import Message
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from kubectl_gitops import diskcache
from kubectl_gitops.errors import ClusterError, ConflictError, NotFoundError
from kubectl_gitops.kube import kubeconfig as kubeconfig_mod
from kubectl_gitops.kube import transport
from kubectl_gitops.kube.resources import Mapper, ResourceType

if TYPE_CHECKING:  # the pool starts with the first map large enough to need it
    from concurrent.futures import ThreadPoolExecutor

FIELD_MANAGER = "kubectl-gitops"
DEADLINE_GRACE = 5.0
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
    """A connection to one cluster, made as kubectl makes it from its
    connection flags (:class:`kubeconfig.Overrides`; none: the defaults).

    ``timeout`` bounds each request when ``--request-timeout`` does not say;
    ``deadline`` (seconds from now) bounds the whole run: ``deadline_at`` is
    when the run's own steps should stop, and requests are refused
    ``DEADLINE_GRACE`` seconds later.
    """

    def __init__(self, overrides: kubeconfig_mod.Overrides | None = None, *,
                 concurrency: int = 16, timeout: float = 30.0,
                 deadline: float | None = None) -> None:
        conn = kubeconfig_mod.load(overrides=overrides or kubeconfig_mod.Overrides())
        self.info = ClusterInfo(server=conn.server, context=conn.context,
                                namespace=conn.namespace)
        self._conn = conn
        # --request-timeout 0 means no limit, as in kubectl.
        read_timeout = timeout if conn.request_timeout is None else conn.request_timeout or None
        self._http = transport.Pool(conn, connect_timeout=min(10.0, read_timeout or 10.0),
                                    read_timeout=read_timeout)
        # Requests may run a little past the deadline: the run's own steps
        # (sync's --wait) stop at it, and the grace lets them record the outcome.
        self.deadline_at: float | None = None
        self._deadline: tuple[float, float] | None = None
        if deadline:
            self.deadline_at = time.monotonic() + deadline
            self._deadline = (self.deadline_at + DEADLINE_GRACE, deadline)
        # (message, until): after a request got no answer, the others fail at
        # once for as long again instead of each waiting out its own timeout;
        # a long-lived connection (the agent's) tries again after that.
        self._stalled: tuple[str, float] | None = None
        self.concurrency = concurrency
        self._discovery: dict[tuple[str, str], ResourceType] | None = None
        self._discovery_docs: tuple[dict[str, Any], ...] = ()
        self._discovery_cache = _DiscoveryCache.for_server(conn.server)
        self._core_checked = False  # /api asked this run (else reused from the disk cache)
        self._reuse_core = True
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._pool_lock = threading.Lock()  # not _lock: discovery maps while holding it

    # --- plumbing -----------------------------------------------------------

    def _headers(self, content_type: str | None = None, accept: str = "application/json") \
            -> list[tuple[str, str]]:
        headers = [("Accept", accept), ("User-Agent", "kubectl-gitops")]
        if content_type:
            headers.append(("Content-Type", content_type))
        auth = self._conn.authorization()
        if auth:
            headers.append(("Authorization", auth))
        return headers + self._conn.impersonate

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json",
                accept: str = "application/json", obj: str = "",
                etag: str | None = None, response: dict[str, Any] | None = None,
                warn: bool = True) -> Any:
        """One API call, its JSON answer decoded. ``etag`` makes it conditional
        (``If-None-Match``); ``response`` receives the status and the ETag.
        ``warn=False``: the server's warnings are not shown (a listing the
        tool makes on its own, of every type, says nothing the user asked)."""
        if params:
            path += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        reauthenticated = False
        attempt = 0
        while True:
            timeout = self._time_left()
            started = time.monotonic()
            try:
                status, headers, payload = self._http.request(
                    method, path, self._headers(content_type if data else None, accept)
                    + ([("If-None-Match", etag)] if etag else []), data, timeout)
            except ClusterError:
                raise
            except (OSError, http.client.HTTPException) as e:
                if isinstance(e, socket.timeout):
                    message = (f"the cluster at {self._conn.server} stopped answering "
                               f"(no reply within {round(timeout or 0, 1):g} s)")
                    self._stalled = (message, time.monotonic() + (timeout or 30.0))
                    raise ClusterError(message) from e
                if method == "GET" and attempt < _READ_RETRIES and transport.transient(e):
                    attempt += 1
                    self._sleep(0.25 * 2 ** attempt)
                    continue
                raise ClusterError(self._http.describe(e)) from e
            self._log(method, path, status, started)
            if warn:
                _warn(headers)
            if status == 401 and not reauthenticated and \
                    self._conn.credentials.after_unauthorized():
                reauthenticated = True  # an exec plugin runs again, a token file is re-read
                self._http.close()
                continue
            delay = _retry_delay(method, status, headers, attempt)
            if delay is not None:
                attempt += 1
                self._sleep(delay)
                continue
            if status >= 400:
                raise _status_error(status, payload, obj)
            if response is not None:
                response.update(status=status, etag=headers.get("ETag"))
            return json.loads(payload) if payload and status != 304 else None

    def _time_left(self) -> float | None:
        """The socket timeout for the next request; fails fast once the server
        has stopped answering or the run's deadline has passed."""
        if self._stalled and time.monotonic() < self._stalled[1]:
            raise ClusterError(self._stalled[0])
        timeout = self._http.read_timeout
        if self._deadline is None:
            return timeout
        left = self._deadline[0] - time.monotonic()
        if left <= 0:
            raise ClusterError(f"the --timeout of {self._deadline[1]:g} s ran out "
                               f"(cluster {self._conn.server})")
        return left if timeout is None else min(timeout, left)

    def _sleep(self, seconds: float) -> None:
        if self._deadline is not None:
            seconds = min(seconds, max(0.0, self._deadline[0] - time.monotonic()))
        time.sleep(seconds)

    def _log(self, method: str, path: str, status: int, started: float) -> None:
        # kubectl logs each response from -v 6 on; never headers or bodies.
        if self._conn.verbosity >= 6:
            ms = (time.monotonic() - started) * 1000
            sys.stderr.write(f"{method} {self._conn.server}{path} {status} "
                             f"{http.client.responses.get(status, '')} in {ms:.0f} "
                             "milliseconds\n")

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
        if self._inline(len(items)):
            return iter([fn(i) for i in items])
        return iter(self._gather([self._executor().submit(_in_worker, fn, i) for i in items]))

    def map_then(self, fn: Callable[[T], R], items: Iterable[T],
                 then: Callable[[T, R], list[Callable[[], None]]]) -> list[R]:
        """``fn`` over ``items`` as :meth:`map`; as each result comes in,
        ``then(item, result)`` (in the caller's thread) names follow-up
        calls, which start at once on the same workers instead of waiting
        for the slowest of ``items`` (a plan's dry-runs start as soon as the
        LIST of their type and namespace is in)."""
        items = list(items)
        if self._inline(len(items)):
            results = [fn(i) for i in items]
            follow = [call for i, r in zip(items, results) for call in then(i, r)]
            list(self.map(_call, follow))
            return results
        from concurrent.futures import FIRST_COMPLETED, wait  # noqa: PLC0415

        pool = self._executor()
        first = [pool.submit(_in_worker, fn, i) for i in items]
        of = {f: i for f, i in zip(first, items)}
        later: list[Any] = []
        pending = set(first)  # only these are waited on one by one: a few
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    later += [pool.submit(_in_worker, _call, c) for c in then(of[f], f.result())]
            for f in later:
                f.result()
        except BaseException:
            _stop(first + later)
            raise
        return [f.result() for f in first]

    def _inline(self, n: int) -> bool:
        return n <= _INLINE or self.concurrency <= 1 or getattr(_worker, "active", False)

    @staticmethod
    def _gather(futures: list[Any]) -> list[Any]:
        """The results in order (see :func:`_stop` for an error or Ctrl-C)."""
        try:
            return [f.result() for f in futures]
        except BaseException:
            _stop(futures)
            raise

    def _executor(self) -> ThreadPoolExecutor:
        from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

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
        """Every served (group, kind), from aggregated discovery.

        Kept on disk per server (:class:`_DiscoveryCache`) as kubectl keeps
        it under ``~/.kube/cache/discovery``: ``/apis`` is asked every run,
        conditionally (a 304 costs no body), and ``/api``, the built-in
        core group that changes only with the server's version, is reused
        while ``/apis`` is unchanged. :meth:`mapper` asks ``/api`` again
        when a manifest names a kind it does not know.
        """
        with self._lock:
            if self._discovery is None:
                apis, changed = self._discover("/apis")
                core, _ = self._discover("/api", reuse=not changed)
                self._discovery_docs = (core, apis)
                self._discovery = {**_parse_discovery(core), **_parse_discovery(apis)}
            return self._discovery

    def capabilities(self) -> tuple[str, list[str]]:
        """What Helm calls Capabilities: the server's version (``/version``)
        and every served ``group/version`` and ``group/version/Kind``
        (from the discovery documents, cached as :meth:`resource_types`)."""
        self.resource_types()
        version = self.request("GET", "/version")
        found: set[str] = set()
        for doc in self._discovery_docs:
            for group_doc in doc.get("items") or []:
                group = (group_doc.get("metadata") or {}).get("name", "")
                for ver in group_doc.get("versions") or []:
                    gv = f"{group}/{ver.get('version')}" if group else str(ver.get("version"))
                    found.add(gv)
                    for res in ver.get("resources") or []:
                        kind = (res.get("responseKind") or {}).get("kind")
                        if kind and "/" not in res.get("resource", "/"):
                            found.add(f"{gv}/{kind}")
        return str(version.get("gitVersion") or ""), sorted(found)

    def _discover(self, path: str, *, reuse: bool = False) -> tuple[dict[str, Any], bool]:
        """``path``'s discovery document, and whether it differs from the cached one."""
        cached = self._discovery_cache.read(path)
        if cached is not None and reuse and self._reuse_core:
            return cached[1], False
        if path == "/api":
            self._core_checked = True
        response: dict[str, Any] = {}
        doc = self.request("GET", path, accept=_AGGREGATED,
                           etag=cached[0] if cached else None, response=response)
        if response.get("status") == 304 and cached is not None:
            self._discovery_cache.touch(path)
            return cached[1], False
        self._discovery_cache.write(path, response.get("etag"), doc)
        return doc, True

    def mapper(self, wanted: Iterable[tuple[str, str]] = ()) -> Mapper:
        """The served types; ``wanted`` (group, kind) pairs the reused
        discovery does not know make it ask the server again, so a type
        added since is never missed."""
        types = self.resource_types()
        if not self._core_checked and any(k not in types for k in wanted):
            with self._lock:  # /apis was asked already: only the reused /api may be behind
                core, _ = self._discover("/api")
                self._discovery_docs = (core, *self._discovery_docs[1:])
                self._discovery = types = {**types, **_parse_discovery(core)}
        return Mapper(types)

    def forget_discovery(self) -> None:
        """Ask the server again on the next use (after CRDs were created)."""
        with self._lock:
            self._discovery = None
            self._reuse_core = False

    # --- objects ------------------------------------------------------------

    @staticmethod
    def path(rt: ResourceType, namespace: str = "", name: str = "", version: str = "") -> str:
        version = version or rt.version
        base = f"/api/{version}" if not rt.group else f"/apis/{rt.group}/{version}"
        if rt.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{rt.plural}"
        return base + (f"/{quote(name, safe='')}" if name else "")

    def get(self, rt: ResourceType, namespace: str, name: str, *,
            version: str = "") -> dict[str, Any] | None:
        """The object in ``version`` (default: the preferred one), or None."""
        try:
            return self.request("GET", self.path(rt, namespace, name, version))
        except NotFoundError:
            return None

    def list(self, rt: ResourceType, namespace: str = "", *,
             label_selector: str | None = None, version: str = "",
             metadata_only: bool = False, warn: bool = True) -> list[dict[str, Any]]:
        """All objects of a type (in a namespace), in pages, with kind filled in.
        ``metadata_only`` asks for metadata alone (no Secret data crosses the wire);
        ``warn=False`` drops the server's warnings (see :meth:`request`)."""
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"labelSelector": label_selector, "limit": 500}
        accept = _METADATA if metadata_only else "application/json"
        while True:
            doc = self.request("GET", self.path(rt, namespace, version=version), params=params,
                               accept=accept, warn=warn)
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
               uid: str | None = None, resource_version: str | None = None,
               propagation: str = "Background") -> None:
        """Delete, if it is still there. ``uid`` (never a re-created namesake)
        and ``resource_version`` (not changed since it was read) are
        preconditions: the server refuses with 409 when either differs."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions",
                                "propagationPolicy": propagation}
        pre = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        if pre:
            body["preconditions"] = pre
        try:
            self.request("DELETE", self.path(rt, namespace, name), body=body,
                         obj=f"{rt.kind} {namespace + '/' if namespace else ''}{name}")
        except NotFoundError:
            pass

    def watch(self, rt: ResourceType, namespace: str = "", *, label_selector: str | None = None,
              resource_version: str | None = None, timeout: int = 300) \
            -> Iterator[dict[str, Any]]:
        """Watch events (``{"type": ..., "object": ...}``) of a type, from
        ``resource_version``, with bookmarks; ends when the server closes the
        watch after ``timeout`` seconds. One dedicated connection: a watch
        holds its socket for its whole life, so it never enters the pool."""
        params = {"watch": "1", "labelSelector": label_selector,
                  "resourceVersion": resource_version, "timeoutSeconds": timeout,
                  "allowWatchBookmarks": "true"}
        path = self.path(rt, namespace) + "?" + urlencode(
            {k: v for k, v in params.items() if v is not None})
        try:
            sock, resp = self._http.stream(path, self._headers(), read_timeout=timeout + 30)
        except (OSError, http.client.HTTPException) as e:
            raise ClusterError(self._http.describe(e)) from e
        try:
            if resp.status >= 400:
                raise _status_error(resp.status, resp.read(), f"watch {rt.kind}")
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException):
                    return  # the connection broke: the caller watches again
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            sock.close()

    def identity(self) -> dict[str, Any]:
        """The user the server sees (impersonation included), from a
        SelfSubjectReview: ``username``, ``uid``, ``groups``, ``extra``;
        empty when the server does not allow the review."""
        try:
            doc = self.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                               body={"apiVersion": "authentication.k8s.io/v1",
                                     "kind": "SelfSubjectReview"})
        except ClusterError as e:
            if e.status is None:  # no answer, or no credentials: not a refusal
                raise
            return {}
        return dict((doc.get("status") or {}).get("userInfo") or {})

    def whoami(self) -> str:
        """The cluster user's name (empty when the review is not allowed)."""
        return str(self.identity().get("username", ""))


_worker = threading.local()


def _in_worker(fn: Callable[[T], R], item: T) -> R:
    _worker.active = True
    try:
        return fn(item)
    finally:
        _worker.active = False


def _stop(futures: list[Any]) -> None:
    """After an error or Ctrl-C: start nothing more, and return only when
    nothing runs any more."""
    from concurrent.futures import wait  # noqa: PLC0415 - small runs never need it

    for f in futures:
        f.cancel()
    wait(futures)


def _call(fn: Callable[[], None]) -> None:
    fn()


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
                                                    verbs=tuple(res.get("verbs") or ()),
                                                    status_subresource=any(
                                                        s.get("subresource") == "status"
                                                        for s in res.get("subresources") or []))
    return types


class _DiscoveryCache:
    """Discovery documents of one server on disk, with the ETag each was
    served with: ``$XDG_CACHE_HOME/kubectl-gitops/discovery/<host_port>/``
    (kubectl_gitops.diskcache: private files, written whole, anything odd
    counts as absent; failing to write only costs the next run a full fetch)."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory

    @classmethod
    def for_server(cls, server: str) -> _DiscoveryCache:
        url = urlsplit(server)
        key = re.sub(r"[^A-Za-z0-9.-]", "_", (url.netloc.rpartition("@")[2] + url.path)
                     .rstrip("/")) or "_"
        return cls(diskcache.directory("discovery", key))

    def _file(self, path: str) -> str:
        return os.path.join(str(self.directory), "apis.json" if path == "/apis" else "api.json")

    def read(self, path: str) -> tuple[str, dict[str, Any]] | None:
        if self.directory is None or not diskcache.private(self.directory):
            return None
        entry = diskcache.read_json(self._file(path))
        try:
            etag, doc = entry["etag"], entry["doc"]
        except (KeyError, TypeError):
            return None
        if not isinstance(etag, str) or not etag or not isinstance(doc, dict):
            return None
        return etag, doc

    def touch(self, path: str) -> None:
        try:
            os.utime(self._file(path))
        except OSError:
            pass

    def write(self, path: str, etag: str | None, doc: Any) -> None:
        if self.directory is None or not etag or not isinstance(doc, dict):
            return
        diskcache.write_json(self._file(path), {"etag": etag, "doc": doc})


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


# --- retries and warnings -------------------------------------------------------

_INLINE = 4  # a map of this many items runs in the caller: threads and connections cost more
_READ_RETRIES = 3
_THROTTLE_RETRIES = 10  # client-go's limit for 429 with Retry-After
_MAX_RETRY_AFTER = 30.0
_warned: set[str] = set()
_warned_lock = threading.Lock()
_WARNING = re.compile(r'^\s*\d{3}\s+\S+\s+"((?:[^"\\]|\\.)*)"')


def _retry_delay(method: str, status: int, headers: Message, attempt: int) -> float | None:
    """Seconds to wait before asking again, or None. A 429 was not processed,
    so any request may be repeated; a 5xx only for reads (a write may have
    happened)."""
    if status == 429 and attempt < _THROTTLE_RETRIES:
        return _retry_after(headers, 1.0)
    if status >= 500 and method == "GET" and attempt < _READ_RETRIES:
        return _retry_after(headers, 0.25 * 2 ** (attempt + 1))
    return None


def _retry_after(headers: Message, default: float) -> float:
    try:
        return min(max(float(headers.get("Retry-After", default)), 0.0), _MAX_RETRY_AFTER)
    except ValueError:
        return default


def _warn(headers: Message) -> None:
    """The server's ``Warning:`` headers on stderr, each text once, as kubectl."""
    for value in headers.get_all("Warning") or ():
        match = _WARNING.match(value)
        text = re.sub(r"\\(.)", r"\1", match.group(1)) if match else value
        with _warned_lock:
            if text in _warned:
                continue
            _warned.add(text)
        sys.stderr.write(f"Warning: {text}\n")
