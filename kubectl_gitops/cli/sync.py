"""``kubectl gitops sync``: converge the cluster to a git revision."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from kubectl_gitops import exitcodes
from kubectl_gitops.cli.common import (cluster_options, fleet_hint, fleet_options,
                                       handle_errors, parse_timeout, pick_path, run,
                                       source_options)

if TYPE_CHECKING:  # type names only: the modules load lazily, after --help
    from kubectl_gitops.engine.model import Plan
    from kubectl_gitops.engine.wait import Progress
    from kubectl_gitops.engine.sync import Result
    from kubectl_gitops.kube.kubeconfig import Overrides
    from kubectl_gitops.source.tree import Source


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@source_options()
@cluster_options
@click.option("--prune", is_flag=True, help="Delete members of this ApplySet that the "
              "revision no longer holds.")
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
@click.option("--force-conflicts/--no-force-conflicts", default=None,
              help="Take back fields git declares that another field manager changed "
              "(drift), the default; --no-force-conflicts refuses the sync instead "
              "(also: forceConflicts: false in .gitops.yaml).")
@click.option("--allow-empty", is_flag=True, help="Allow --prune with a revision that holds "
              "no objects (deletes every member).")
@click.option("--adopt", is_flag=True, help="Take over objects that belong to another "
              "ApplySet or deployment tool.")
@click.option("--wait", is_flag=True, help="Wait until every member is healthy (kstatus, "
              "healthCheckExprs); fail at once when one fails, naming why.")
@click.option("--ignore-dependencies", is_flag=True, help="Sync although an app of dependsOn "
              "(.gitops.yaml) is not synced and healthy.")
@click.option("--timeout", default="5m", show_default=True, callback=parse_timeout,
              help="Give up when the whole "
              "sync, --wait included, takes longer (0: no limit).")
@click.option("--prune-cascade", is_flag=True, help="Prune Namespaces, CRDs and owners even "
              "when that deletes objects that are not members (named in the plan).")
@click.option("--take-over", is_flag=True, help="Hand the app to this source (repo, path): "
              "sync and prune although the ApplySet and its members record another source, "
              "and record this one.")
@click.option("--lock-timeout", default="60s", show_default=True, callback=parse_timeout,
              help="How long to wait for another sync of this app to finish.")
@click.option("--concurrency", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Requests to the API server at once.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@fleet_options(waves=True)
@handle_errors
def command(path_arg: str | None, path: str | None, repo: str | None, ref: str | None,
            working_tree: bool, name: str | None, cluster: Overrides, namespace: str | None,
            prune: bool, dry_run: bool, force_conflicts: bool | None,
            allow_empty: bool, adopt: bool, wait: bool, ignore_dependencies: bool,
            timeout: float, prune_cascade: bool, take_over: bool, lock_timeout: float,
            concurrency: int, output: str, fleet: bool, targets: tuple[str, ...],
            selector: str | None, max_parallel: int, continue_on_error: bool) -> int:
    """Converge the cluster to a git revision.

    With --fleet (or --target, -l): every target of targets: in
    .gitops.yaml, each in its own cluster, in parallel and wave by wave (a
    wave starts once every target of the one before synced and is healthy);
    one table, one exit status.

    Exit status: 0 converged, 2 error (any target failed). Nothing is
    written when any manifest is invalid.
    """
    from kubectl_gitops.engine import app as app_mod  # noqa: PLC0415 - keep --help fast
    from kubectl_gitops.engine import sync  # noqa: PLC0415
    from kubectl_gitops.source import tree  # noqa: PLC0415

    src = tree.resolve(repo=repo, path=pick_path(path_arg, path), ref=ref,
                       working_tree=working_tree, name=name, namespace=namespace)
    opts = sync.options_for(src, force_conflicts=force_conflicts, prune=prune,
                            dry_run=dry_run, allow_empty=allow_empty, adopt=adopt, wait=wait,
                            timeout=timeout or float("inf"), take_over=take_over,
                            prune_cascade=prune_cascade, lock_timeout=lock_timeout,
                            ignore_dependencies=ignore_dependencies)
    if fleet or targets or selector:
        from kubectl_gitops.cli import fleet as fleet_cli  # noqa: PLC0415
        from kubectl_gitops.engine import fleet as fleet_mod  # noqa: PLC0415

        setup = fleet_cli.setup(src, cluster, concurrency=concurrency, timeout=timeout or None,
                                path=pick_path(path_arg, path), name=name, namespace=namespace)
        chosen = fleet_cli.choose(setup, targets, selector)
        lines = fleet_cli.Lines(output == "json")
        results = fleet_mod.run(chosen, fleet_mod.sync_target(setup, opts, lines),
                                revision=src.sha or src.revision, max_parallel=max_parallel,
                                staged=True, continue_on_error=continue_on_error,
                                on_wave=lines.wave)
        return fleet_cli.finish(results, "sync", src.sha or src.revision, output)
    fleet_hint(src)
    kube = app_mod.connect(cluster, concurrency=concurrency, deadline=timeout or None)
    app = app_mod.load(src, kube, name=name, namespace=namespace)
    the_plan = sync.make_plan(app, opts)
    quiet = output == "json"
    term = None if quiet or not sys.stderr.isatty() else _Terminal()
    report = (lambda _line: None) if quiet else term.line if term else click.echo
    _print_kept(the_plan, quiet)
    if dry_run:
        sync.check(app, the_plan, opts)
        _print_plan(the_plan, quiet)
    result = sync.run(app, the_plan, opts, report, progress=term.progress if term else None)
    if term:
        term.done()
    if quiet:
        click.echo(json.dumps(_as_json(src, the_plan, result, dry_run), indent=2))
    else:
        _summary(src, result, dry_run, the_plan)
    return exitcodes.OK if result.ok else exitcodes.ERROR


def _print_kept(the_plan: Plan, quiet: bool) -> None:
    """Members the revision dropped that prune keeps, and why; and what a
    --prune-cascade deletes along with a Namespace, CRD or owner."""
    for item in the_plan.items:
        if not quiet and (item.kept or item.note.startswith("--prune-cascade")):
            click.echo(f"{'kept' if item.kept else 'cascade':<10} {item.id}: {item.note}",
                       err=True)


def _print_plan(the_plan: Plan, quiet: bool) -> None:
    if quiet:
        return
    for hook in the_plan.hooks:
        click.echo(f"would run {', '.join(hook.phases)} hook {hook}")
    for item in the_plan.items:
        if item.action != "unchanged":
            drift = f"  (drifted: {', '.join(item.drift)})" if item.drift else ""
            click.echo(f"would {item.action:<7} {item.id}{drift}")


class _Terminal:
    """A sync on a terminal: its lines as they come, and one status line
    (rewritten in place, on stderr) while it waits for health."""

    def __init__(self) -> None:
        self.shown = False

    def _clear(self) -> None:
        if self.shown:
            click.echo("\r\033[K", nl=False, err=True)
            self.shown = False

    def line(self, text: str) -> None:
        self._clear()
        click.echo(text)

    def progress(self, p: Progress) -> None:
        import shutil  # noqa: PLC0415

        self._clear()
        if p.ready == p.total:
            return
        text = f"waiting for {p.what}: {p.ready}/{p.total} ready"
        if p.waiting:
            text += f"; {p.waiting[0]}" + (f" (+{len(p.waiting) - 1} more)"
                                          if len(p.waiting) > 1 else "")
        width = shutil.get_terminal_size().columns - 1
        click.echo(text[:width], nl=False, err=True)
        self.shown = True

    def done(self) -> None:
        self._clear()


def _summary(src: Source, result: Result, dry_run: bool, the_plan: Plan) -> None:
    c = result.counts()
    rev = src.revision
    if dry_run:
        p = the_plan.counts()
        click.echo(f"dry run of {rev}: {p['create']} to create, {p['update']} to update, "
                   f"{p['prune']} to prune, {p['unchanged']} unchanged; nothing written",
                   err=True)
        return
    click.echo(f"synced {rev}: {c['created']} created, {c['updated']} updated, "
               f"{c['pruned']} pruned, {c['unchanged']} unchanged, {c['failed']} failed",
               err=True)
    for failure in result.failures:
        click.echo(f"error: {failure}", err=True)


def _as_json(src: Source, the_plan: Plan, result: Result, dry_run: bool) -> dict[str, object]:
    """The shape diff -o json has too (see diff.document)."""
    from kubectl_gitops.engine import diff  # noqa: PLC0415

    rendered = [diff.render(i, src.revision) for i in diff.changed(the_plan)]
    done = None if dry_run else {"counts": result.counts(), "failures": result.failures,
                                 "result": "succeeded" if result.ok else "failed"}
    return diff.document(the_plan, rendered, revision=src.sha or src.revision, command="sync",
                         dry_run=dry_run, result=done)


def main() -> None:
    run(command, "kubectl gitops sync")
