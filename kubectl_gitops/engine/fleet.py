"""A fleet: one revision to many clusters (``targets:`` in ``.gitops.yaml``).

Targets are chosen (``--fleet``, ``--target``, ``-l``), patterns expanded
against the kubeconfig's contexts, and each target runs the very calls a
single-cluster ``diff``/``sync``/``status`` makes, with a connection of its
own (its context), so its Lease, history and ApplySet live in its own
cluster. Targets run in parallel, bounded; sync goes wave by wave (targets'
``wave``), and a wave starts only when every target of the one before
synced and became healthy. A target that fails is one line in its row; the
others go on (a later wave does not start unless ``continue_on_error``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubectl_gitops import exitcodes
from kubectl_gitops.errors import ConfigError, GitOpsError, UsageError
from kubectl_gitops.source.config import CONFIG_FILE, Target

if TYPE_CHECKING:
    from kubectl_gitops.engine.app import App
    from kubectl_gitops.engine.diff import Rendered
    from kubectl_gitops.engine.model import Plan
    from kubectl_gitops.engine.sync import Options
    from kubectl_gitops.kube.client import Kube
    from kubectl_gitops.kube.kubeconfig import Overrides
    from kubectl_gitops.source.tree import Source

Report = Callable[[str, str], None]  # (target, line)

SUCCEEDED, FAILED, SKIPPED = "succeeded", "failed", "skipped"
IN_SYNC, DIFFERS = "in sync", "differs"


@dataclass
class TargetResult:
    """One target's row: where it ran, what it did, how it ended."""

    target: str
    context: str
    wave: int = 0
    server: str = ""
    namespace: str = ""
    app: str = ""
    path: str = ""
    revision: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    health: str = ""
    result: str = ""
    seconds: float = 0.0
    error: str = ""
    document: dict[str, Any] | None = None  # the single-cluster -o json shape
    rendered: list[Rendered] = field(default_factory=list, repr=False)  # diff
    status: dict[str, Any] | None = None  # status: the app's state
    apps: list[dict[str, Any]] = field(default_factory=list)  # ls: every app there

    @property
    def ok(self) -> bool:
        return self.result not in (FAILED, SKIPPED)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target": self.target, "context": self.context, "server": self.server,
            "wave": self.wave, "namespace": self.namespace, "name": self.app,
            "path": self.path, "revision": self.revision, "counts": self.counts,
            "health": self.health, "result": self.result, "seconds": round(self.seconds, 3),
            "error": self.error}
        if self.document is not None:
            out["items"] = self.document.get("items", [])
            out["failures"] = self.document.get("failures", [])
        if self.status is not None:
            out["status"] = self.status
        if self.apps:
            out["apps"] = self.apps
        return out


# --- choosing targets --------------------------------------------------------------


def expand(targets: Iterable[Target], contexts: list[str]) -> list[Target]:
    """Every target with a context: pattern entries become one target per
    matching context (a context an explicit entry names is left to that
    entry); names stay unique."""
    targets = list(targets)
    named = {t.context for t in targets if t.context}
    out: list[Target] = []
    seen: dict[str, str] = {}
    for t in targets:
        if t.context:
            found = [t.expand(t.context)]
        else:
            assert t.context_pattern
            found = [t.expand(c) for c in contexts
                     if fnmatch.fnmatchcase(c, t.context_pattern) and c not in named]
        for one in found:
            if one.name in seen:
                raise ConfigError(f"{t.where}: target {one.name} is also {seen[one.name]}")
            seen[one.name] = t.where
            out.append(one)
    return out


_REQ = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9_.-]*))?\s*$")


def selector(text: str) -> Callable[[dict[str, str]], bool]:
    """A label selector as kubectl's ``-l`` reads it (equality forms):
    ``env=prod,tier!=edge,canary,!legacy``; every requirement must hold."""
    reqs: list[tuple[bool, str, str | None, str]] = []
    for part in text.split(","):
        m = _REQ.match(part)
        if not m or (m.group(1) and m.group(3)):
            raise UsageError(f"-l {text}: cannot read {part.strip()!r} (use key=value, "
                             "key!=value, key or !key, separated by commas)")
        reqs.append((bool(m.group(1)), m.group(2), m.group(3), m.group(4) or ""))

    def match(labels: dict[str, str]) -> bool:
        for negated, key, op, value in reqs:
            if op is None:
                ok = (key in labels) != negated
            elif op == "!=":
                ok = labels.get(key) != value
            else:
                ok = labels.get(key) == value
            if not ok:
                return False
        return True

    return match


def select(src: Source, contexts: list[str], *, names: tuple[str, ...] = (),
           label_selector: str | None = None) -> list[Target]:
    """The targets of ``src`` a run is for: every one (``--fleet``), those
    named (``--target``), those whose labels match (``-l``), or both."""
    if not src.targets:
        raise ConfigError(f"{CONFIG_FILE} declares no targets: (see \"Fleets\" in the "
                          "README); without them, use --context")
    every = expand(src.targets, contexts)
    if not every:
        raise ConfigError(f"no target: the contextPattern entries of {CONFIG_FILE} match no "
                          "context of the kubeconfig")
    known = {t.name for t in every}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"no target named {', '.join(unknown)} in {CONFIG_FILE} (targets: "
                         f"{', '.join(sorted(known))})")
    chosen = [t for t in every if not names or t.name in names]
    if label_selector:
        match = selector(label_selector)
        chosen = [t for t in chosen if match(dict(t.labels))]
        if not chosen:
            raise UsageError(f"no target matches -l {label_selector}")
    return chosen


# --- running -------------------------------------------------------------------------


Work = Callable[[Target, bool, TargetResult], None]


def run(targets: list[Target], work: Work, *, revision: str, max_parallel: int,
        staged: bool = False, continue_on_error: bool = False,
        on_wave: Callable[[int, list[str]], None] | None = None) -> list[TargetResult]:
    """``work`` for each target, ``max_parallel`` at a time, results in the
    targets' order. ``staged``: wave by wave, each wave started once the one
    before ended; a failed target skips every later wave unless
    ``continue_on_error``. ``work`` fills in the target's row; it gets
    whether its wave gates a later one (it must then end healthy, not
    merely synced). ``on_wave`` is told each wave as it starts (when there
    are several)."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    results: dict[str, TargetResult] = {}
    waves = sorted({t.wave for t in targets}) if staged else [None]
    pool = ThreadPoolExecutor(max_workers=max(1, max_parallel), thread_name_prefix="target")
    try:
        for n, wave in enumerate(waves):
            batch = [t for t in targets if wave is None or t.wave == wave]
            gate = staged and n < len(waves) - 1
            if on_wave and wave is not None and len(waves) > 1:
                on_wave(wave, [t.name for t in batch])
            for t, r in zip(batch, pool.map(lambda t: _guarded(work, t, gate, revision), batch)):
                results[t.name] = r
            failed = [results[t.name] for t in batch if not results[t.name].ok]
            if failed and staged and not continue_on_error and n < len(waves) - 1:
                first = failed[0]
                why = f"skipped: wave {wave} failed at target {first.target}: {first.error}"
                for t in targets:
                    if t.wave > wave:  # type: ignore[operator]
                        results[t.name] = TargetResult(t.name, t.context or "", wave=t.wave,
                                                       revision=revision, result=SKIPPED,
                                                       error=why)
                break
    except BaseException:
        # Ctrl-C: no target starts any more; those under way finish their
        # writes (each bounded by its --timeout), as the agent's on SIGTERM.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return [results[t.name] for t in targets]


def _guarded(work: Work, t: Target, gate: bool, revision: str) -> TargetResult:
    """One target's run; whatever goes wrong there is its row's one line."""
    started = time.monotonic()
    r = TargetResult(t.name, t.context or "", wave=t.wave, revision=revision)
    try:
        work(t, gate, r)
    except GitOpsError as e:
        r.result, r.error = FAILED, "; ".join(e.lines())
    except Exception as e:  # noqa: BLE001 - one target's bug must not take the fleet down
        r.result, r.error = FAILED, f"internal error: {type(e).__name__}: {e}"
    r.seconds = time.monotonic() - started
    return r


def exit_status(results: list[TargetResult]) -> int:
    """0 all converged (or, for diff, no differences), 1 differences (diff),
    2 any target failed or skipped."""
    if any(not r.ok for r in results):
        return exitcodes.ERROR
    if any(r.result == DIFFERS for r in results):
        return exitcodes.DIFFERENT
    return exitcodes.OK


# --- one target ------------------------------------------------------------------------


def connect(cluster: Overrides, t: Target, *, concurrency: int = 16,
            deadline: float | None = None) -> Kube:
    """The connection kubectl would make with these flags and the target's context."""
    from kubectl_gitops.engine import app as app_mod  # noqa: PLC0415

    return app_mod.connect(dataclasses.replace(cluster, context=t.context),
                           concurrency=concurrency, deadline=deadline)


def of_contexts(contexts: list[str]) -> list[Target]:
    """Every context as a target of its own name (``ls --all-contexts``)."""
    return [Target(name=c, where=f"context {c}", context=c) for c in contexts]


@dataclass
class Setup:
    """What every target of one run shares: the revision read once, the
    connection flags (each target's context replaces ``--context``), and
    the CLI's ``--path``/``--name``/``-n``, which win over a target's."""

    src: Source
    cluster: Overrides
    concurrency: int = 16
    timeout: float | None = None
    path: str | None = None
    name: str | None = None
    namespace: str | None = None

    def source(self, t: Target) -> Source:
        return self.src.for_target(None if self.path else t.path,
                                   None if self.name else t.app,
                                   None if self.namespace else t.namespace)

    def connect(self, t: Target) -> Kube:
        return connect(self.cluster, t, concurrency=self.concurrency, deadline=self.timeout)

    def load(self, t: Target, kube: Kube, r: TargetResult) -> App:
        from kubectl_gitops.engine import app as app_mod  # noqa: PLC0415

        src = self.source(t)
        r.server, r.path = kube.info.server, src.path or "."
        app = app_mod.load(src, kube, name=self.name, namespace=self.namespace)
        r.namespace, r.app = app.parent.namespace, app.parent.name
        return app


def health_in(app: App, plan: Plan) -> str:
    """The members' health from what the plan read of them (no request):
    what a diff, or a sync that wrote nothing, finds live."""
    from kubectl_gitops.kube import health  # noqa: PLC0415

    checks = health.Checks(app.src.health_checks)
    shown = [health.check(i.id.group, i.id.kind, i.live, checks=checks,
                          status_subresource=i.rtype.status_subresource).shown
             for i in plan.items if i.live is not None and i.rtype and i.action != "prune"]
    return health.worst(shown) if shown else "-"


def health_of(app: App) -> str:
    """The members' health as the cluster holds them now (one LIST per type)."""
    if app.parent_live is None:
        return "-"
    from kubectl_gitops.engine import applyset, status  # noqa: PLC0415

    parent = applyset.parent_from_live(app.parent.name, app.parent.namespace, app.parent_live)
    return status.members_health(app.kube, parent)[0]




def sync_target(setup: Setup, opts: Options, report: Report) -> Work:
    """The work of ``sync --fleet`` for one target: the calls ``sync`` makes."""
    from kubectl_gitops.engine import diff, sync  # noqa: PLC0415

    def work(t: Target, gate: bool, r: TargetResult) -> None:
        kube = setup.connect(t)
        try:
            app = setup.load(t, kube, r)
            plan = sync.make_plan(app, opts)
            result = sync.run(app, plan, opts, lambda line: report(t.name, line))
            waited = opts.wait or (gate and not opts.dry_run)
            if gate and result.ok and not opts.wait and not opts.dry_run:
                # A wave gates the next: healthy, not merely synced (a wait
                # alone, so a converged target still writes nothing).
                result.failures += sync.wait_healthy(app, plan, opts,
                                                     lambda line: report(t.name, line))
            r.counts = result.counts()
            r.result = SUCCEEDED if result.ok else FAILED
            r.error = "; ".join(result.failures)
            wrote = bool(result.created or result.updated or result.pruned)
            r.health = "Healthy" if waited and result.ok else \
                health_of(app) if wrote else health_in(app, plan)
            if opts.dry_run:
                r.result = "dry run"
                p = plan.counts()
                r.counts = {"created": p["create"], "updated": p["update"],
                            "pruned": p["prune"], "unchanged": p["unchanged"], "failed": 0}
            done = None if opts.dry_run else {"counts": r.counts, "failures": result.failures,
                                              "result": r.result}
            r.document = diff.document(plan, [], revision=r.revision, command="sync",
                                       dry_run=opts.dry_run, result=done)
        finally:
            kube.close()

    return work


@dataclass
class DiffOptions:
    prune: bool = False
    prune_cascade: bool = False
    force_conflicts: bool | None = None
    adopt: bool = False
    take_over: bool = False
    show_secrets: bool = False


def diff_target(setup: Setup, o: DiffOptions) -> Work:
    """The work of ``diff --fleet`` for one target: the calls ``diff`` makes."""
    from kubectl_gitops.engine import diff  # noqa: PLC0415

    def work(t: Target, _gate: bool, r: TargetResult) -> None:
        kube = setup.connect(t)
        try:
            app = setup.load(t, kube, r)
            plan, problems = diff.compare(app, prune=o.prune, cascade=o.prune_cascade,
                                          force_conflicts=o.force_conflicts, adopt=o.adopt,
                                          take_over=o.take_over)
            if problems:
                r.result, r.error = FAILED, "; ".join(problems)
                return
            r.rendered = [diff.render(i, app.src.revision, show_secrets=o.show_secrets)
                          for i in diff.changed(plan)]
            p = plan.counts()
            r.counts = {"create": p["create"], "update": p["update"], "prune": p["prune"],
                        "unchanged": p["unchanged"]}
            r.result = DIFFERS if r.rendered else IN_SYNC
            r.health = health_in(app, plan)
            r.document = diff.document(plan, r.rendered, revision=r.revision,
                                       command="diff", dry_run=True)
        finally:
            kube.close()

    return work


def status_target(setup: Setup) -> Work:
    """The work of ``status --fleet`` for one target: the app's state read
    from its cluster (no plan)."""
    from kubectl_gitops.engine import app as app_mod  # noqa: PLC0415
    from kubectl_gitops.engine import applyset, desired, status  # noqa: PLC0415

    def work(t: Target, _gate: bool, r: TargetResult) -> None:
        kube = setup.connect(t)
        try:
            src = setup.source(t)
            ns = desired.default_namespace(src, setup.namespace, kube)
            name = app_mod.name_in_cluster(src, kube, setup.name, ns)
            r.server, r.namespace, r.app, r.path = kube.info.server, ns, name, src.path or "."
            live = kube.get(applyset.PARENT_TYPE, ns, name)
            if live is None:
                r.result, r.health, r.error = "not synced", "-", \
                    f"no application {name} in namespace {ns}"
                r.status = {}
                return
            st = status.read(kube, live)
            r.status, r.health = st, st["health"]
            at = str(st["revision"])
            r.result = "at revision" if at == src.sha else \
                (f"at {at[:7]}" if at else "not synced")
            if st.get("lastResult") == FAILED or st.get("stalled"):
                r.error = str(st.get("lastError") or st.get("stalled"))
        finally:
            kube.close()

    return work


def ls_target(cluster: Overrides, namespace: str | None) -> Work:
    """The work of ``ls --fleet``/``--all-contexts`` for one cluster: every
    app this tool manages there (no member reads, as ``ls``)."""
    from kubectl_gitops.engine import status  # noqa: PLC0415

    def work(t: Target, _gate: bool, r: TargetResult) -> None:
        kube = connect(cluster, t)
        try:
            r.server = kube.info.server
            r.apps = [status.read(kube, p, with_health=False)
                      for p in status.list_parents(kube, namespace)]
            r.result = SUCCEEDED
        finally:
            kube.close()

    return work
