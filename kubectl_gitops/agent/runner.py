"""The reconciler: ``reconcile(key) -> requeue_after`` over a work queue.

Keys are ``("app", name)`` (fetch, and on a new revision validate, plan and
sync) and ``("drift", name, object id)`` (one member that a watch saw differ
from git). A timer per app (the requeue after each reconcile), the webhook
and the watches feed the queue; a burst collapses into one key. Everything
that writes runs under the app's Lease and the app's own lock, so two keys of
one app never write at once and a lost Lease stops writing at once.
"""

from __future__ import annotations

import base64
import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubectl_gitops import app as app_mod
from kubectl_gitops import applyset, desired, health, plan, source, sync, validate
from kubectl_gitops.agent import drift, state
from kubectl_gitops.agent.config import AppSpec
from kubectl_gitops.agent.metrics import CountingKube, Metrics
from kubectl_gitops.agent.mirror import Mirror
from kubectl_gitops.agent.watch import Watch
from kubectl_gitops.agent.workqueue import Backoff, WorkQueue
from kubectl_gitops.errors import ClusterError, GitError, GitOpsError
from kubectl_gitops.lease import Lease, LeaseLost, identity, lease_name
from kubectl_gitops.manifests import Manifest
from kubectl_gitops.resources import ObjectId, ResourceType
from kubectl_gitops.sops import Keys

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
    token_file: str | None = None


@dataclass
class Member:
    rtype: ResourceType
    manifest: Manifest
    desired: dict[str, Any]


@dataclass
class AppRun:
    """What the agent knows of one app between reconciles."""

    spec: AppSpec
    mirror: Mirror
    name: str = ""  # the app's name in the cluster (.gitops.yaml's when not given)
    lock: threading.Lock = field(default_factory=threading.Lock)
    lease: Lease | None = None
    namespace: str = ""
    src: source.Source | None = None
    synced_sha: str = ""  # the revision live (synced or found unchanged)
    bad_sha: str = ""  # a revision that failed validation: not retried until it changes
    members: dict[ObjectId, Member] = field(default_factory=dict)
    live: dict[ObjectId, dict[str, Any]] = field(default_factory=dict)  # from the watches
    drift: dict[ObjectId, str] = field(default_factory=dict)
    watches: dict[tuple[str, str, str], Watch] = field(default_factory=dict)
    fetch_error: str = ""
    last_error: str = ""
    last_fetch: str = ""
    last_sync: str = ""
    fetch_now: bool = True
    next_fetch: float = 0.0
    status: dict[str, Any] = field(default_factory=dict)
    parent_live: dict[str, Any] | None = None
    heals: dict[ObjectId, tuple[int, float]] = field(default_factory=dict)  # n, last time
    stopped: bool = False


class Agent:
    def __init__(self, kube: CountingKube, specs: list[AppSpec], settings: Settings) -> None:
        self.kube = kube
        self.settings = settings
        self.metrics = Metrics()
        kube.metrics = self.metrics
        self.queue: WorkQueue[Key] = WorkQueue()
        self.backoff: Backoff[Key] = Backoff(base=1.0, cap=300.0)
        self.apps: dict[str, AppRun] = {}
        self.identity = identity("agent")
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self._threads: list[threading.Thread] = []
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
                self.apps[name] = AppRun(spec, Mirror(spec.repo, self.settings.cache,
                                                      token_file=self.settings.token_file))
            elif run.spec != spec:
                run.spec, run.synced_sha, run.bad_sha = spec, "", ""  # re-plan with the new spec
                if run.mirror.url != Mirror(spec.repo, self.settings.cache).url:
                    run.mirror = Mirror(spec.repo, self.settings.cache,
                                        token_file=self.settings.token_file)
            self.queue.add(("app", name))

    def _stop_app(self, run: AppRun) -> None:
        run.stopped = True
        for w in run.watches.values():
            w.stop()
        run.watches.clear()
        if run.lease is not None:
            run.lease.release()

    def trigger_fetch(self) -> None:
        """The webhook: fetch every app now."""
        for name, run in self.apps.items():
            run.fetch_now = True
            self.queue.add(("app", name))

    # --- running --------------------------------------------------------------

    def start(self) -> None:
        for i in range(self.settings.workers):
            t = threading.Thread(target=self._work, name=f"worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._renew_leases, name="leases", daemon=True)
        t.start()

    def stop(self) -> None:
        """Hand out no more keys, let the writes in flight finish, let go of the Leases."""
        self.stopping.set()
        self.queue.close()
        for t in self._threads:
            t.join()
        for run in self.apps.values():
            with run.lock:
                self._stop_app(run)

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
        started = time.monotonic()
        result = "ok"
        try:
            with run.lock:
                if kind == "app":
                    after = self._reconcile_app(run)
                elif kind == "status":
                    after = None
                    if run.lease is not None and run.lease.held:
                        self._status(run)
                else:
                    after = self._reconcile_drift(run, key[2])
            self.backoff.forget(key)
            return after
        except LeaseLost as e:
            result = "lease-lost"
            log.warning("app %s: %s", run.spec.name, e)
            return 0.0 if kind == "app" else None
        except Exception as e:  # noqa: BLE001 - one failing key must not stop the agent
            result = "error"
            delay = self.backoff.next(key)
            log.error("app %s: %s (retrying in %.0f s)", run.spec.name,
                      e if isinstance(e, GitOpsError) else f"{type(e).__name__}: {e}", delay,
                      exc_info=not isinstance(e, GitOpsError))
            return delay
        finally:
            self.metrics.reconciles.labels(run.spec.name, kind, result).inc()
            self.metrics.duration.labels(run.spec.name, kind).observe(time.monotonic() - started)

    # --- leadership -------------------------------------------------------------

    def _lead(self, run: AppRun) -> bool:
        """Hold the app's Lease (the one a CLI sync takes), or try to take it."""
        if run.lease is None or (run.lease.namespace, run.lease.name) != \
                (run.namespace, lease_name(run.name)):
            run.lease = Lease(self.kube, run.namespace, lease_name(run.name),
                              holder=self.identity, duration=self.settings.lease_duration)
        if run.lease.held:
            return True
        try:
            run.lease.acquire(0)
        except GitOpsError:
            return False
        log.info("app %s: leading (Lease %s/%s)", run.spec.name, run.namespace,
                 run.lease.name)
        run.synced_sha = ""  # a new leader looks at everything once
        return True

    def _renew_leases(self) -> None:
        period = self.settings.lease_duration / 3
        while not self.stopping.wait(period):
            for run in list(self.apps.values()):
                lease = run.lease
                if lease is not None and lease.held and not lease.renew():
                    log.warning("app %s: lost the Lease; stopped writing", run.spec.name)
                    self.queue.add(("app", run.spec.name))

    # --- the app key ----------------------------------------------------------------

    def _reconcile_app(self, run: AppRun) -> float:
        spec = run.spec
        if run.fetch_now or time.monotonic() >= run.next_fetch:
            if not self._fetch(run):
                return min(spec.interval, self.backoff.next(("fetch", spec.name)))
            self.backoff.forget(("fetch", spec.name))
        sha = run.mirror.resolve(spec.ref)
        src = self._source(run, sha)
        run.namespace = desired.default_namespace(src, spec.namespace, self.kube)
        if not self._lead(run):
            return min(spec.interval, self.settings.lease_duration / 3)
        if ("", "parent", run.namespace) not in run.watches:  # else the watch keeps it fresh
            run.parent_live = self.kube.get(applyset.PARENT_TYPE, run.namespace, run.name)
        if run.spec.suspend or state.suspended(run.parent_live):
            self._status(run)
            return spec.interval
        if run.status.get("suspended"):  # resumed: correct what was only reported
            for oid in run.drift:
                self.queue.add(("drift", spec.name, oid))
        if sha != run.synced_sha and sha != run.bad_sha:
            self._sync(run, src)
        self._status(run)
        return spec.interval

    def _fetch(self, run: AppRun) -> bool:
        run.fetch_now = False
        run.next_fetch = time.monotonic() + run.spec.interval
        self.metrics.fetches.labels(run.spec.name).inc()
        try:
            run.mirror.fetch()
        except GitError as e:
            self.metrics.fetch_errors.labels(run.spec.name).inc()
            first = not run.fetch_error
            run.fetch_error = f"fetching {e}"
            log.error("app %s: %s; keeping revision %s", run.spec.name, run.fetch_error,
                      run.synced_sha[:12] or "(none yet)")
            if run.namespace and run.lease is not None and run.lease.held:
                if first:
                    self._event(run, "FetchFailed", run.fetch_error, warning=True)
                self._status(run)
            return False  # the last good revision stays; nothing is synced or pruned
        run.last_fetch = state.now()
        if run.fetch_error:
            log.info("app %s: fetch works again", run.spec.name)
        run.fetch_error = ""
        return True

    def _source(self, run: AppRun, sha: str) -> source.Source:
        root = run.mirror.dir
        cfg = source._config_at(root, "commit", sha, None)  # .gitops.yaml of that commit
        spec = run.spec
        run.name = spec.name if spec.named else cfg.name or spec.name
        return source.Source(root=root, path=source.normalize_path(root, spec.path or cfg.path),
                             mode="commit", ref=spec.ref, sha=sha, name=run.name,
                             namespace=spec.namespace or cfg.namespace, exclude=cfg.exclude,
                             helm=cfg.helm)

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
        if secret is None:
            raise GitOpsError(f"decryption Secret {ns}/{name} not found")
        keys = [base64.b64decode(v).decode("utf-8", "replace").strip()
                for k, v in sorted((secret.get("data") or {}).items()) if k.endswith(".agekey")]
        if not keys:
            raise GitOpsError(f"decryption Secret {ns}/{name} holds no *.agekey entry")
        return Keys(key="\n".join(keys))

    def _sync(self, run: AppRun, src: source.Source) -> None:
        spec = run.spec
        assert src.sha and run.lease
        try:
            src.keys = self._decryption_keys(run)
            checked = validate.validate_source(src, validate.Options(namespace=run.namespace,
                                                                   ignore_missing_schemas=True))
            if not checked.valid:
                raise GitOpsError("; ".join(p.render() for p in checked.problems))
            app = app_mod.load(src, self.kube, name=run.name, namespace=run.namespace)
            the_plan = plan.build(self.kube, app.manifests, app.parent, app.parent_live,
                                  prune=spec.prune, force_conflicts=False)
            opts = sync.Options(prune=spec.prune, force_conflicts=True)
            sync.check(app, the_plan, opts)
        except ClusterError:
            raise  # the cluster, not the revision: retried with backoff
        except GitOpsError as e:
            run.bad_sha = src.sha
            run.last_error = f"revision {src.sha[:12]} not applied: " + "; ".join(e.lines())
            log.error("app %s: %s", spec.name, run.last_error)
            self._event(run, "InvalidRevision", run.last_error, warning=True)
            return
        changed = any(i.needs_apply for i in the_plan.items) or the_plan.of("prune")
        if changed:
            run.lease.check()
            result = sync.run(app, the_plan, opts, lambda line: log.info(
                "app %s: %s", spec.name, line), lease=run.lease)
            counts = result.counts()
            summary = (f"synced {src.sha[:12]}: {counts['created']} created, "
                       f"{counts['updated']} updated, {counts['pruned']} pruned, "
                       f"{counts['unchanged']} unchanged, {counts['failed']} failed")
            log.info("app %s: %s", spec.name, summary)
            if not result.ok:
                run.last_error = "; ".join(result.failures)
                self._event(run, "SyncFailed", f"{summary}: {run.last_error}", warning=True)
                run.parent_live = self.kube.get(applyset.PARENT_TYPE, run.namespace, run.name)
                self._status(run)
                raise GitOpsError(f"sync of {src.sha[:12]} failed: {run.last_error}")
            self._event(run, "Synced", summary)
            run.parent_live = self.kube.get(applyset.PARENT_TYPE, run.namespace, run.name)
        run.src, run.synced_sha, run.bad_sha, run.last_error = src, src.sha, "", ""
        run.last_sync = state.now()
        self.metrics.last_sync.labels(spec.name).set(time.time())
        run.members = {i.id: Member(i.rtype, i.manifest, i.desired) for i in the_plan.items
                       if i.action != "prune" and i.rtype and i.manifest and i.desired}
        self.metrics.objects.labels(spec.name).set(len(run.members))
        run.drift.clear()
        self._watch(run, app.parent.id)

    # --- watches and drift --------------------------------------------------------------

    def _watch(self, run: AppRun, set_id: str) -> None:
        """One watch per member type and namespace, by the part-of label."""
        self.kube.forget_discovery()  # the revision may have added CRDs
        served = self.kube.resource_types()
        wanted: dict[tuple[str, str, str], ResourceType] = {}
        for oid, m in run.members.items():
            rtype = served.get((oid.group, oid.kind)) or m.rtype
            wanted[(oid.group, oid.kind, oid.namespace if rtype.namespaced else "")] = rtype
        for key in list(run.watches):
            if key not in wanted:
                run.watches.pop(key).stop()
        selector = f"{applyset.PART_OF_LABEL}={set_id}"
        # The parent too (by its ID label): suspend and resume act at once.
        wanted[("", "parent", run.namespace)] = applyset.PARENT_TYPE
        for key, rtype in wanted.items():
            if key in run.watches:
                continue
            parent = key[1] == "parent"
            run.watches[key] = Watch(
                self.kube, rtype, key[2], f"{applyset.ID_LABEL}={set_id}" if parent else selector,
                functools.partial(self._on_parent if parent else self._on_event, run)).start()

    def _on_event(self, run: AppRun, ev: str, oid: ObjectId, obj: dict[str, Any]) -> None:
        if ev == "DELETED":
            run.live.pop(oid, None)
        else:
            run.live[oid] = obj
        m = run.members.get(oid)
        if m is None or run.stopped:
            return
        self.queue.add(("status", run.spec.name), 1.0)  # health may have changed
        if ev == "DELETED" or not drift.matches(m.desired, obj):
            self.queue.add(("drift", run.spec.name, oid), self.settings.debounce)

    def _on_parent(self, run: AppRun, ev: str, _oid: ObjectId, obj: dict[str, Any]) -> None:
        was = state.suspended(run.parent_live)
        run.parent_live = None if ev == "DELETED" else obj
        if state.suspended(run.parent_live) != was and ev != "SYNCED":
            log.info("app %s: %s", run.spec.name,
                     "suspended" if not was else "resumed")
            self.queue.add(("app", run.spec.name))

    def _reconcile_drift(self, run: AppRun, oid: ObjectId) -> float | None:
        m = run.members.get(oid)
        if m is None or run.lease is None or not run.lease.held or run.src is None:
            return None
        live = self.kube.get(m.rtype, oid.namespace, oid.name)
        if live is not None and drift.matches(m.desired, live):
            self._no_drift(run, oid)
            return None
        parent_live = run.parent_live = self.kube.get(applyset.PARENT_TYPE, run.namespace,
                                                      run.name)
        parent = applyset.parent_from_live(run.name, run.namespace, parent_live)
        one = plan.build(self.kube, [m.manifest], parent, parent_live, prune=False,
                         force_conflicts=False)
        item = one.items[0]
        if not item.needs_apply and item.live is not None:
            self._no_drift(run, oid)  # only fields git does not declare changed
            return None
        what = f"{oid}: {drift.describe(item)}"
        if run.drift.get(oid) != what:
            if oid not in run.drift:
                self.metrics.drift_detected.labels(run.spec.name).inc()
            run.drift[oid] = what
            log.warning("app %s: drift: %s", run.spec.name, what)
            self._event(run, "DriftDetected", what, warning=True)
            self._status(run)
        if not run.spec.self_heal or run.spec.suspend or state.suspended(parent_live):
            return None  # reported only; resuming looks at it again
        wait = self._heal_wait(run, oid)
        if wait > 0:
            return wait  # a second writer cannot make this loop faster than the backoff
        run.lease.check()
        app = app_mod.App(run.src, self.kube, [m.manifest], parent, parent_live)
        result = sync.run(app, one, sync.Options(force_conflicts=True),
                          lambda line: log.info("app %s: %s", run.spec.name, line),
                          lease=run.lease)
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

    # --- status and events --------------------------------------------------------------

    def _health(self, run: AppRun) -> str:
        worst = "Healthy"
        for oid in run.members:
            obj = run.live.get(oid)
            if obj is None:
                continue  # not seen yet (or deleted: that is drift)
            try:
                ok, _ = health.check(obj)
            except ValueError:
                return "Degraded"
            if not ok:
                worst = "Progressing"
        return worst

    def _status(self, run: AppRun) -> None:
        """Write the status annotation when anything but its times changed."""
        if run.parent_live is None:
            return  # no parent yet: nothing to annotate (the log and metrics say it)
        error = run.fetch_error or run.last_error
        st: dict[str, Any] = {
            "revision": run.synced_sha, "ref": run.spec.ref,
            "sync": "OutOfSync" if run.drift or run.last_error else
            "Synced" if run.synced_sha else "Unknown",
            "health": "Degraded" if run.fetch_error else self._health(run),
            "driftCount": len(run.drift), "drift": sorted(run.drift.values())[:20],
            "lastError": error, "suspended": run.spec.suspend or state.suspended(run.parent_live),
            "selfHeal": run.spec.self_heal, "prune": run.spec.prune,
            "agent": self.identity, "lastFetchTime": run.last_fetch,
            "lastSyncTime": run.last_sync,
        }
        bare = {k: v for k, v in st.items() if k not in ("lastFetchTime",)}
        old = {k: v for k, v in run.status.items() if k not in ("lastFetchTime", "conditions")}
        if bare == old:
            return
        st["conditions"] = state.conditions(st, run.status.get("conditions") or
                                            state.status_of(run.parent_live).get("conditions")
                                            or [])
        if run.lease is not None:
            run.lease.check()
        state.write_status(self.kube, run.namespace, run.name, st)
        run.status = st

    def _event(self, run: AppRun, reason: str, message: str, *, warning: bool = False) -> None:
        if run.namespace:
            state.event(self.kube, run.parent_live, run.namespace, run.name, reason,
                        message, warning=warning)
