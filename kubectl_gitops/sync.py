"""Converge the cluster to a plan: validate, plan, apply in order, prune last.

Nothing is written when any manifest is invalid, when any object's dry-run
failed, or when ownership checks fail. The ApplySet parent is widened to the
union of old and new members before anything is applied and narrowed only
after a successful prune, so an interrupted sync never loses track of an
object and re-running it converges.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubectl_gitops import applyset, health, history, secrets
from kubectl_gitops.app import App
from kubectl_gitops.errors import ClusterError, ConflictError, GitOpsError
from kubectl_gitops.plan import Item, Plan, namespaces_of, summarize_conflict

Report = Callable[[str], None]


class SyncRefused(GitOpsError):
    """The sync was refused before anything was written."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))

    def lines(self) -> list[str]:
        return self.problems


@dataclass
class Options:
    prune: bool = False
    dry_run: bool = False
    allow_empty: bool = False
    adopt: bool = False
    force_conflicts: bool = True  # git is the source of truth: take drifted fields back
    wait: bool = False
    timeout: float = 300.0


@dataclass
class Result:
    created: list[Item] = field(default_factory=list)
    updated: list[Item] = field(default_factory=list)
    pruned: list[Item] = field(default_factory=list)
    unchanged: int = 0
    failures: list[str] = field(default_factory=list)
    waited: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def counts(self) -> dict[str, int]:
        return {"created": len(self.created), "updated": len(self.updated),
                "pruned": len(self.pruned), "unchanged": self.unchanged,
                "failed": len(self.failures)}


def check(app: App, plan: Plan, opts: Options) -> None:
    """Everything that must hold before the first write; raises with all problems.

    A problem of one object found while planning (the server refuses its
    dry-run, a foreign owner, a conflict under ``--no-force-conflicts``)
    refuses the whole sync, and diff reports the same problem first. Only
    what no dry-run can see (a custom resource of a CRD this sync creates)
    fails at apply time, and then the other objects are still applied."""
    problems: list[str] = []
    if opts.prune and not app.manifests and not opts.allow_empty:
        problems.append(f"the revision holds no objects under {app.src.path or 'the repo root'}; "
                        "refusing to prune everything (pass --allow-empty to do so)")
    problems += foreign_owners(plan, app.parent.id, adopt=opts.adopt)
    problems = plan.problems(force_conflicts=opts.force_conflicts) + problems
    if problems:
        raise SyncRefused(problems)


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
        lease: object | None = None) -> Result:
    check(app, plan, opts)
    result = Result(unchanged=len([i for i in plan.items
                                   if i.action != "prune" and not i.needs_apply]))
    if opts.dry_run:
        return result
    kube = app.kube
    ids = [i.id for i in plan.items if i.action != "prune"]
    widened = _parent(app, app.parent.group_kinds | applyset.group_kinds(ids),
                      app.parent.namespaces | namespaces_of(ids))
    if not (app.parent.exists and widened.group_kinds == app.parent.group_kinds
            and widened.namespaces == app.parent.namespaces):
        _apply_parent(app, widened, app.parent.history)  # nothing to widen otherwise
    for phase in (0, 1, 2):
        batch = [i for i in plan.items if i.needs_apply and i.phase == phase
                 and i.action != "prune"]
        _apply(app, batch, opts, result, report)
        if phase == 0:
            _wait_established(app, batch, result, deadline=time.monotonic() + 60)
    if opts.prune and result.ok:
        _prune(app, plan.of("prune"), result, report)
        if result.ok:
            widened = _parent(app, applyset.group_kinds(ids), namespaces_of(ids))
    if opts.wait and result.ok:
        _wait_healthy(app, plan, opts.timeout, result, report)
    rec = history.record(revision=app.src.sha, ref=app.src.ref, path=app.src.path,
                         git_user=history.git_user(str(app.src.root)),
                         cluster_user=kube.whoami(),
                         result="succeeded" if result.ok else "failed",
                         counts=result.counts(), failures=result.failures)
    _apply_parent(app, widened, history.appended(app.parent.history, rec))
    return result


def _parent(app: App, gks: set[str], namespaces: set[str]) -> applyset.Parent:
    return applyset.Parent(app.parent.name, app.parent.namespace, group_kinds=set(gks),
                           namespaces=set(namespaces) | {app.parent.namespace})


def _apply_parent(app: App, parent: applyset.Parent, hist: list[dict[str, Any]]) -> None:
    # Without its own namespace the parent cannot exist; the revision may
    # create that namespace, so make sure it is there first.
    ns_type = app.kube.resource_types().get(("", "Namespace"))
    if ns_type and not app.parent.exists and app.kube.get(ns_type, "", parent.namespace) is None:
        app.kube.apply(ns_type, {"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": parent.namespace}})
    app.kube.apply(applyset.PARENT_TYPE, parent.to_object(history=hist), force=True)


def _apply(app: App, items: list[Item], opts: Options, result: Result, report: Report) -> None:
    """Apply concurrently, reporting each object as it lands (a killed sync
    shows how far it got)."""
    lock = threading.Lock()

    def one(item: Item) -> None:
        assert item.rtype and item.desired
        try:
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
            (result.created if item.action == "create" else result.updated).append(item)
            report(f"{'created   ' if item.action == 'create' else 'configured'} {item.id}")

    list(app.kube.map(one, items))


def _wait_established(app: App, items: list[Item], result: Result, deadline: float) -> None:
    crds = [i for i in items if i.id.kind == "CustomResourceDefinition" and i.rtype]
    if not crds:
        return
    for item in crds:
        while True:
            live = app.kube.get(item.rtype, "", item.id.name)  # type: ignore[arg-type]
            if live and health.check(live)[0]:
                break
            if time.monotonic() > deadline:
                result.failures.append(f"{item.id}: not Established after 60 s")
                break
            time.sleep(0.2)
    app.kube.forget_discovery()


def _prune(app: App, items: list[Item], result: Result, report: Report) -> None:
    for phase in (2, 1, 0):  # reverse apply order
        batch = [i for i in items if i.phase == phase]

        def one(item: Item) -> str | None:
            assert item.rtype and item.live
            try:
                app.kube.delete(item.rtype, item.id.namespace, item.id.name,
                                uid=item.live["metadata"].get("uid"))
            except ClusterError as e:
                return f"{item.id}: prune failed: {secrets.redact(e.message, item.live)}"
            return None

        for item, failure in zip(batch, app.kube.map(one, batch)):
            if failure:
                result.failures.append(failure)
                report(f"failed     {failure}")
            else:
                result.pruned.append(item)
                report(f"pruned     {item.id}")


def _wait_healthy(app: App, plan: Plan, timeout: float, result: Result, report: Report) -> None:
    # Never past the run's own deadline (sync --timeout bounds the whole sync).
    deadline = min(time.monotonic() + timeout, app.kube.deadline_at or float("inf"))
    pending = [i for i in plan.items if i.action != "prune" and i.rtype]
    last = ""
    while pending:
        still: list[Item] = []
        waiting: list[str] = []
        for item, live in zip(pending, app.kube.map(
                lambda i: app.kube.get(i.rtype, i.id.namespace, i.id.name), pending)):
            try:
                ok, why = health.check(live) if live else (False, "not found")
            except ValueError as e:
                result.failures.append(f"{item.id}: {e}")
                continue
            if not ok:
                still.append(item)
                waiting.append(f"{item.id} ({why})")
        pending = still
        if not pending:
            return
        line = f"waiting for {len(pending)}: " + ", ".join(waiting[:3]) + \
            (" ..." if len(waiting) > 3 else "")
        if line != last:
            report(line)
            last = line
        if time.monotonic() > deadline:
            result.failures.append(f"timed out after {timeout:g} s waiting for: "
                                   + ", ".join(waiting))
            return
        time.sleep(1.0)
