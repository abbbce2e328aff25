"""The reconciler: ``reconcile(key) -> requeue_after`` over a work queue.

Keys are ``("app", name)`` (fetch, and on a new revision validate, plan and
sync) and ``("drift", name, object id)`` (one member that a watch saw differ
from git). A timer per app (the requeue after each reconcile), the webhook
and the watches feed the queue; a burst collapses into one key, and two keys
of one app never run at once.

Many apps cost little while nothing changes: the replicas divide the apps
between them through one Lease each (:mod:`.replicas`), the watches are
shared by type (:class:`.watch.Shared`), a URL is fetched once per interval
for all its apps, and an app whose files a new revision did not touch is not
planned again. The app's own Lease (the one ``kubectl gitops sync`` takes)
is taken only for a write, and released after it: a lost Lease stops the
write at once, and an idle app costs no request.

The agent is a driver of the engine: a revision becomes a source through
``tree.resolve`` (the mirror is a repository like any other), and a plan
through ``sync.options_for`` and ``sync.make_plan``, the calls ``kubectl
gitops sync`` makes, so whatever ``.gitops.yaml`` says holds here too.

Nothing fails silently: a state in which an app cannot make progress is a
:class:`Stall` (a WARNING, repeated with backoff while it lasts; the
``Stalled`` condition with its reason; an Event once there is a parent to
carry it; the ``gitops_app_stalled`` metric; ``/readyz`` not ready while no
app has synced yet).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubectl_gitops.agent import state
from kubectl_gitops.agent.config import AppSpec
from kubectl_gitops.agent.metrics import CountingKube, Metrics
from kubectl_gitops.agent.mirror import Mirror
from kubectl_gitops.agent.replicas import Replicas
from kubectl_gitops.agent.watch import Shared
from kubectl_gitops.agent.workqueue import Backoff, WorkQueue
from kubectl_gitops.engine import app as app_mod
from kubectl_gitops.engine import applyset, desired, plan, status, sync
from kubectl_gitops.engine.model import Plan
from kubectl_gitops.errors import ClusterError, ConfigError, GitOpsError, NotFoundError
from kubectl_gitops.kube import health
from kubectl_gitops.kube.kubeconfig import Overrides
from kubectl_gitops.kube.lease import Lease, LeaseHeld, LeaseLost, identity, lease_name
from kubectl_gitops.kube.resources import ObjectId, ResourceType
from kubectl_gitops.source import git, tree
from kubectl_gitops.source.config import CONFIG_FILE
from kubectl_gitops.source.manifests import Manifest
from kubectl_gitops.validate import checks
from kubectl_gitops.source.sops import Keys

log = logging.getLogger("kubectl-gitops.agent")
Key = tuple[Any, ...]


@dataclass
class Settings:
    cache: Path
    workers: int = 4
    debounce: float = 1.0  # after a watch event, before looking at the object
    heal_backoff: float = 5.0  # the second correction of one object waits this, then doubles
    heal_backoff_cap: float = 300.0
    lease_duration: int = 15
    lease_namespace: str = "default"  # where the replicas' Leases live
    group: str = "default"  # the replicas that divide one configuration's apps
    token_file: str | None = None
    log_backoff: float = 30.0  # an unchanged failure is logged again after this, doubling
    log_backoff_cap: float = 1800.0


@dataclass
class Member:
    rtype: ResourceType
    manifest: Manifest
    desired: dict[str, Any]


@dataclass
class Stall:
    """Why an app cannot make progress in one area (the Lease, the fetch, a
    watch...), and when to say so again."""

    reason: str  # LeaseFailed, FetchFailed, ...: the condition's reason and the Event's
    message: str
    count: int = 1
    log_at: float = 0.0  # monotonic time of the next repeat in the log
    log_every: float = 0.0
    evented: bool = False


# How soon an app blocked on another app of its dependsOn looks again.
_BLOCKED_RECHECK = 5.0
# Which stall status shows when several hold: the first of these areas.
_AREAS = ("lease", "fetch", "revision", "sync", "watch", "heal", "status")


@dataclass
class AppRun:
    """What the agent knows of one app between reconciles."""

    spec: AppSpec
    mirror: Mirror
    name: str = ""  # the app's name in the cluster (.gitops.yaml's when not given)
    lock: threading.Lock = field(default_factory=threading.Lock)
    lease: Lease | None = None  # the app's write lock: held only during a write
    led: bool = False  # this replica leads the app
    set_id: str = ""  # the ApplySet id its watches dispatch by
    namespace: str = ""
    src: tree.Source | None = None
    synced_sha: str = ""  # the revision live (synced or found unchanged)
    seen_sha: str = ""  # the newest revision looked at (it may change nothing here)
    fingerprint: str = ""  # the hash of what the app reads at synced_sha
    bad_sha: str = ""  # a revision that failed validation: not retried until it changes
    members: dict[ObjectId, Member] = field(default_factory=dict)
    drift: dict[ObjectId, str] = field(default_factory=dict)
    stalls: dict[str, Stall] = field(default_factory=dict)  # area -> why no progress there
    stall_reasons: set[str] = field(default_factory=set)  # metric labels ever set
    last_fetch: str = ""
    last_sync: str = ""
    # A fetch (by any app of the URL) started at or after this serves; None: none wanted.
    fetch_since: float | None = field(default_factory=time.monotonic)
    next_fetch: float = 0.0
    status: dict[str, Any] = field(default_factory=dict)
    parent_live: dict[str, Any] | None = None
    heals: dict[ObjectId, tuple[int, float]] = field(default_factory=dict)  # n, last time
    blocked_by: list[str] = field(default_factory=list)  # apps of dependsOn not ready, and why
    stopped: bool = False
    # The cluster the app goes to: the agent's own, or (hub mode) the one the
    # kubeconfig Secret names; its Lease, parent, status and Events live there.
    kube: Any = None
    kubeconfig_fd: int | None = None  # the in-memory file that kubeconfig is read from
    shared: Any = None  # the shared watches of that cluster (hub mode: its own)


class _Busy(Exception):
    """Another writer (a CLI sync, another replica) holds the app's Lease."""


class _Stalled(Exception):
    """The app's Lease cannot be taken for an error: the stall says why."""


# Which keys a worker takes first when several are due: a drift correction,
# then a new revision or a status change, then the periodic re-checks.
_PRIORITY = {"drift": 0, "status": 1, "app": 2}


def _priority(key: Key) -> int:
    return _PRIORITY.get(key[0], 3)


def _changes(the_plan: Plan) -> bool:
    return any(i.needs_apply for i in the_plan.items) or bool(the_plan.of("prune"))


def _version(obj: dict[str, Any] | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


def _jitter(seconds: float) -> float:
    """An interval give or take 10 %: apps started together do not stay in step."""
    return seconds * random.uniform(0.9, 1.1)


def app_key(spec: AppSpec) -> str:
    """What the replicas divide apps by: stable across restarts and replicas."""
    return f"{spec.namespace or ''}/{spec.name}"


class Agent:
    def __init__(self, kube: CountingKube, specs: list[AppSpec], settings: Settings) -> None:
        self.kube = kube
        self.settings = settings
        self.metrics = Metrics()
        kube.metrics = self.metrics
        self.queue: WorkQueue[Key] = WorkQueue(group=lambda k: k[1], priority=_priority)
        self.backoff: Backoff[Key] = Backoff(base=1.0, cap=300.0)
        self.apps: dict[str, AppRun] = {}
        self.mirrors: dict[str, Mirror] = {}  # one per URL, shared by its apps
        self.identity = identity("agent")
        self.replicas = Replicas(kube, settings.lease_namespace, settings.group, self.identity,
                                 duration=settings.lease_duration)
        self.watches = self._new_watches(kube)
        self.by_set: dict[str, AppRun] = {}  # ApplySet id -> the app, for the watches
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.synced_once = False  # some app reached a revision (synced or found live)
        self._stalls_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._replica_error = ""
        self._outside: dict[str, bool] = {}  # kustomization blob -> names a path outside
        self.set_apps(specs)

    # --- apps -----------------------------------------------------------------

    def set_apps(self, specs: list[AppSpec]) -> None:
        """Start, change or stop apps to match ``specs`` (a config reload)."""
        wanted = {s.name: s for s in specs}
        for name in list(self.apps):
            if name not in wanted:
                gone = self.apps.pop(name)
                with gone.lock:
                    self._stop_app(gone)
                log.info("app %s removed from the configuration", name)
        for name, spec in wanted.items():
            run = self.apps.get(name)
            if run is None:
                run = self.apps[name] = AppRun(spec, self._mirror(spec.repo))
                run.led = self.replicas.mine(app_key(spec))
            elif run.spec != spec:
                if run.spec.kubeconfig_secret != spec.kubeconfig_secret:
                    with run.lock:  # another cluster: nothing of the old one carries over
                        self._stop_app(run)
                        run.stopped, run.parent_live, run.lease = False, None, None
                run.spec, run.synced_sha, run.bad_sha = spec, "", ""  # re-plan with the new spec
                run.seen_sha = run.fingerprint = ""
                run.mirror = self._mirror(spec.repo)
                run.fetch_since = time.monotonic()
                run.led = self.replicas.mine(app_key(spec))
                self._unstall(run, "revision")
            self.queue.add(("app", name))

    def _mirror(self, repo: str) -> Mirror:
        """The one mirror of ``repo``'s URL (made on first use)."""
        mirror = Mirror(repo, self.settings.cache, token_file=self.settings.token_file)
        return self.mirrors.setdefault(mirror.url, mirror)

    def _new_watches(self, kube: CountingKube) -> Shared:
        return Shared(kube, member_label=applyset.PART_OF_LABEL,
                      parent_label=applyset.ID_LABEL, parent_type=applyset.PARENT_TYPE,
                      on_member=self._on_event, on_parent=self._on_parent,
                      on_error=self._on_watch_error)

    def _all_watches(self) -> list[Shared]:
        """The agent's cluster's shared watches and each hub-mode app's."""
        found = {id(self.watches): self.watches}
        for run in list(self.apps.values()):
            if run.shared is not None:
                found[id(run.shared)] = run.shared
        return list(found.values())

    def _stop_app(self, run: AppRun) -> None:
        run.stopped = True
        self._unlead(run)
        for area in list(run.stalls):
            self._unstall(run, area, quiet=True)
        if run.shared is not None and run.shared is not self.watches:
            run.shared.stop()
        run.shared = None
        if run.kube is not None and run.kube is not self.kube:
            run.kube.close()
        if run.kubeconfig_fd is not None:
            os.close(run.kubeconfig_fd)
        run.kube, run.kubeconfig_fd = None, None

    def _connect(self, run: AppRun) -> None:
        """The app's cluster: the agent's own, or (hub mode) the cluster of
        the kubeconfig in the Secret ``kubeConfigSecret`` names, in the
        agent's cluster (``NAME``: the agent's namespace). The kubeconfig is
        read from an in-memory file, never written to disk."""
        ref = run.spec.kubeconfig_secret
        if not ref:
            run.kube, run.shared = self.kube, self.watches
            return
        ns, _, name = ref.rpartition("/")
        ns = ns or self.kube.info.namespace
        secret = self.kube.get(self.kube.resource_types()[("", "Secret")], ns, name)
        if secret is None:
            raise ConfigError(f"kubeConfigSecret {ns}/{name}: no such Secret")
        data = secret.get("data") or {}
        key = next((k for k in ("value", "value.yaml", "kubeconfig") if k in data), None)
        if key is None:
            raise ConfigError(f"kubeConfigSecret {ns}/{name}: no kubeconfig under value, "
                              "value.yaml or kubeconfig")
        fd = os.memfd_create(f"kubeconfig-{run.spec.name}", os.MFD_CLOEXEC)
        try:
            os.write(fd, base64.b64decode(data[key]))
            kube = CountingKube(Overrides(kubeconfig=f"/proc/self/fd/{fd}"))
        except BaseException:
            os.close(fd)
            raise
        kube.metrics = self.metrics
        run.kube, run.kubeconfig_fd = kube, fd
        # The app's objects live in that cluster: watched there, for it alone.
        run.shared = self._new_watches(kube)
        log.info("app %s: in the cluster at %s (kubeconfig Secret %s/%s)", run.spec.name,
                 kube.info.server, ns, name)

    def _unlead(self, run: AppRun) -> None:
        """Forget what leading the app took: its watches' registration."""
        if run.set_id:
            if run.shared is not None:
                run.shared.unregister(run.set_id)
            self.by_set.pop(run.set_id, None)
        run.members, run.drift, run.status, run.set_id = {}, {}, {}, ""
        run.synced_sha = run.seen_sha = run.fingerprint = ""  # a new leader looks at all once

    def trigger_fetch(self) -> None:
        """The webhook: every app wants a fetch that starts from now on; the
        first app of a URL makes it and the others of that URL use it."""
        now = time.monotonic()
        for name, run in list(self.apps.items()):
            if not run.led:
                continue
            run.fetch_since = now if run.fetch_since is None else max(run.fetch_since, now)
            self.queue.add(("app", name))

    def is_ready(self) -> bool:
        """``/readyz``: started, not stopping, and not stuck from the start: while
        no app has ever reached a revision, any stalled app makes it not ready."""
        if not self.ready.is_set() or self.stopping.is_set():
            return False
        return self.synced_once or not any(run.stalls for run in list(self.apps.values()))

    # --- running --------------------------------------------------------------

    def start(self) -> None:
        self._divide()  # before the first keys: who leads what
        for i in range(self.settings.workers):
            t = threading.Thread(target=self._work, name=f"worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._replicas_loop, name="replicas", daemon=True)
        t.start()

    def stop(self) -> None:
        """Hand out no more keys, let the writes in flight finish, leave the replicas."""
        self.stopping.set()
        self.queue.close()
        for t in self._threads:
            t.join()
        for run in self.apps.values():
            with run.lock:
                self._stop_app(run)
        self.watches.stop()
        self.replicas.leave()

    def _work(self) -> None:
        while True:
            key = self.queue.get()
            if key is None:
                return
            try:
                after = self._reconcile(key)
            finally:
                self.queue.done(key)
            if after is not None and not self.stopping.is_set():
                self.queue.add(key, after)

    def _reconcile(self, key: Key) -> float | None:
        run = self.apps.get(key[1])
        if run is None or run.stopped:
            return None
        kind = key[0]
        area = "sync" if kind == "app" else f"heal {key[2]}" if kind == "drift" else "status"
        started = time.monotonic()
        result = "ok"
        try:
            with run.lock:
                if run.kube is None:
                    self._connect(run)
                if kind == "app":
                    after = self._reconcile_app(run)
                elif kind == "status":
                    after = None
                    self._report(run)
                else:
                    after = self._reconcile_drift(run, key[2])
            self.backoff.forget(key)
            if kind != "app":  # the app key clears its own, only where it got through
                self._unstall(run, area)
            return after
        except _Stalled:
            result = "error"
            self._report(run)
            return min(run.spec.interval, self.settings.lease_duration / 3)
        except _Busy:
            result = "busy"  # another writer: this one looks again soon
            for area in ("lease", "sync"):  # what this agent failed to write is not its now
                self._unstall(run, area)
            self._report(run)
            return min(run.spec.interval, self.settings.lease_duration / 3)
        except LeaseLost as e:
            result = "lease-lost"
            log.warning("app %s: %s", run.spec.name, e)
            return 0.0 if kind == "app" else None
        except Exception as e:  # noqa: BLE001 - one failing key must not stop the agent
            result = "error"
            delay = self.backoff.next(key)
            known = isinstance(e, GitOpsError)
            reason = ("Forbidden" if isinstance(e, ClusterError) and e.status == 403 else
                      "SyncRefused" if isinstance(e, sync.SyncRefused) else
                      {"sync": "SyncFailed", "status": "StatusFailed"}.get(area, "HealFailed")
                      if known else "InternalError")
            message = "; ".join(e.lines()) if known else f"{type(e).__name__}: {e}"
            if self._stall(run, area, reason, message) and not known:
                log.error("app %s: internal error", run.spec.name, exc_info=True)
            return delay
        finally:
            self.metrics.reconciles.labels(run.spec.name, kind, result).inc()
            self.metrics.duration.labels(run.spec.name, kind).observe(time.monotonic() - started)

    # --- leadership -------------------------------------------------------------

    def _replicas_loop(self) -> None:
        period = self.settings.lease_duration / 3
        while not self.stopping.wait(period):
            self._divide()

    def _divide(self) -> None:
        """Renew this replica's Lease, look at the others', and lead the apps
        that fall to this replica now (a new leader looks at everything once);
        let go of the others."""
        changed = self.replicas.tick()
        if self.replicas.error != self._replica_error:
            self._replica_error = self.replicas.error
            if self.replicas.error:
                log.warning("%s; dividing the apps among the replicas last seen (%d)",
                            self.replicas.error, len(self.replicas.alive))
            else:
                log.info("the agent replicas' Leases read and written again")
        if changed:
            log.info("agent replicas: %d (%s)", len(self.replicas.alive),
                     ", ".join(self.replicas.alive))
        for run in list(self.apps.values()):
            mine = self.replicas.mine(app_key(run.spec))
            if mine == run.led:
                continue
            # Never waits for a worker (a long sync must not hold the
            # heartbeat): the app's key does the rest under the app's lock.
            run.led = mine
            if mine:
                log.info("app %s: leading", run.spec.name)
                run.fetch_since = time.monotonic()
            else:
                log.info("app %s: led by another replica now", run.spec.name)
            self.queue.add(("app", run.spec.name))
        self.metrics.led.set(sum(1 for r in self.apps.values() if r.led))

    @contextmanager
    def _write_lock(self, run: AppRun, src: tree.Source) -> Iterator[Lease]:
        """Hold the app's Lease (the one a CLI sync takes: ``kubectl-gitops.<app>``
        in the app's namespace) for one write, renewed while it lasts, then
        let go. Another holder raises :class:`_Busy` (the write waits); an
        error (no rights on Leases...) is a stall. A namespace that does not
        exist yet is created first, as a CLI sync does, once the revision
        proved valid (:meth:`_bootstrap`)."""
        if run.lease is None or (run.lease.namespace, run.lease.name) != \
                (run.namespace, lease_name(run.name)):
            run.lease = Lease(run.kube, run.namespace, lease_name(run.name),
                              holder=self.identity, duration=self.settings.lease_duration)
        lease = run.lease
        try:
            try:
                lease.acquire(0)
            except NotFoundError:  # the namespace (the Lease itself reads as None)
                if not self._bootstrap(run, src):
                    raise _Stalled() from None  # an invalid revision: its stall says why
                lease.acquire(0)
        except LeaseHeld:  # following another agent or a CLI sync is fine
            raise _Busy() from None
        except ClusterError as e:
            self._stall(run, "lease", "LeaseFailed", f"cannot take the Lease "
                        f"{lease.namespace}/{lease.name}: {e.message}")
            raise _Stalled() from None
        self._unstall(run, "lease")
        lease.renew_in_background()
        try:
            yield lease
        finally:
            lease.release()

    def _bootstrap(self, run: AppRun, src: tree.Source) -> bool:
        """The app's namespace does not exist (a new app, whose revision may
        create it): create it as ``kubectl gitops sync`` does before it takes
        its Lease there. Only for a revision that validates and plans:
        nothing is written for an invalid one."""
        prepared = None if src.sha == run.bad_sha else self._prepare(run, src)
        if prepared is None:
            return False
        sync.ensure_namespace(prepared[0])
        log.info("app %s: created namespace %s for its Lease and parent", run.spec.name,
                 run.namespace)
        return True

    # --- the app key ----------------------------------------------------------------

    def _reconcile_app(self, run: AppRun) -> float | None:
        spec = run.spec
        if not run.led:  # another replica's: queued again if it falls to this one
            if run.set_id or run.stalls:
                self._unlead(run)
                for area in list(run.stalls):
                    self._unstall(run, area, quiet=True)
            return None
        failed = self._fetch(run)
        if failed is not None:
            self._report(run)
            return failed  # the last good revision stays; nothing is synced or pruned
        sha = run.mirror.commit(spec.ref)
        # The same commit as last time: its source as read then (no git call).
        src = run.src if run.src is not None and sha == run.seen_sha else self._source(run)
        run.namespace = desired.default_namespace(src, spec.namespace, run.kube)
        parent = run.shared.parent(run.namespace, run.name) if run.set_id else None
        run.parent_live = parent if parent is not None else \
            run.kube.get(applyset.PARENT_TYPE, run.namespace, run.name)
        if run.spec.suspend or status.suspended(run.parent_live):
            self._unstall(run, "sync")
            self._status(run)
            return _jitter(spec.interval)
        if run.status.get("suspended"):  # resumed: correct what was only reported
            for oid in run.drift:
                self.queue.add(("drift", spec.name, oid))
        assert src.sha
        if src.sha != run.seen_sha and src.sha != run.bad_sha:
            fingerprint = self._fingerprint(run, src)
            if fingerprint and fingerprint == run.fingerprint:
                # Nothing this app reads changed: no plan, no write; its
                # status keeps the revision that last changed it.
                log.debug("app %s: %s changes nothing here", spec.name, src.sha[:12])
                run.seen_sha, run.src = src.sha, src
            else:
                self._sync(run, src)
                if run.synced_sha == src.sha:
                    run.seen_sha, run.fingerprint = src.sha, fingerprint
        elif "lease" in run.stalls:  # nothing to write: see whether it could now
            with self._write_lock(run, src):
                pass
        if run.synced_sha and "lease" not in run.stalls:
            self.synced_once = True  # at a revision, and able to write when it must
        self._unstall(run, "sync")
        self._status(run)
        # Blocked on another app: look again soon, as that app gets ready by itself.
        return min(spec.interval, _BLOCKED_RECHECK) if run.blocked_by else \
            _jitter(spec.interval)

    def _fingerprint(self, run: AppRun, src: tree.Source) -> str:
        """A hash of what the app reads at ``src``: the tree of its path and
        ``.gitops.yaml``, and the whole repository's tree when the path
        reaches outside itself (a kustomization naming ``../``, a Helm
        chart); "" when unknown. A new commit with the same fingerprint is
        not planned again."""
        assert src.sha
        objects = run.mirror.objects(src.sha)
        if src.path not in objects:
            return ""
        parts = [src.path, objects[src.path], objects.get(CONFIG_FILE, "")]
        if src.helm is not None or self._reaches_out(run, src, objects):
            parts.append(objects[""])
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def _reaches_out(self, run: AppRun, src: tree.Source, objects: dict[str, str]) -> bool:
        below = src.path + "/" if src.path else ""
        shas = [sha for path, sha in objects.items() if path.startswith(below)
                and path.rpartition("/")[2] in tree.KUSTOMIZATION_FILES]
        unknown = [sha for sha in shas if sha not in self._outside]
        if unknown:
            for sha, data in zip(unknown, git.cat_blobs(run.mirror.dir, unknown), strict=True):
                self._outside[sha] = b"../" in data
        return any(self._outside[sha] for sha in shas)

    def _fetch(self, run: AppRun) -> float | None:
        """Fetch when the interval is due or a fetch was asked for; None when
        the mirror is as fresh as wanted, else the seconds until the next try.
        Apps of one URL share its fetches: one per interval, one per webhook."""
        spec, now = run.spec, time.monotonic()
        since = run.fetch_since
        if now >= run.next_fetch:  # any fetch of the URL in the last half interval serves
            due = now - spec.interval / 2
            since = due if since is None else max(due, since)
        if since is None:
            return None
        ran, error = run.mirror.fetch(since)
        run.fetch_since = None
        if ran:
            self.metrics.fetches.labels(spec.name).inc()
        if error:
            if ran:
                self.metrics.fetch_errors.labels(spec.name).inc()
            delay = min(spec.interval, self.backoff.next(("fetch", spec.name)))
            run.next_fetch = run.fetch_since = time.monotonic() + delay  # a new try then
            self._stall(run, "fetch", "FetchFailed", f"fetching {error}; keeping revision "
                        f"{run.synced_sha[:12] or '(none yet)'}")
            return delay
        run.next_fetch = now + spec.interval
        if ran:
            self._fan_out(run)
        self.backoff.forget(("fetch", spec.name))
        run.last_fetch = state.now()
        self._unstall(run, "fetch")
        return None

    def _fan_out(self, fetched: AppRun) -> None:
        """A fetch found new commits: the other apps of the URL whose ref
        moved look now, not at their next interval (one rev-parse per ref)."""
        for run in list(self.apps.values()):
            if run is fetched or run.mirror is not fetched.mirror or not run.led or \
                    not run.seen_sha:
                continue
            try:
                moved = run.mirror.commit(run.spec.ref) != run.seen_sha
            except GitOpsError:
                moved = True  # the app's own key says what is wrong
            if moved:
                self.queue.add(("app", run.spec.name))

    def _source(self, run: AppRun) -> tree.Source:
        """The revision ``ref`` names in the mirror, as ``kubectl gitops sync``
        resolves a repository: its ``.gitops.yaml`` (path, name, namespace,
        exclude, ignore, forceConflicts) read from that commit."""
        spec = run.spec
        src = tree.resolve(repo=run.mirror.dir, ref=spec.ref, path=spec.path,
                           name=spec.name if spec.named else None, namespace=spec.namespace)
        run.name = src.name or spec.name
        return src

    def _decryption_keys(self, run: AppRun) -> Keys | None:
        """The app's age keys, read from its Secret at each sync (so a
        rotated key is used at once), kept in memory only: sops gets them in
        its environment."""
        ref = run.spec.decryption_secret
        if not ref:
            return None
        ns, _, name = ref.rpartition("/")
        ns = ns or run.namespace
        secret = self.kube.get(self.kube.resource_types()[("", "Secret")], ns, name)
        if secret is None:  # the cluster's state, not the revision's: retried
            raise ClusterError(f"decryption Secret {ns}/{name} not found")
        keys = [base64.b64decode(v).decode("utf-8", "replace").strip()
                for k, v in sorted((secret.get("data") or {}).items()) if k.endswith(".agekey")]
        if not keys:
            raise ClusterError(f"decryption Secret {ns}/{name} holds no *.agekey entry")
        return Keys(key="\n".join(keys))

    def _prepare(self, run: AppRun, src: tree.Source) \
            -> tuple[app_mod.App, Plan, sync.Options] | None:
        """Validate, load and plan the revision, and check it as sync does
        before its first write; None (a stall, not retried until the revision
        changes) when the revision itself is at fault."""
        spec = run.spec
        assert src.sha
        try:
            src.keys = self._decryption_keys(run)
            checked = checks.validate_source(src, checks.Options(namespace=run.namespace,
                                                                 ignore_missing_schemas=True))
            if not checked.valid:
                raise GitOpsError("; ".join(p.render() for p in checked.problems))
            app = app_mod.load(src, run.kube, name=run.name, namespace=run.namespace)
            opts = sync.options_for(src, prune=spec.prune)
            the_plan = sync.make_plan(app, opts)
            sync.check(app, the_plan, opts)
        except (ClusterError, sync.SyncRefused):
            raise  # the cluster, not the revision: retried with backoff
        except GitOpsError as e:
            run.bad_sha = src.sha
            self._stall(run, "revision", "InvalidRevision",
                        f"revision {src.sha[:12]} not applied: " + "; ".join(e.lines()))
            return None
        self._unstall(run, "revision")
        return app, the_plan, opts

    def _sync(self, run: AppRun, src: tree.Source) -> None:
        spec = run.spec
        prepared = self._prepare(run, src)
        if prepared is None:
            return
        app, the_plan, opts = prepared
        assert src.sha
        self.metrics.plans.labels(spec.name).inc()
        if _changes(the_plan):
            # The Lease for the write only. A writer that synced the app
            # between the plan and the Lease (another replica, a CLI sync)
            # changed the parent: plan again, and write only what is left.
            with self._write_lock(run, src) as lease:
                live = run.kube.get(applyset.PARENT_TYPE, run.namespace, run.name)
                if _version(live) != _version(app.parent_live):
                    again = self._prepare(run, src)
                    if again is None:
                        return
                    app, the_plan, opts = again
                if _changes(the_plan) and not self._write(run, src, app, the_plan, opts, lease):
                    return
        self._blocked(run, [])
        run.src, run.synced_sha, run.bad_sha = src, src.sha, ""
        run.last_sync = state.now()
        self.metrics.last_sync.labels(spec.name).set(time.time())
        run.members = {i.id: Member(i.rtype, i.manifest, i.desired) for i in the_plan.items
                       if i.action != "prune" and i.rtype and i.manifest and i.desired}
        self.metrics.objects.labels(spec.name).set(len(run.members))
        run.drift.clear()
        self._watch(run, app.parent.id)

    def _write(self, run: AppRun, src: tree.Source, app: app_mod.App, the_plan: Plan,
               opts: sync.Options, lease: Lease) -> bool:
        """Sync the plan under the Lease held; False when dependsOn holds it back."""
        spec = run.spec
        assert src.sha
        try:
            result = sync.run(app, the_plan, opts, lambda line: log.info(
                "app %s: %s", spec.name, line), lease=lease)
        except sync.Blocked as e:
            if app.parent_live is None:  # so that status and ls show what it waits for
                run.parent_live = sync.ensure_parent(app)
            self._blocked(run, e.blockers)
            return False
        counts = result.counts()
        summary = (f"synced {src.sha[:12]}: {counts['created']} created, "
                   f"{counts['updated']} updated, {counts['pruned']} pruned, "
                   f"{counts['unchanged']} unchanged, {counts['failed']} failed")
        log.info("app %s: %s", spec.name, summary)
        run.parent_live = run.kube.get(applyset.PARENT_TYPE, run.namespace, run.name)
        if not result.ok:
            raise GitOpsError(f"{summary}: {'; '.join(result.failures)}")
        self._event(run, "Synced", summary)
        return True

    def _blocked(self, run: AppRun, blockers: list[str]) -> None:
        """An app of ``dependsOn`` is not ready: the revision waits (not a
        stall: it goes on by itself). Said once per change: a log line, an
        Event, and ``blockedBy`` in status (Reconciling, DependencyNotReady)."""
        if blockers == run.blocked_by:
            return
        run.blocked_by = blockers
        if blockers:
            message = "blocked on " + "; ".join(blockers)
            log.info("app %s: %s", run.spec.name, message)
            self._event(run, "DependencyNotReady", message)
        else:
            log.info("app %s: its dependencies are ready", run.spec.name)
        self.queue.add(("status", run.spec.name))

    # --- watches and drift --------------------------------------------------------------

    def _watch(self, run: AppRun, set_id: str) -> None:
        """Register the app's member types (and its parent) with the shared
        watches: one watch per type for all the apps, by the part-of label."""
        served = run.kube.resource_types()
        if any((oid.group, oid.kind) not in served or oid.kind == "CustomResourceDefinition"
               for oid in run.members):
            run.kube.forget_discovery()  # the revision added CRDs: their types now
            served = run.kube.resource_types()
        if run.set_id and run.set_id != set_id:
            run.shared.unregister(run.set_id)
            self.by_set.pop(run.set_id, None)
        run.set_id = set_id
        self.by_set[set_id] = run
        run.shared.register(set_id, run.namespace, [
            (served.get((oid.group, oid.kind)) or m.rtype, oid.namespace)
            for oid, m in run.members.items()])
        self.metrics.watches.set(sum(w.count for w in self._all_watches()))

    def _on_watch_error(self, set_ids: list[str], key: str, message: str) -> None:
        """A watch cannot read its type (forbidden, gone...): the health and
        drift of the apps there are unknown until it can again."""
        for set_id in set_ids:
            run = self.by_set.get(set_id)
            if run is None or run.stopped:
                continue
            if message:
                self._stall(run, f"watch {key}", "WatchFailed", message)
            else:
                self._unstall(run, f"watch {key}")

    def _on_event(self, set_id: str, ev: str, oid: ObjectId, obj: dict[str, Any]) -> None:
        run = self.by_set.get(set_id)
        m = run.members.get(oid) if run is not None else None
        if run is None or m is None or run.stopped or not run.led:
            return
        self.queue.add(("status", run.spec.name), 1.0)  # health may have changed
        if ev == "DELETED" or not plan.known_unchanged(m.desired, obj):
            self.queue.add(("drift", run.spec.name, oid), self.settings.debounce)

    def _on_parent(self, set_id: str, ev: str, _oid: ObjectId, obj: dict[str, Any]) -> None:
        run = self.by_set.get(set_id)
        if run is None or run.stopped or not run.led:
            return
        was = status.suspended(run.parent_live)
        run.parent_live = None if ev == "DELETED" else obj
        if status.status_of(obj).get("agent") not in (None, "", self.identity):
            # Written by a replica that led the app a moment (before the
            # replicas saw each other): say who leads, once they agree.
            self.queue.add(("status", run.spec.name), self.settings.lease_duration / 3)
        if status.suspended(run.parent_live) != was and ev != "SYNCED":
            log.info("app %s: %s", run.spec.name,
                     "suspended" if not was else "resumed")
            self.queue.add(("app", run.spec.name))

    def _reconcile_drift(self, run: AppRun, oid: ObjectId) -> float | None:
        m = run.members.get(oid)
        if m is None or not run.led or run.src is None:
            return None
        live = run.kube.get(m.rtype, oid.namespace, oid.name)
        if live is not None and plan.known_unchanged(m.desired, live):
            self._no_drift(run, oid)
            return None
        parent_live = run.parent_live = run.kube.get(applyset.PARENT_TYPE, run.namespace,
                                                      run.name)
        parent = applyset.parent_from_live(run.name, run.namespace, parent_live)
        # The source its sync recorded (and wrote on every member), so the
        # object corrected is the one that sync applied.
        app = app_mod.App(run.src, run.kube, [m.manifest], parent, parent_live, parent.source)
        # The revision's settings, as its sync had; dependsOn held back the
        # revision, not the correction of what it already put there.
        opts = sync.options_for(run.src, ignore_dependencies=True)
        one = sync.make_plan(app, opts)
        item = one.items[0]
        if not item.needs_apply and item.live is not None:
            self._no_drift(run, oid)  # only fields git does not declare changed
            return None
        what = f"{oid}: {plan.drift_line(item)}"
        if run.drift.get(oid) != what:
            if oid not in run.drift:
                self.metrics.drift_detected.labels(run.spec.name).inc()
            run.drift[oid] = what
            log.warning("app %s: drift: %s", run.spec.name, what)
            self._event(run, "DriftDetected", what, warning=True)
            self._status(run)
        if not run.spec.self_heal or run.spec.suspend or status.suspended(parent_live):
            return None  # reported only; resuming looks at it again
        wait = self._heal_wait(run, oid)
        if wait > 0:
            return wait  # a second writer cannot make this loop faster than the backoff
        with self._write_lock(run, run.src) as lease:
            result = sync.run(app, one, opts,
                              lambda line: log.info("app %s: %s", run.spec.name, line),
                              lease=lease)
        n, _ = run.heals.get(oid, (0, 0.0))
        run.heals[oid] = (n + 1, time.monotonic())
        if not result.ok:
            raise GitOpsError(f"correcting {oid}: {'; '.join(result.failures)}")
        self.metrics.drift_corrected.labels(run.spec.name).inc()
        log.info("app %s: corrected %s", run.spec.name, what)
        self._event(run, "DriftCorrected", f"re-applied {what}")
        run.drift.pop(oid, None)
        self._status(run)
        return None

    def _heal_wait(self, run: AppRun, oid: ObjectId) -> float:
        """Seconds until ``oid`` may be corrected again: the n-th correction in
        a row waits ``heal_backoff * 2**(n-1)`` after the one before. A drift
        that comes back only after twice that wait starts the count over, so
        a writer that keeps fighting meets a doubling wait, and one honest
        mistake a while later is corrected at once."""
        n, last = run.heals.get(oid, (0, 0.0))
        s = self.settings
        since = time.monotonic() - last
        delay = min(s.heal_backoff_cap, s.heal_backoff * 2 ** (n - 1)) if n else 0.0
        if n == 0 or since > 2 * delay:
            run.heals.pop(oid, None)
            return 0.0
        return max(0.0, delay - since)

    def _no_drift(self, run: AppRun, oid: ObjectId) -> None:
        if run.drift.pop(oid, None) is not None:
            self._status(run)

    # --- stalls -------------------------------------------------------------------------

    def _stall(self, run: AppRun, area: str, reason: str, message: str) -> bool:
        """``run`` cannot make progress in ``area``: a WARNING now, again with
        backoff while the same failure lasts; the condition, the Event (at the
        next status write) and the metric. True when this logged."""
        now = time.monotonic()
        name = run.spec.name
        with self._stalls_lock:
            old = run.stalls.get(area)
            if old is not None and (old.reason, old.message) == (reason, message):
                old.count += 1
                logged = now >= old.log_at
                if logged:
                    log.warning("app %s: %s (%s; %d times since the first, still failing)",
                                name, message, reason, old.count)
                    old.log_at = now + old.log_every
                    old.log_every = min(old.log_every * 2, self.settings.log_backoff_cap)
                self.metrics.errors.labels(name, reason).inc()
                return logged
            first = self.settings.log_backoff
            run.stalls[area] = Stall(reason, message, log_at=now + first, log_every=first * 2)
            self._stalled_metric(run)
        log.warning("app %s: %s (%s)", name, message, reason)
        self.metrics.errors.labels(name, reason).inc()
        self.queue.add(("status", name))  # the condition and the Event
        return True

    def _unstall(self, run: AppRun, area: str, *, quiet: bool = False) -> None:
        with self._stalls_lock:
            old = run.stalls.pop(area, None)
            if old is None:
                return
            self._stalled_metric(run)
        if not quiet:
            log.info("app %s: works again (%s, %d failure%s before)", run.spec.name,
                     old.reason, old.count, "" if old.count == 1 else "s")
            self.queue.add(("status", run.spec.name))

    def _stalled_metric(self, run: AppRun) -> None:
        now = {s.reason for s in run.stalls.values()}
        for reason in run.stall_reasons | now:
            self.metrics.stalled.labels(run.spec.name, reason).set(1 if reason in now else 0)
        run.stall_reasons |= now

    def _stalled(self, run: AppRun) -> Stall | None:
        """The stall status shows: the first by area (the Lease before the
        fetch before the revision...)."""
        with self._stalls_lock:
            found = sorted(run.stalls.items(), key=lambda kv: (
                _AREAS.index(kv[0].split(" ")[0]) if kv[0].split(" ")[0] in _AREAS
                else len(_AREAS), kv[0]))
        return found[0][1] if found else None

    # --- status and events --------------------------------------------------------------

    def _report(self, run: AppRun) -> None:
        """Write the status of the apps this replica leads (on a parent that
        exists)."""
        if run.led and run.namespace:
            if run.parent_live is None:
                run.parent_live = run.kube.get(applyset.PARENT_TYPE, run.namespace, run.name)
            self._status(run)

    def _health(self, run: AppRun) -> tuple[str, list[str]]:
        """The members' health, from what the watches saw, and what is not healthy."""
        checks = health.Checks(run.src.health_checks if run.src else ())
        shown, notes = [], []
        for oid, m in run.members.items():
            obj = (run.shared or self.watches).get(oid)
            if obj is None:  # not seen yet (a watch's first LIST to come) or deleted
                shown.append("Progressing")
                notes.append(f"{oid}: not seen yet")
                continue
            h = health.check(oid.group, oid.kind, obj, checks=checks,
                             status_subresource=m.rtype.status_subresource)
            shown.append(h.shown)
            if not h.current:
                notes.append(f"{oid}: {h}")
        return health.worst(shown), sorted(notes)

    def _status(self, run: AppRun) -> None:
        """Write the status annotation when anything but its times changed."""
        if run.parent_live is None:
            return  # no parent yet: nothing to annotate (the log and metrics say it)
        stall = self._stalled(run)
        shown, unhealthy = self._health(run)
        st: dict[str, Any] = {
            "revision": run.synced_sha, "ref": run.spec.ref,
            "sync": "OutOfSync" if run.drift or run.blocked_by or
            {"revision", "sync"} & set(run.stalls) else
            "Synced" if run.synced_sha else "Unknown",
            "health": "Degraded" if "fetch" in run.stalls else shown,
            "unhealthy": unhealthy[:20], "blockedBy": run.blocked_by,
            "driftCount": len(run.drift), "drift": sorted(run.drift.values())[:20],
            "lastError": stall.message if stall else "", "stalled": stall.reason if stall else "",
            "suspended": run.spec.suspend or status.suspended(run.parent_live),
            "selfHeal": run.spec.self_heal, "prune": run.spec.prune,
            "agent": self.identity, "lastFetchTime": run.last_fetch,
            "lastSyncTime": run.last_sync,
        }
        for s in list(run.stalls.values()):
            if not s.evented:  # once per failure, now that there is a parent to carry it
                s.evented = True
                self._event(run, s.reason, s.message, warning=True)
        bare = {k: v for k, v in st.items() if k not in ("lastFetchTime",)}
        old = {k: v for k, v in run.status.items() if k not in ("lastFetchTime", "conditions")}
        # Another replica wrote it since (it led the app a moment): say who leads now.
        written_by = status.status_of(run.parent_live).get("agent")
        if bare == old and written_by in (None, "", self.identity):
            return
        st["conditions"] = state.conditions(st, run.status.get("conditions") or
                                            status.status_of(run.parent_live).get("conditions")
                                            or [])
        state.write_status(run.kube, run.namespace, run.name, st)
        run.status = st

    def _event(self, run: AppRun, reason: str, message: str, *, warning: bool = False) -> None:
        if run.namespace:
            state.event(run.kube, run.parent_live, run.namespace, run.name, reason,
                        message, warning=warning)
