"""The one module that talks to the Kubernetes API.

A thin REST client: kubeconfig handling comes from the official ``kubernetes``
package (certificates, tokens, exec plugins), requests go straight through a
pooled ``urllib3`` connection so applies and reads can run concurrently
without the generated models' overhead. Server errors become
:mod:`kubectl_gitops.errors` exceptions at this boundary.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from kubectl_gitops import kubeconfig as kubeconfig_mod
from kubectl_gitops.errors import ClusterError, ConflictError, NotFoundError
from kubectl_gitops.resources import Mapper, ResourceType

FIELD_MANAGER = "kubectl-gitops"
_AGGREGATED = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
               "application/json")

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
        import urllib3  # noqa: PLC0415

        conn = kubeconfig_mod.load(kubeconfig, context)
        self.info = ClusterInfo(server=conn.server, context=conn.context,
                                namespace=conn.namespace)
        self._conn = conn
        self._timeout = urllib3.Timeout(connect=10.0, read=timeout)
        pool_kw: dict[str, Any] = {"maxsize": max(concurrency, 4), "block": True,
                                   "retries": False}
        if conn.server.startswith("https"):
            pool_kw.update(cert_reqs="CERT_REQUIRED" if conn.verify else "CERT_NONE",
                           ca_certs=conn.ca_file, cert_file=conn.cert_file,
                           key_file=conn.key_file)
            if not conn.verify:
                urllib3.disable_warnings()
        self._http = urllib3.PoolManager(num_pools=2, **pool_kw)
        self.concurrency = concurrency
        self._discovery: dict[tuple[str, str], ResourceType] | None = None
        self._lock = threading.Lock()

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
        import urllib3  # noqa: PLC0415

        url = self._conn.server + path
        if params:
            url += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        try:
            resp = self._http.request(method, url, body=data, timeout=self._timeout,
                                      headers=self._headers(content_type if data else None,
                                                            accept))
        except urllib3.exceptions.HTTPError as e:
            reason = getattr(e, "reason", None) or e
            raise ClusterError(f"cannot reach the cluster at {self._conn.server}: {reason}") from e
        if resp.status >= 400:
            raise _status_error(resp.status, resp.data, obj)
        return json.loads(resp.data) if resp.data else None

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``fn`` over ``items`` with bounded concurrency, results in order."""
        items = list(items)
        if len(items) <= 1 or self.concurrency <= 1:
            return iter([fn(i) for i in items])
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)))
        try:
            return iter(list(pool.map(fn, items)))
        finally:
            pool.shutdown(wait=True)

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
             label_selector: str | None = None) -> list[dict[str, Any]]:
        """All objects of a type (in a namespace), in pages, with kind filled in."""
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"labelSelector": label_selector, "limit": 500}
        while True:
            doc = self.request("GET", self.path(rt, namespace), params=params)
            api_version = doc.get("apiVersion", "v1")
            for item in doc.get("items") or []:
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
        meta = obj["metadata"]
        version = obj["apiVersion"].rpartition("/")[2]
        params = {"fieldManager": field_manager, "force": "true" if force else None,
                  "dryRun": "All" if dry_run else None}
        return self.request("PATCH", self.path(rt, meta.get("namespace", ""), meta["name"],
                                               version),
                            params=params, body=obj, content_type="application/apply-patch+yaml",
                            obj=_label(obj))

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
                                                    version=ver["version"])
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
