"""Converge the cluster to a plan: validate, plan, apply in order, prune last.

Nothing is written when any manifest is invalid, when any object's dry-run
failed, when ownership checks fail, or while an app it depends on is not
ready. The ApplySet parent is widened to the union of old and new members
before anything is applied and narrowed only after a successful prune, so
an interrupted sync never loses track of an object and re-running it
converges.

Order: PreSync hooks (a failure stops the sync before anything else is
written), then the members wave by wave (each wave healthy before the next
is applied; within a wave Namespaces and CRDs, other cluster-scoped objects,
namespaced ones), prune in reverse, then (with ``--wait``, or PostSync
hooks) every member healthy, then PostSync hooks; SyncFail hooks when
anything failed.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubectl_gitops import secrets
from kubectl_gitops.engine import applyset
from kubectl_gitops.engine import plan as plan_mod
from kubectl_gitops.engine.app import App, source_conflict, started
from kubectl_gitops.engine.model import Hook, Item, Plan, namespaces_of
from kubectl_gitops.engine.plan import summarize_conflict
from kubectl_gitops.errors import ClusterError, ConflictError, GitOpsError
from kubectl_gitops.kube.resources import ObjectId
from kubectl_gitops.source import order

if TYPE_CHECKING:  # loaded where used: a converged re-run takes no Lease
    from kubectl_gitops.engine.wait import OnProgress
    from kubectl_gitops.kube.health import Checks
    from kubectl_gitops.kube.lease import Lease
    from kubectl_gitops.source.tree import Source

Report = Callable[[str], None]


class SyncRefused(GitOpsError):
    """The sync was refused before anything was written."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))

    def lines(self) -> list[str]:
        return self.problems


class Blocked(SyncRefused):
    """An app of ``dependsOn`` is not ready: nothing written (the agent waits)."""

    def __init__(self, blockers: list[str]) -> None:
        self.blockers = blockers
        super().__init__([f"blocked on {b}" for b in blockers[:-1]] + [
            f"blocked on {blockers[-1]}; pass --ignore-dependencies to sync anyway"])


@dataclass
class Options:
    prune: bool = False
    dry_run: bool = False
    allow_empty: bool = False
    adopt: bool = False
    force_conflicts: bool = True  # git is the source of truth: take drifted fields back
    wait: bool = False
    timeout: float = 300.0
    take_over: bool = False  # prune although the parent records another source
    prune_cascade: bool = False  # prune Namespaces and CRDs with what they hold
    lock_timeout: float = 60.0  # how long to wait for another sync's Lease
    ignore_dependencies: bool = False  # sync although an app of dependsOn is not ready


def options_for(src: Source, *, force_conflicts: bool | None = None, **kw: Any) -> Options:
    """The options a sync of ``src`` runs with: ``.gitops.yaml``'s
    ``forceConflicts`` unless the caller decides (``--[no-]force-conflicts``).
    The CLI and the agent both build their options here, so a setting the
    source carries holds for both."""
    return Options(force_conflicts=src.force_conflicts if force_conflicts is None
                   else force_conflicts, **kw)


def make_plan(app: App, opts: Options) -> Plan:
    """The plan of ``app`` under ``opts``, with the source's ``ignore:`` rules:
    the one call a CLI sync, a re-plan and the agent (a revision, or one
    drifted member) make."""
    plan = plan_mod.build(app.kube, app.manifests, app.parent, app.parent_live,
                          prune=opts.prune, rules=app.src.ignore, cascade=opts.prune_cascade,
                          source=app.source, take_over=opts.take_over)
    if app.hooks:
        from kubectl_gitops.engine import hooks  # noqa: PLC0415 - only trees that have hooks

        made = {m.name for m in app.manifests if m.kind == "Namespace" and not m.group}
        plan.hooks = hooks.plan(app.kube, app.hooks, made | (
            set() if app.parent.exists else {app.parent.namespace}))
    return plan


def depends_on(app: App) -> tuple[str, ...]:
    """The apps of ``dependsOn``, as "namespace/name" (the app's own
    namespace when the entry names none). The app itself is left out: one
    ``.gitops.yaml`` serves every path of its repository, so the app it
    names may read it too."""
    own = f"{app.parent.namespace}/{app.parent.name}"
    deps = (f"{d.namespace or app.parent.namespace}/{d.name}" for d in app.src.depends_on)
    return tuple(d for d in deps if d != own)


def check_dependencies(app: App, opts: Options) -> None:
    """Raise :class:`Blocked` while an app this one depends on is not ready."""
    deps = depends_on(app)
    if not deps or opts.ignore_dependencies:
        return
    from kubectl_gitops.engine import status  # noqa: PLC0415 - only apps with dependsOn

    found = status.blockers(app.kube, deps)
    if found:
        raise Blocked(found)


@dataclass
class Result:
    created: list[Item] = field(default_factory=list)
    updated: list[Item] = field(default_factory=list)
    pruned: list[Item] = field(default_factory=list)
    unchanged: int = 0
    failures: list[str] = field(default_factory=list)
    waited: list[str] = field(default_factory=list)
    written: set[ObjectId] = field(default_factory=set, repr=False)  # created or updated

    @property
    def ok(self) -> bool:
        return not self.failures

    def applied(self, item: Item) -> bool:
        """Record ``item`` as created or updated, once per object (a pass
        after a re-plan applies it again); False when it was already."""
        if item.id in self.written:
            return False
        self.written.add(item.id)
        (self.created if item.action == "create" else self.updated).append(item)
        return True

    def counts(self) -> dict[str, int]:
        return {"created": len(self.created), "updated": len(self.updated),
                "pruned": len(self.pruned), "unchanged": self.unchanged,
                "failed": len(self.failures)}


def check(app: App, plan: Plan, opts: Options) -> None:
    """Everything that must hold before the first write; raises with all
    problems (:func:`refusals`)."""
    problems = refusals(app, plan, opts)
    if problems:
        raise SyncRefused(problems)


def refusals(app: App, plan: Plan, opts: Options) -> list[str]:
    """Why a sync of ``plan`` is refused before anything is written, one
    line per problem; diff asks the same, and exits 2 where sync refuses.

    A problem of one object found while planning (the server refuses its
    dry-run, a foreign owner, a conflict under ``--no-force-conflicts``)
    refuses the whole sync. Only what no dry-run can see (a custom resource
    of a CRD this sync creates) fails at apply time, and then the other
    objects are still applied."""
    problems: list[str] = []
    if opts.prune and not app.manifests and not opts.allow_empty:
        problems.append(f"the revision holds no objects under {app.src.path or 'the repo root'}; "
                        "refusing to prune everything (pass --allow-empty to do so)")
    problems += foreign_owners(plan, app.parent.id, adopt=opts.adopt)
    found = plan.problems(force_conflicts=opts.force_conflicts)
    conflict = source_conflict(app)
    if conflict and not opts.take_over:
        # Its members say the same, each: the app's one line says it all.
        found = [p for p in found if f": {plan_mod.OTHER_SOURCE} " not in p]
        problems.append(f"{conflict}: refusing to sync into another source's app (pass "
                        "--take-over to make this source the app's, or choose another --name)")
    return found + problems


def foreign_owners(plan: Plan, set_id: str, *, adopt: bool) -> list[str]:
    """Objects another ApplySet or tool owns: refused, or (``adopt``) marked
    as taken over. Diff asks this too, to say first what sync refuses."""
    problems = []
    for item in plan.items:
        owner = applyset.foreign_owner(item.live, set_id) if item.live else None
        if not owner or item.action == "prune":
            continue
        if adopt:
            item.adopted = owner  # taking over means taking its fields too
        else:
            problems.append(f"{item.id}: already owned by {owner}; not taking it over "
                            "(pass --adopt to take ownership)")
    return problems


def run(app: App, plan: Plan, opts: Options, report: Report, *,
        lease: Lease | None = None, progress: OnProgress | None = None) -> Result:
    """Carry out ``plan``, holding the app's Lease throughout.

    A caller that already holds the Lease (the agent) passes it: it is
    checked before each phase of writes, and neither taken nor released
    here. Otherwise the sync takes it, waiting up to ``opts.lock_timeout``.
    ``progress`` is told each round of a wait for health (default: a line
    through ``report`` when what is awaited changes).
    """
    check(app, plan, opts)
    result = Result()
    if opts.dry_run:
        result.unchanged = _unchanged(plan)
        return result
    if not opts.wait and settled(app, plan):  # nothing to write: nothing to wait for
        result.unchanged = _unchanged(plan)
        return result
    if _changes(plan):  # dependsOn holds back changes, not a --wait on what is there
        check_dependencies(app, opts)
    this = _Run(app, plan, opts, report, progress)
    if lease is not None:
        return _run_held(this, lease, result)
    import uuid  # noqa: PLC0415

    from kubectl_gitops.kube.lease import Lease, identity, lease_name  # noqa: PLC0415

    ensure_namespace(app)  # the Lease lives there, and the revision may create it
    own = Lease(app.kube, app.parent.namespace, lease_name(app.parent.name),
                holder=f"{identity('sync')} run={uuid.uuid4().hex[:8]}")
    with own.hold(opts.lock_timeout):
        if own.waited:  # another sync ran meanwhile: plan what is there now
            _replan(app, plan, opts)
            if not opts.wait and settled(app, plan):
                result.unchanged = _unchanged(plan)
                return result
        return _run_held(this, own, result)


def settled(app: App, plan: Plan) -> bool:
    """Whether a sync would write nothing but a repeat of the newest record:
    no object to apply or prune, the parent already lists these members, and
    its newest record is this revision of this path, succeeded. Then sync
    takes no Lease and adds no record (a re-run of a converged sync is a
    read, as the agent's no-change tick is). The plan read everything it
    compares, so a sync still under way elsewhere shows as work to do."""
    if _changes(plan) or not app.src.sha:
        return False
    if not applyset.stored(_widened(app, plan), app.parent_live):
        return False
    last = app.parent.history[0] if app.parent.history else {}
    return (last.get("revision") == app.src.sha and last.get("path") == (app.src.path or ".")
            and last.get("result") == "succeeded")


def _unchanged(plan: Plan) -> int:
    return len([i for i in plan.items if i.action != "prune" and not i.needs_apply])


class _Stale(Exception):
    """The parent changed since the plan read it: another sync ran in between."""


_REPLANS = 5


@dataclass
class _Run:
    """One sync's inputs, as its phases share them."""

    app: App
    plan: Plan
    opts: Options
    report: Report
    progress: OnProgress | None

    def deadline(self) -> float:
        """When waiting stops: the sync's --timeout bounds the whole sync."""
        return min(time.monotonic() + self.opts.timeout,
                   self.app.kube.deadline_at or float("inf"))

    @functools.cached_property
    def checks(self) -> Checks:
        from kubectl_gitops.kube import health  # noqa: PLC0415 - only when waiting

        return health.Checks(self.app.src.health_checks)

    def on_progress(self) -> OnProgress:
        from kubectl_gitops.engine import wait  # noqa: PLC0415

        return self.progress or wait.lines(self.report)


def _run_held(run: _Run, lease: Lease, result: Result) -> Result:
    app, plan, opts = run.app, run.plan, run.opts
    for _ in range(_REPLANS):
        try:
            return _converge(run, lease, result)
        except _Stale:
            lease.check()
            _replan(app, plan, opts)
    from kubectl_gitops.kube.lease import lease_name  # noqa: PLC0415

    raise ClusterError(f"{app.parent.label} kept changing while this sync held the Lease "
                       f"{app.parent.namespace}/{lease_name(app.parent.name)}; another tool "
                       "writes it without the Lease")


def _replan(app: App, plan: Plan, opts: Options) -> None:
    """Plan again from the parent as it is now (under the Lease)."""
    live = app.kube.get(applyset.PARENT_TYPE, app.parent.namespace, app.parent.name)
    parent = applyset.parent_from_live(app.parent.name, app.parent.namespace, live)
    problem = applyset.check_parent(parent, live)
    if problem:
        raise ClusterError(problem)
    app.parent, app.parent_live = parent, live
    fresh = make_plan(app, dataclasses.replace(opts, prune=plan.pruning))
    plan.items[:] = fresh.items
    plan.hooks[:] = fresh.hooks
    plan.parent, plan.parent_live = parent, live
    check(app, plan, opts)


def _converge(run: _Run, lease: Lease, result: Result) -> Result:
    app, plan, opts = run.app, run.plan, run.opts
    kube = app.kube
    writer = _ParentWriter(app, lease)
    # Each object once: what a pass before a re-plan applied is not unchanged now.
    result.unchanged = len([i for i in plan.items if i.action != "prune" and not i.needs_apply
                            and i.id not in result.written])
    result.failures = []  # a pass after a re-plan reports its own
    from kubectl_gitops.engine import history  # noqa: PLC0415

    # Who ran it, asked while the objects are applied rather than after.
    users = started(lambda: (history.git_user(str(app.src.root)), kube.whoami()))
    widened = _widened(app, plan)
    # Hooks go with a change: a sync that writes no member (a commit that
    # changed nothing here, a --wait re-run) runs none.
    hooks = plan.hooks if _changes(plan) else []
    if app.src.health_checks:
        run.checks.compile()  # an expression that does not compile: before any write
    if _of(hooks, order.PRE_SYNC):
        lease.check()
        _hooks(run, order.PRE_SYNC, result)
    pre_sync_failed = not result.ok
    if result.ok:
        if not applyset.stored(widened, app.parent_live):
            lease.check()
            writer.write(widened, lambda h: h)  # nothing to widen otherwise
        _apply_waves(run, lease, result)
    if opts.prune and result.ok:
        lease.check()
        _prune(app, plan, opts, result, run.report)
        if result.ok:  # what prune kept at the last moment stays covered
            ids = [i.id for i in plan.items if i.action != "prune"]
            widened = _parent(app, applyset.group_kinds(ids), namespaces_of(ids))
    if (opts.wait or _of(hooks, order.POST_SYNC)) and result.ok:
        _wait_healthy(run, [i for i in plan.items if i.action != "prune"], "members", result)
    if _of(hooks, order.POST_SYNC) and result.ok:
        lease.check()
        _hooks(run, order.POST_SYNC, result)
    if _of(hooks, order.SYNC_FAIL) and not result.ok:
        lease.check()
        _hooks(run, order.SYNC_FAIL, result)
    git_user, cluster_user = users()
    rec = history.record(revision=app.src.sha, ref=app.src.ref, path=app.src.path,
                         git_user=git_user, cluster_user=cluster_user,
                         result="succeeded" if result.ok else "failed",
                         counts=result.counts(), failures=result.failures)
    lease.check()
    if pre_sync_failed:  # nothing else was written: the record only
        widened = dataclasses.replace(app.parent, source=app.parent.source or app.source)
    writer.write(widened, lambda h: history.appended(h, rec))
    return result


def _apply_waves(run: _Run, lease: Lease, result: Result) -> None:
    """Apply wave by wave. Before a wave with something to write, the waves
    before it must be healthy; a failed wave stops the sync there."""
    app, plan = run.app, run.plan
    members = [i for i in plan.items if i.action != "prune"]
    waves = sorted({i.wave for i in members})
    for n, wave in enumerate(waves):
        todo = [i for i in members if i.wave == wave and i.needs_apply]
        if not todo:
            continue
        if n > 0:
            _wait_healthy(run, [i for i in members if i.wave < wave],
                          f"the waves before wave {wave}", result)
            if not result.ok:
                return
        for phase in (0, 1, 2):
            batch = [i for i in todo if i.phase == phase]
            if batch:
                lease.check()
            _apply(app, batch, run.opts, result, run.report)
            if phase == 0:
                _wait_established(app, batch, result, deadline=time.monotonic() + 60)
        if not result.ok and wave != waves[-1]:
            run.report(f"stopped    wave {wave} failed: later waves are not applied")
            return


def _changes(plan: Plan) -> bool:
    """Whether the sync writes a member (apply or prune)."""
    return bool(plan.of("prune")) or any(i.needs_apply for i in plan.items)


def _of(hooks: list[Hook], phase: str) -> bool:
    return any(phase in h.phases for h in hooks)


def _hooks(run: _Run, phase: str, result: Result) -> None:
    from kubectl_gitops.engine import hooks  # noqa: PLC0415

    result.failures += hooks.run(run.app.kube, run.plan.hooks, phase, deadline=run.deadline(),
                                 timeout=run.opts.timeout, checks=run.checks,
                                 report=run.report, progress=run.on_progress())


def _widened(app: App, plan: Plan) -> applyset.Parent:
    """The parent as it must be before any apply: what it records, widened
    by every object the revision holds."""
    ids = [i.id for i in plan.items if i.action != "prune"]
    return _parent(app, app.parent.group_kinds | applyset.group_kinds(ids),
                   app.parent.namespaces | namespaces_of(ids))


def _parent(app: App, gks: set[str], namespaces: set[str]) -> applyset.Parent:
    """The parent to write: these members, the salt the plan hashed with,
    this sync's source (check_source refused any other), and what status
    reads without the revision (healthCheckExprs, dependsOn)."""
    return dataclasses.replace(app.parent, group_kinds=set(gks),
                               namespaces=set(namespaces) | {app.parent.namespace},
                               source=app.source or app.parent.source,
                               health_checks=app.src.health_checks,
                               depends_on=depends_on(app))


def ensure_namespace(app: App) -> None:
    """Without its own namespace neither the parent nor the Lease can exist;
    the revision may create that namespace, so make sure it is there first
    (a CLI sync before it takes the Lease; the agent, the same way, when the
    app's namespace does not exist yet)."""
    if app.parent.exists:
        return
    ns_type = app.kube.resource_types().get(("", "Namespace"))
    if ns_type and app.kube.get(ns_type, "", app.parent.namespace) is None:
        app.kube.apply(ns_type, {"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": app.parent.namespace}})


def ensure_parent(app: App) -> dict[str, Any]:
    """The app's parent, created without members or history when there is
    none yet: an app that waits for its dependencies (the agent) shows in
    status and ls, with what it waits for."""
    if app.parent_live is not None:
        return app.parent_live
    parent = _parent(app, set(), set())
    try:
        app.parent_live = app.kube.create(applyset.PARENT_TYPE, parent.to_object(history=[]))
    except ClusterError as e:
        if e.status != 409:
            raise
        app.parent_live = app.kube.get(applyset.PARENT_TYPE, parent.namespace, parent.name)
    assert app.parent_live is not None
    return app.parent_live


class _ParentWriter:
    """Writes to the parent carry the resourceVersion last read (optimistic
    concurrency), so no history record and no member kind is ever lost.

    A conflict on a sync's first write means another sync ran since the
    plan read the parent: the plan is stale (:class:`_Stale`, sync plans
    again). A conflict later (a writer without the Lease) re-reads the
    parent and writes the union of both, history appended to the current.
    """

    def __init__(self, app: App, lease: Lease) -> None:
        self.app = app
        self.lease = lease
        self.live = app.parent_live
        self.history = app.parent.history  # as the parent holds it now
        self.written = False

    def write(self, parent: applyset.Parent,
              history_of: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
        kube = self.app.kube
        for _ in range(10):
            hist = history_of(self.history)
            obj = parent.to_object(history=hist)
            try:
                if self.live is None:
                    self.live = kube.create(applyset.PARENT_TYPE, obj)
                else:
                    obj["metadata"]["resourceVersion"] = self.live["metadata"]["resourceVersion"]
                    self.live = kube.apply(applyset.PARENT_TYPE, obj, force=True)
                self.written, self.history = True, hist
                self.app.parent_live = self.live
                return
            except ClusterError as e:
                if e.status != 409:
                    raise
                if not self.written:
                    raise _Stale() from e
            self.lease.check()
            self.live = kube.get(applyset.PARENT_TYPE, parent.namespace, parent.name)
            now = applyset.parent_from_live(parent.name, parent.namespace, self.live)
            parent = dataclasses.replace(parent, group_kinds=parent.group_kinds | now.group_kinds,
                                         namespaces=parent.namespaces | now.namespaces)
            self.history = now.history
        raise ClusterError(f"{parent.label}: changed by another writer on every try; "
                           "sync again")


def _apply(app: App, items: list[Item], opts: Options, result: Result, report: Report) -> None:
    """Apply concurrently, reporting each object as it lands (a killed sync
    shows how far it got)."""
    lock = threading.Lock()

    def one(item: Item) -> None:
        assert item.rtype and item.desired
        try:
            if item.terminating:
                gone = _until_gone(app, item, time.monotonic() + opts.timeout, report, lock)
                if gone:
                    raise ClusterError(gone)
            app.kube.apply(item.rtype, item.desired,
                           force=opts.force_conflicts or bool(item.adopted))
        except ClusterError as e:
            msg = secrets.redact(summarize_conflict(e.message) if isinstance(e, ConflictError)
                                 else e.message, item.desired)
            with lock:
                result.failures.append(f"{item.id}: {msg}")
                report(f"failed     {item.id}: {msg}")
            return
        with lock:
            if result.applied(item):
                report(f"{'created   ' if item.action == 'create' else 'configured'} {item.id}")

    list(app.kube.map(one, items))


def _until_gone(app: App, item: Item, deadline: float, report: Report,
                lock: threading.Lock) -> str:
    """Wait for the object being deleted to go ("" once it has), so that it
    can be created again; else why not, by ``deadline``."""
    assert item.rtype
    with lock:
        report(f"waiting    {item.id}: {item.note}")
    while True:
        live = app.kube.get(item.rtype, item.id.namespace, item.id.name)
        if live is None or live["metadata"].get("uid") != item.terminating:
            return ""
        if time.monotonic() >= min(deadline, app.kube.deadline_at or float("inf")):
            finalizers = ", ".join(live["metadata"].get("finalizers") or []) or "none"
            return (f"still being deleted when the --timeout ran out (finalizers: "
                    f"{finalizers}); not created again: remove what holds it, then sync again")
        time.sleep(0.2)


def _wait_established(app: App, items: list[Item], result: Result, deadline: float) -> None:
    crds = [i for i in items if i.id.kind == "CustomResourceDefinition" and i.rtype]
    if not crds:
        return
    from kubectl_gitops.kube import health  # noqa: PLC0415

    for item in crds:
        assert item.rtype is not None
        while True:
            live = app.kube.get(item.rtype, "", item.id.name)
            if health.check(item.id.group, item.id.kind, live).current:
                break
            if time.monotonic() > deadline:
                result.failures.append(f"{item.id}: not Established after 60 s")
                break
            time.sleep(0.2)
    app.kube.forget_discovery()


def _prune(app: App, plan: Plan, opts: Options, result: Result, report: Report) -> None:
    """Delete what the revision dropped, acting on the cluster as it is now,
    not as the plan saw it: each candidate is read again and kept when it is
    no longer this app's to delete (:func:`prune.recheck`); the guards run
    again on what is there now (the dependents of each, what a Namespace or
    CRD holds); each DELETE carries the uid and resourceVersion just read as
    preconditions, so a change since makes the server refuse it (kept and
    reported). Then reverse apply order: the highest wave first, within it
    namespaced objects first."""
    from kubectl_gitops.engine import prune as prune_guard  # noqa: PLC0415

    kube = app.kube
    candidates = plan.of("prune")
    if not candidates:
        return
    wanted = {i.id for i in plan.items if i.action != "prune"}
    served = kube.resource_types()

    def guard(dependents: bool) -> None:
        before = {id(i) for i in plan.items if i.kept}
        prune_guard.guard(kube, plan.items, app.parent, served, cascade=opts.prune_cascade,
                          dependents=dependents)
        for item in plan.items:
            if item.kept and id(item) not in before:
                report(f"kept       {item.id}: {item.kept}")

    for item in prune_guard.recheck(kube, candidates, app.parent.id, wanted,
                                    None if opts.take_over else app.source):
        report(f"kept       {item.id}: {item.kept}")
    guard(dependents=True)
    steps = [(w, p) for w in sorted({i.wave for i in candidates}, reverse=True) for p in (2, 1, 0)]
    deleted = False
    for wave, phase in steps:
        batch = [i for i in candidates if i.wave == wave and i.phase == phase
                 and i.action == "prune"]
        if phase == 0 and batch and deleted:
            # What a Namespace or CRD holds, once more after the deletes before it.
            guard(dependents=False)
            batch = [i for i in batch if i.action == "prune"]
        for item, (outcome, text) in zip(batch, kube.map(functools.partial(_delete, kube),
                                                          batch)):
            deleted = True
            if outcome == "changed":
                item.action = "unchanged"
                item.kept = item.note = ("kept: it changed between the check and the delete "
                                         "(the server refused the preconditions); sync again "
                                         "to prune it")
                report(f"kept       {item.id}: {item.kept}")
            elif outcome == "failed":
                result.failures.append(text)
                report(f"failed     {text}")
            else:
                result.pruned.append(item)
                report(f"pruned     {item.id}")
                for line in text:
                    report(f"left       {line}")


def _delete(kube: Any, item: Item) -> tuple[str, Any]:
    """Delete one candidate as :func:`prune.recheck` last read it:
    ("pruned", lines on what was left behind), ("changed", []) when the
    preconditions failed, or ("failed", why). With ``item.orphan``, the
    garbage collector deletes nothing with it and the dependents seen to go
    with it are deleted here, one by one."""
    assert item.rtype and item.live
    meta = item.live["metadata"]
    orphan = item.orphan is not None
    try:
        kube.delete(item.rtype, item.id.namespace, item.id.name, uid=meta.get("uid"),
                    resource_version=meta.get("resourceVersion"),
                    propagation="Orphan" if orphan else "Background")
    except ClusterError as e:
        if e.status is None:
            raise  # no answer at all: one error for the run, not one per object
        if e.status == 409:
            return "changed", []
        return "failed", f"{item.id}: prune failed: {secrets.redact(e.message, item.live)}"
    left = []
    for rtype, oid, uid in item.orphan or []:
        try:
            kube.delete(rtype, oid.namespace, oid.name, uid=uid, propagation="Orphan")
        except ClusterError as e:
            if e.status is None:
                raise
            if e.status == 403:
                what = f"{rtype.plural}{'.' + rtype.group if rtype.group else ''}"
                left.append(f"{oid}: made by the controller of {item.id}, orphaned: this "
                            f"user may not delete {what} (the RBAC verb delete on it would "
                            "let sync remove it)")
            elif e.status != 409:  # 409: re-created since (another uid), not the one seen
                return "failed", f"{item.id}: pruned, but not its dependent {oid}: {e.message}"
    return "pruned", left


def wait_healthy(app: App, plan: Plan, opts: Options, report: Report) -> list[str]:
    """Wait until the plan's members are healthy, as ``--wait`` does at the
    end of a sync, without syncing (a fleet's wave that gates the next);
    the failures (empty: all healthy)."""
    result = Result()
    _wait_healthy(_Run(app, plan, opts, report, None),
                  [i for i in plan.items if i.action != "prune"], "members", result)
    return result.failures


def _wait_healthy(run: _Run, items: list[Item], what: str, result: Result) -> None:
    """Wait until ``items`` are healthy; a failed one or the deadline is a failure."""
    from kubectl_gitops.engine import wait  # noqa: PLC0415 - only when waiting

    targets = [wait.Target(str(i.id), i.rtype, i.id.namespace, i.id.name)
               for i in items if i.rtype]
    result.failures += wait.until_healthy(run.app.kube, targets, what=what,
                                          deadline=run.deadline(), timeout=run.opts.timeout,
                                          checks=run.checks, progress=run.on_progress())
