"""Which replica of the agent leads which app, at a cost that does not grow
with the number of apps.

Each replica keeps one Lease of its own (its heartbeat) in the agent's
namespace, labelled with its group (the replicas that share one
configuration). Every ``duration / 3`` it renews it (one PUT) and lists the
group's Leases (one LIST): the live replicas are those whose Lease was
renewed within its duration. An app belongs to the live replica with the
highest hash of (replica, app): rendezvous hashing, so the apps divide
evenly, and when a replica comes or goes only its share moves. A replica
killed without a word stops renewing; within its Lease duration (plus one
period) the others see it gone and take its apps. A replica stopped
cleanly deletes its Lease: the others take over at their next look.

Two replicas may, for one period, disagree on who is live (one has listed
a newcomer, the other not yet) and both look after an app: harmless,
because every write to an app (a sync that changes something, a drift
correction) is made under the app's own Lease, the one ``kubectl gitops
sync`` takes, held only for that write. So nothing is written twice at
once, and a second writer finds the work done.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubectl_gitops.errors import ClusterError
from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.lease import LEASE_TYPE

log = logging.getLogger("kubectl-gitops.agent")
GROUP_LABEL = "kubectl-gitops.io/agent-group"
_MICRO = "%Y-%m-%dT%H:%M:%S.%fZ"


def lease_name(group: str, identity: str) -> str:
    return f"kubectl-gitops-agent-{group}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"


def owner(replicas: list[str], key: str) -> str:
    """The replica that leads ``key``: the highest hash of (replica, key)."""
    return max(replicas, key=lambda r: hashlib.sha256(f"{r}\0{key}".encode()).digest())


def _parse(stamp: Any) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(str(stamp), _MICRO).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


class Replicas:
    """This replica's heartbeat and its view of the group's live replicas."""

    def __init__(self, kube: Kube, namespace: str, group: str, identity: str, *,
                 duration: int = 15, clock: Callable[[], float] = time.monotonic) -> None:
        self.kube, self.namespace, self.group = kube, namespace, group
        self.identity, self.duration, self._clock = identity, duration, clock
        self.name = lease_name(group, identity)
        self._live: dict[str, Any] | None = None  # our Lease as last written
        self._seen: dict[str, tuple[str, float]] = {}  # holder -> (renewTime, when it changed)
        self.alive: list[str] = [identity]
        self.error = ""  # why the last heartbeat or look failed ("" when both worked)
        self._lock = threading.Lock()

    def mine(self, key: str) -> bool:
        with self._lock:
            return owner(self.alive, key) == self.identity

    def tick(self) -> bool:
        """Renew this replica's Lease and look at the others'; True when the
        set of live replicas changed. A failure keeps the last view (and
        this replica in it) and is kept in ``error``."""
        errors = []
        try:
            self._renew()
        except ClusterError as e:
            errors.append(f"cannot renew the agent's Lease {self.namespace}/{self.name}: "
                          f"{e.message}")
        try:
            alive = self._look()
        except ClusterError as e:
            errors.append(f"cannot list the agent replicas' Leases in {self.namespace}: "
                          f"{e.message}")
            alive = None
        self.error = "; ".join(errors)
        if alive is None:
            return False
        alive = sorted(set(alive) | {self.identity})
        with self._lock:
            changed, self.alive = alive != self.alive, alive
        return changed

    def leave(self) -> None:
        """Delete this replica's Lease: the others take its apps at their next look."""
        try:
            self.kube.request("DELETE", Kube.path(LEASE_TYPE, self.namespace, self.name))
        except ClusterError:
            pass  # it expires on its own

    def _renew(self) -> None:
        now = dt.datetime.now(dt.UTC).strftime(_MICRO)
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                                "labels": {GROUP_LABEL: self.group}}
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration,
                         "renewTime": now}}
        path = Kube.path(LEASE_TYPE, self.namespace, self.name)
        if self._live is not None:
            meta["resourceVersion"] = self._live["metadata"]["resourceVersion"]
            try:
                self._live = self.kube.request("PUT", path, body=body)
                return
            except ClusterError as e:
                if e.status not in (404, 409):
                    raise
                self._live = None  # deleted or changed behind us: write it afresh
        try:
            self._live = self.kube.request("POST", Kube.path(LEASE_TYPE, self.namespace),
                                           body=body)
        except ClusterError as e:
            if e.status != 409:
                raise
            live = self.kube.get(LEASE_TYPE, self.namespace, self.name)
            if live is not None:
                meta["resourceVersion"] = live["metadata"]["resourceVersion"]
                self._live = self.kube.request("PUT", path, body=body)

    def _forget(self, item: dict[str, Any]) -> None:
        meta = item.get("metadata") or {}
        try:
            self.kube.request("DELETE", Kube.path(LEASE_TYPE, self.namespace, meta.get("name")),
                              body={"preconditions": {
                                  "resourceVersion": meta.get("resourceVersion")}})
        except ClusterError:
            pass  # another replica did, or it was renewed after all

    def _look(self) -> list[str]:
        doc = self.kube.request("GET", Kube.path(LEASE_TYPE, self.namespace),
                                params={"labelSelector": f"{GROUP_LABEL}={self.group}"})
        now, mono = dt.datetime.now(dt.UTC), self._clock()
        alive, seen = [], {}
        for item in doc.get("items") or []:
            spec = item.get("spec") or {}
            holder = str(spec.get("holderIdentity") or "")
            if not holder:
                continue
            duration = float(spec.get("leaseDurationSeconds") or self.duration)
            renew = str(spec.get("renewTime") or "")
            last, since = self._seen.get(holder, ("", mono))
            since = since if renew == last else mono
            seen[holder] = (renew, since)
            renewed = _parse(renew)
            if holder != self.identity and renewed is not None and \
                    (now - renewed).total_seconds() > 10 * duration:
                self._forget(item)  # a replica killed long ago: its Lease goes
                continue
            # Expired by the server's clock, or (against skew) unchanged for
            # longer than its duration by ours, as client-go judges a Lease.
            if holder != self.identity and (
                    renewed is None or (now - renewed).total_seconds() > duration
                    or mono - since > duration):
                continue
            alive.append(holder)
        self._seen = seen
        return alive
