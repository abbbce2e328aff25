"""One writer per application: a ``coordination.k8s.io/v1`` Lease.

A CLI sync holds the app's Lease for its duration and the agent holds it as
long as it leads the app, so two writers never converge one app at once and
Kubernetes is the only coordinator. The rules follow client-go's leader
election: the holder renews every ``duration / 3``; a Lease whose renewal is
older than its duration is free to take (judged on the server's clock and,
against skew, on how long this process has watched it not change); every
write carries the resourceVersion it read, so of two contenders exactly one
wins.

One shortcut client-go cannot take: a holder on this same host whose process
is gone (a sync killed with SIGKILL) leaves its Lease at once, so a re-run
after a kill does not wait out the duration.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kubectl_gitops.errors import ClusterError, GitOpsError
from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.resources import ResourceType

LEASE_TYPE = ResourceType("coordination.k8s.io", "Lease", True, plural="leases", version="v1")
PREFIX = "kubectl-gitops."
_MICRO = "%Y-%m-%dT%H:%M:%S.%fZ"


class LeaseHeld(GitOpsError):
    """Another writer holds the app's Lease and did not let go in time."""


class LeaseLost(GitOpsError):
    """This process held the Lease and lost it: it must stop writing."""


def lease_name(app: str) -> str:
    """The Lease of application ``app`` (names stay within the 253-character limit)."""
    return (PREFIX + app)[:253].rstrip("-.")


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    return stat.rpartition(")")[2].split()[19]


def identity(role: str = "sync") -> str:
    """``role user@host pid=N start=T``: whoever reads the Lease sees who holds it,
    and a process on this host can tell whether that holder still runs."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    pid = os.getpid()
    return f"{role} {user}@{socket.gethostname()} pid={pid} start={_start_time(pid)}"


def _holder_gone(holder: str) -> bool:
    """The holder ran on this host and its process no longer exists."""
    fields = dict(f.split("=", 1) for f in holder.split() if "=" in f)
    host = holder.split(" ")[1].rpartition("@")[2] if holder.count(" ") >= 1 else ""
    if host != socket.gethostname() or "pid" not in fields:
        return False
    try:
        pid = int(fields["pid"])
    except ValueError:
        return False
    return pid != os.getpid() and _start_time(pid) != fields.get("start")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _parse(stamp: str | None) -> dt.datetime | None:
    if not stamp:
        return None
    try:
        return dt.datetime.strptime(stamp.replace("+00:00", "Z"), _MICRO).replace(tzinfo=dt.UTC)
    except ValueError:
        try:
            return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return None


@dataclass
class Holder:
    """Who holds a Lease, as read from the cluster."""

    identity: str
    since: dt.datetime | None
    renewed: dt.datetime | None
    duration: int

    def describe(self) -> str:
        since = self.since.strftime("%Y-%m-%dT%H:%M:%SZ") if self.since else "an unknown time"
        return f"{self.identity or 'nobody'} since {since}"


class Lease:
    """The Lease ``name`` in ``namespace``, held as ``holder``."""

    def __init__(self, kube: Kube, namespace: str, name: str, *, holder: str | None = None,
                 duration: int = 15, clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.holder = holder or identity()
        self.duration = duration
        self._clock = clock
        self._live: dict[str, Any] | None = None
        self._seen: tuple[str, str] | None = None  # (holder, renewTime) last observed
        self._seen_at = 0.0
        self._held = False
        self._released: dict[str, Any] | None = None  # the Lease as our release wrote it
        self._renewed_at = 0.0  # when (our clock) a write last confirmed we hold it
        self.error = ""  # why the last renewal failed ("" when it worked)
        self.waited = False  # the last acquire waited for another holder
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # --- reading -------------------------------------------------------------

    def read(self) -> Holder | None:
        live = self.kube.get(LEASE_TYPE, self.namespace, self.name)
        self._live = live
        return _holder(live) if live else None

    @property
    def held(self) -> bool:
        return self._held and not self._lost.is_set()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def check(self) -> None:
        """Raise :class:`LeaseLost` when the Lease was lost: stop writing at once."""
        if self._lost.is_set():
            why = f"could not renew it: {self.error}" if self.error else "to another writer"
            raise LeaseLost(f"lost the Lease {self.namespace}/{self.name} {why}; stopped "
                            "before writing more")

    # --- taking and keeping ----------------------------------------------------

    def try_acquire(self) -> bool:
        """Take the Lease if it is free, expired or ours; True when held.
        Taken again after this object released it, it is written at once
        with the version that release wrote (no read first); a 409 (someone
        wrote it since) falls back to reading it."""
        released, self._released = self._released, None
        if released is not None:
            now = _now()
            started = self._clock()
            spec = released.get("spec") or {}
            if self._write(released, self._spec(now, now, transitions=int(
                    spec.get("leaseTransitions") or 0))):
                self._renewed_at = started
                return True
        live = self.kube.get(LEASE_TYPE, self.namespace, self.name)
        self._live = live
        now = _now()
        started = self._clock()
        if live is None:
            won = self._write(None, self._spec(now, now, transitions=0))
        else:
            spec = live.get("spec") or {}
            current = spec.get("holderIdentity") or ""
            if current == self.holder:
                won = self._write(live, {**spec, "renewTime": now.strftime(_MICRO),
                                         "leaseDurationSeconds": self.duration})
            elif current and not self._expired(spec, now) and not _holder_gone(current):
                return False
            else:
                transitions = int(spec.get("leaseTransitions") or 0) + (1 if current else 0)
                won = self._write(live, self._spec(now, now, transitions=transitions))
        if won:
            self._renewed_at = started
        return won

    def acquire(self, timeout: float, *, poll: float = 0.5) -> None:
        """Take the Lease, waiting up to ``timeout`` seconds for its holder."""
        deadline = self._clock() + timeout
        self.waited = False  # whether another holder had it: what was read before is stale
        while not self.try_acquire():
            self.waited = True
            if self._clock() >= deadline:
                h = _holder(self._live) if self._live else None
                who = h.describe() if h else "another writer"
                raise LeaseHeld(f"Lease {self.namespace}/{self.name} is held by {who}; "
                                f"gave up after {timeout:g} s (raise --lock-timeout to wait "
                                "longer)")
            time.sleep(min(poll, max(0.0, deadline - self._clock())))
        self._held = True
        self._lost.clear()

    def renew(self) -> bool:
        """Renew a held Lease; False (and ``lost``) when someone else has it now,
        or when renewals failed for two thirds of the duration: before anyone
        else may take it, this holder stops writing (client-go's renew
        deadline). A failure short of that is kept in ``error``."""
        try:
            ok = self.try_acquire()
        except ClusterError as e:
            self.error = str(e)
            if self._clock() - self._renewed_at < self.duration * 2 / 3:
                return True  # a passing failure: the next renewal may succeed
            ok = False
        else:
            self.error = ""
        if not ok:
            self._lost.set()
        return ok

    def release(self) -> None:
        """Let go (as client-go's ReleaseOnCancel does): the next writer need not
        wait. One write, from the Lease as this process last wrote it; a
        re-read only when that write finds it changed."""
        self._stop_renewing()
        if not self._held or self._lost.is_set():
            self._held = False
            return
        self._held = False
        live = self._live
        try:
            for _ in range(2):
                spec = (live or {}).get("spec") or {}
                if live is None or spec.get("holderIdentity") != self.holder:
                    return  # not ours (any more): nothing to release
                released = {**spec, "holderIdentity": None, "leaseDurationSeconds": 1}
                if self._write(live, released, expect_holder=False):
                    self._released = self._live
                    return
                live = self.kube.get(LEASE_TYPE, self.namespace, self.name)
        except ClusterError:
            pass  # it expires on its own

    def renew_in_background(self) -> None:
        """Keep a Lease just acquired renewed until :meth:`release`."""
        self._start_renewing()

    @contextmanager
    def hold(self, timeout: float) -> Iterator[Lease]:
        """Hold the Lease for a ``with`` block, renewed in the background."""
        self.acquire(timeout)
        self._start_renewing()
        try:
            yield self
        finally:
            self.release()

    # --- internals ---------------------------------------------------------------

    def _spec(self, acquired: dt.datetime, renewed: dt.datetime, *,
              transitions: int) -> dict[str, Any]:
        return {"holderIdentity": self.holder, "leaseDurationSeconds": self.duration,
                "acquireTime": acquired.strftime(_MICRO), "renewTime": renewed.strftime(_MICRO),
                "leaseTransitions": transitions}

    def _expired(self, spec: dict[str, Any], now: dt.datetime) -> bool:
        duration = float(spec.get("leaseDurationSeconds") or self.duration)
        renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
        if renewed is not None and (now - renewed).total_seconds() > duration:
            return True
        # The server's clock may differ from ours: also count how long this
        # process has seen the record unchanged, as client-go does.
        key = (str(spec.get("holderIdentity")), str(spec.get("renewTime")))
        if key != self._seen:
            self._seen, self._seen_at = key, self._clock()
            return False
        return self._clock() - self._seen_at > duration

    def _write(self, live: dict[str, Any] | None, spec: dict[str, Any], *,
               expect_holder: bool = True) -> bool:
        """Create, or update with the resourceVersion read: False when another
        writer got there first (409)."""
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if live is not None:
            meta["resourceVersion"] = live["metadata"]["resourceVersion"]
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {k: v for k, v in spec.items() if v is not None}}
        try:
            if live is None:
                self._live = self.kube.request(
                    "POST", Kube.path(LEASE_TYPE, self.namespace), body=body,
                    obj=f"Lease {self.namespace}/{self.name}")
            else:
                self._live = self.kube.request(
                    "PUT", Kube.path(LEASE_TYPE, self.namespace, self.name), body=body,
                    obj=f"Lease {self.namespace}/{self.name}")
        except ClusterError as e:
            if e.status == 409:
                return False
            raise
        return spec.get("holderIdentity") == self.holder or not expect_holder

    def _start_renewing(self) -> None:
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(self.duration / 3):
                if not self.renew():
                    return

        self._renewer = threading.Thread(target=loop, name=f"lease-{self.name}", daemon=True)
        self._renewer.start()

    def _stop_renewing(self) -> None:
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(timeout=5)
        self._renewer = None


def _holder(live: dict[str, Any]) -> Holder:
    spec = live.get("spec") or {}
    return Holder(identity=spec.get("holderIdentity") or "",
                  since=_parse(spec.get("acquireTime")), renewed=_parse(spec.get("renewTime")),
                  duration=int(spec.get("leaseDurationSeconds") or 0))
