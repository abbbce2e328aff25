"""Watches on an app's members, as an informer does: one LIST for the
starting state and resourceVersion, then the watch API from there (with
bookmarks, so a quiet watch restarts where it was), and a new LIST only when
the server says the version is too old (410 Gone)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubectl_gitops.errors import ClusterError
from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.resources import ObjectId, ResourceType

log = logging.getLogger("kubectl-gitops.agent")

# (event type, object id, the object): ADDED, MODIFIED, DELETED, or SYNCED
# for each object the (re-)LIST found. Every object carries its apiVersion
# and kind, as a GET's does (a LIST's items come without them).
Handler = Callable[[str, ObjectId, dict[str, Any]], None]
# Why the watch cannot read its type ("" once it reads again).
ErrorHandler = Callable[[str], None]


class Watch:
    """One (type, namespace) by a label selector, on a thread of its own."""

    def __init__(self, kube: Kube, rtype: ResourceType, namespace: str, selector: str,
                 handler: Handler, *, timeout: int = 300,
                 on_error: ErrorHandler | None = None) -> None:
        self.kube, self.rtype, self.namespace = kube, rtype, namespace
        self.selector, self.handler, self.timeout = selector, handler, timeout
        self.on_error = on_error
        self._failing = False
        self.stopped = threading.Event()
        self.synced = threading.Event()  # the first LIST is in
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"watch-{rtype.kind}-{namespace}")

    def start(self) -> Watch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()  # the thread ends at its next event or timeout

    def _id(self, obj: dict[str, Any]) -> ObjectId:
        meta = obj.get("metadata") or {}
        return ObjectId(self.rtype.group, self.rtype.kind, meta.get("namespace", ""),
                        meta.get("name", ""))

    def _list(self) -> str:
        path = Kube.path(self.rtype, self.namespace)
        doc = self.kube.request("GET", path, params={"labelSelector": self.selector})
        api_version = doc.get("apiVersion") or (f"{self.rtype.group}/{self.rtype.version}"
                                                if self.rtype.group else self.rtype.version)
        for obj in doc.get("items") or []:
            obj.setdefault("apiVersion", api_version)  # health reads the group from it
            obj.setdefault("kind", self.rtype.kind)
            self.handler("SYNCED", self._id(obj), obj)
        self.synced.set()
        self._reads()
        return str((doc.get("metadata") or {}).get("resourceVersion", ""))

    def _reads(self) -> None:
        if self._failing:
            self._failing = False
            if self.on_error is not None:
                self.on_error("")

    def _run(self) -> None:
        rv = ""
        delay = 1.0
        while not self.stopped.is_set():
            try:
                if not rv:
                    rv = self._list()
                rv = self._follow(rv)
                self._reads()
                delay = 1.0
            except ClusterError as e:
                self._failing = True
                if self.on_error is not None:  # the owner reports it (with its backoff)
                    self.on_error(f"cannot watch {self.rtype.kind} in "
                                  f"{self.namespace or 'the cluster'}: {e}")
                else:
                    log.warning("watch %s in %s: %s; retrying in %.0f s", self.rtype.kind,
                                self.namespace or "the cluster", e, delay)
                self.stopped.wait(delay)
                delay = min(delay * 2, 60.0)

    def _follow(self, rv: str) -> str:
        """Follow the watch until it ends; the version to resume from ("" = re-LIST)."""
        for ev in self.kube.watch(self.rtype, self.namespace, label_selector=self.selector,
                                  resource_version=rv, timeout=self.timeout):
            if self.stopped.is_set():
                return rv
            kind, obj = ev.get("type", ""), ev.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return ""  # too old: start over from a LIST
                raise ClusterError(str(obj.get("message", "watch error")))
            rv = str((obj.get("metadata") or {}).get("resourceVersion", rv))
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                obj.setdefault("kind", self.rtype.kind)
                try:
                    self.handler(kind, self._id(obj), obj)
                except Exception:  # noqa: BLE001 - a bad handler must not end the watch
                    log.exception("handling %s %s", kind, self._id(obj))
        time.sleep(0.05)  # a server closing at once must not make this spin
        return rv
