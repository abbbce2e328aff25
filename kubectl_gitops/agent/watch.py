"""Watches on the members of the apps an agent leads, as an informer does:
one LIST for the starting state and resourceVersion, then the watch API from
there (with bookmarks, so a quiet watch restarts where it was), and a new
LIST only when the server says the version is too old (410 Gone).

:class:`Shared` keeps one watch per member type for all the apps (not one
per app): label-selected on ApplySet membership, its events dispatched to
the app by the ``part-of`` label, started and stopped as the apps' member
types come and go."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
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
# The ids of every object a (re-)LIST found: the others are gone.
ListedHandler = Callable[[set[ObjectId]], None]


class Watch:
    """One (type, namespace) by a label selector, on a thread of its own."""

    def __init__(self, kube: Kube, rtype: ResourceType, namespace: str, selector: str,
                 handler: Handler, *, timeout: int = 300,
                 on_error: ErrorHandler | None = None,
                 on_listed: ListedHandler | None = None) -> None:
        self.kube, self.rtype, self.namespace = kube, rtype, namespace
        self.selector, self.handler, self.timeout = selector, handler, timeout
        self.on_error, self.on_listed = on_error, on_listed
        self.forbidden = False  # the last failure was a 403
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
        found = set()
        for obj in doc.get("items") or []:
            obj.setdefault("apiVersion", api_version)  # health reads the group from it
            obj.setdefault("kind", self.rtype.kind)
            found.add(self._id(obj))
            self.handler("SYNCED", self._id(obj), obj)
        if self.on_listed is not None:
            self.on_listed(found)
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
                self.forbidden = e.status == 403
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


# (group, kind, namespace or "" for cluster-wide): what one watch covers.
WatchKey = tuple[str, str, str]
# (set id, event, object id, object): a member event for the app of that set.
SetHandler = Callable[[str, str, ObjectId, dict[str, Any]], None]
# (set ids, what cannot be watched, why; "" once it reads again).
SetErrorHandler = Callable[[list[str], str, str], None]


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """What the agent keeps of a watched object: all but managedFields and
    the last-applied annotation, its biggest parts, which neither drift nor
    health reads."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        ann = meta.get("annotations")
        if isinstance(ann, dict):
            ann.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    return obj


class Shared:
    """One watch per member type for every app registered (one per type
    and namespace for a type the agent may not watch cluster-wide), and one
    on the ApplySet parents; the objects seen, by id, for health. Events are
    dispatched by the ``member_label`` (``part-of``) or ``parent_label``
    (``id``) value to the app that registered that set id; objects of sets
    nobody registered are kept (another replica's apps, ready for a
    takeover) but not dispatched."""

    def __init__(self, kube: Kube, *, member_label: str, parent_label: str,
                 parent_type: ResourceType, on_member: SetHandler, on_parent: SetHandler,
                 on_error: SetErrorHandler) -> None:
        self.kube = kube
        self.member_label, self.parent_label, self.parent_type = (member_label, parent_label,
                                                                  parent_type)
        self.on_member, self.on_parent, self.on_error = on_member, on_parent, on_error
        self._lock = threading.RLock()
        # set id -> {(group, kind): (type, namespaces of its members)}
        self._sets: dict[str, dict[tuple[str, str], tuple[ResourceType, set[str]]]] = {}
        self._parents: dict[str, str] = {}  # set id -> the parent's namespace
        self._watches: dict[WatchKey, Watch] = {}
        self._namespaced: set[tuple[str, str]] = set()  # types not watchable cluster-wide
        self._objects: dict[WatchKey, dict[ObjectId, dict[str, Any]]] = {}
        self._keys: dict[str, dict[WatchKey, ResourceType]] = {}  # set id -> its watches
        self._users_of: dict[WatchKey, int] = {}  # how many sets want each watch

    # --- registering ----------------------------------------------------------

    def register(self, set_id: str, parent_namespace: str,
                 members: Iterable[tuple[ResourceType, str]]) -> None:
        """The app of ``set_id`` wants its members (type, namespace) watched,
        and its parent in ``parent_namespace``."""
        wants: dict[tuple[str, str], tuple[ResourceType, set[str]]] = {}
        for rtype, ns in members:
            wants.setdefault((rtype.group, rtype.kind), (rtype, set()))[1].add(ns)
        with self._lock:
            self._sets[set_id] = wants
            self._parents[set_id] = parent_namespace
            self._rekey(set_id)

    def unregister(self, set_id: str) -> None:
        with self._lock:
            self._sets.pop(set_id, None)
            self._parents.pop(set_id, None)
            self._rekey(set_id)

    def stop(self) -> None:
        with self._lock:
            for w in self._watches.values():
                w.stop()
            self._watches.clear()
            self._objects.clear()

    @property
    def count(self) -> int:
        """How many watches run (one per type, plus the parents')."""
        with self._lock:
            return len(self._watches)

    # --- reading ----------------------------------------------------------------

    def get(self, oid: ObjectId, namespaced: bool = True) -> dict[str, Any] | None:
        """The object as the watches last saw it (None: not seen, or gone)."""
        for ns in ((oid.namespace, "") if namespaced else ("",)):
            found = self._objects.get((oid.group, oid.kind, ns), {}).get(oid)
            if found is not None:
                return found
        return None

    def parent(self, namespace: str, name: str) -> dict[str, Any] | None:
        oid = ObjectId(self.parent_type.group, self.parent_type.kind, namespace, name)
        for key in (("", "parent", ""), ("", "parent", namespace)):
            found = self._objects.get(key, {}).get(oid)
            if found is not None:
                return found
        return None

    def synced(self, key: WatchKey) -> bool:
        w = self._watches.get(key)
        return w is not None and w.synced.is_set()

    # --- internals -----------------------------------------------------------------

    def _wanted(self, set_id: str) -> dict[WatchKey, ResourceType]:
        """The watches one set needs."""
        wanted: dict[WatchKey, ResourceType] = {}
        for (group, kind), (rtype, nss) in self._sets.get(set_id, {}).items():
            if not rtype.namespaced or (group, kind) not in self._namespaced:
                wanted[(group, kind, "")] = rtype
            else:
                for ns in nss:
                    wanted[(group, kind, ns)] = rtype
        if set_id in self._parents:
            ns = self._parents[set_id] if ("", "parent") in self._namespaced else ""
            wanted[("", "parent", ns)] = self.parent_type
        return wanted

    def _rekey(self, set_id: str) -> None:
        """Count what the set now wants; start the watches somebody wants
        first, stop those nobody wants any more (at a cost of the set's own
        types, not of every set's)."""
        old, new = self._keys.pop(set_id, {}), self._wanted(set_id)
        if new:
            self._keys[set_id] = new
        for key, rtype in new.items():
            if key not in old:
                self._users_of[key] = self._users_of.get(key, 0) + 1
                if key not in self._watches:
                    self._start(key, rtype)
        for key in old:
            if key not in new:
                self._users_of[key] -= 1
                if self._users_of[key] <= 0:
                    del self._users_of[key]
                    self._watches.pop(key).stop()
                    self._objects.pop(key, None)
                    self.on_error([set_id], "/".join(key), "")

    def _start(self, key: WatchKey, rtype: ResourceType) -> None:
        parent = key[1] == "parent"
        self._objects[key] = {}
        self._watches[key] = Watch(
            self.kube, rtype, key[2], self.parent_label if parent else self.member_label,
            lambda ev, oid, obj, key=key: self._event(key, ev, oid, obj),
            on_error=lambda message, key=key: self._error(key, message),
            on_listed=lambda found, key=key: self._listed(key, found)).start()

    def _users(self, key: WatchKey) -> list[str]:
        group, kind, ns = key
        with self._lock:
            if kind == "parent":
                return [s for s, pns in self._parents.items() if not ns or pns == ns]
            return [s for s, wants in self._sets.items() if (group, kind) in wants
                    and (not ns or ns in wants[(group, kind)][1])]

    def _event(self, key: WatchKey, ev: str, oid: ObjectId, obj: dict[str, Any]) -> None:
        objects = self._objects.get(key)
        if objects is None:
            return  # a watch stopped, its last event
        if ev == "DELETED":
            objects.pop(oid, None)
        else:
            objects[oid] = slim(obj)
        labels = (obj.get("metadata") or {}).get("labels") or {}
        parent = key[1] == "parent"
        set_id = labels.get(self.parent_label if parent else self.member_label)
        if set_id and (set_id in self._parents if parent else set_id in self._sets):
            (self.on_parent if parent else self.on_member)(set_id, ev, oid, obj)

    def _listed(self, key: WatchKey, found: set[ObjectId]) -> None:
        objects = self._objects.get(key) or {}
        for oid in [o for o in objects if o not in found]:
            gone = objects.get(oid)
            if gone is not None:
                self._event(key, "DELETED", oid, gone)

    def _error(self, key: WatchKey, message: str) -> None:
        with self._lock:
            w = self._watches.get(key)
            if message and w is not None and w.forbidden and not key[2] and \
                    (key[0], key[1]) not in self._namespaced:
                # Not allowed cluster-wide (a namespaced agent): one watch per
                # namespace of the apps' members instead.
                log.info("watching %s per namespace (not allowed cluster-wide)", key[1])
                self._namespaced.add((key[0], key[1]))
                for set_id in list(self._keys):
                    self._rekey(set_id)
                return
        self.on_error(self._users(key), "/".join(key), message)
