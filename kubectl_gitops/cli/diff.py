"""``kubectl gitops diff``: the git revision against the live cluster."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from kubectl_gitops import exitcodes
from kubectl_gitops.cli.common import (cluster_options, fleet_hint, fleet_options,
                                       handle_errors, parse_timeout, pick_path, run,
                                       source_options)

if TYPE_CHECKING:  # type names only: the modules load lazily, after --help
    from kubectl_gitops.engine.model import Plan
    from kubectl_gitops.kube.kubeconfig import Overrides
    from kubectl_gitops.source.tree import Source


def use_color(no_color: bool) -> bool:
    return not no_color and "NO_COLOR" not in os.environ and sys.stdout.isatty()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@source_options()
@cluster_options
@click.option("--prune", is_flag=True, help="Also list the objects sync --prune would delete.")
@click.option("--prune-cascade", is_flag=True, help="As sync --prune-cascade: show Namespaces, "
              "CRDs and owners pruned with the non-members they hold.")
@click.option("-o", "--output", type=click.Choice(["diff", "table", "json", "markdown"]),
              default="diff", show_default=True, help="Output format (markdown: a "
              "pull-request report, one section per target).")
@click.option("--show-secrets", is_flag=True, help="Show Secret values instead of masking them.")
@click.option("--no-color", is_flag=True, help="Never colour the diff (also: NO_COLOR).")
@click.option("--concurrency", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Requests to the API server at once.")
@click.option("--force-conflicts/--no-force-conflicts", default=None,
              help="Whether sync takes back fields another manager changed (default: yes, "
              "or forceConflicts in .gitops.yaml); with --no-force-conflicts, such objects "
              "are reported as errors, as sync would refuse them.")
@click.option("--adopt", is_flag=True, help="Show objects another ApplySet or tool owns as "
              "sync --adopt would take them over (without it they are errors, as sync "
              "refuses them).")
@click.option("--take-over", is_flag=True, help="Show what sync --take-over does: the app "
              "handed to this source (else another source's app or members are errors, as "
              "sync refuses them).")
@click.option("--timeout", default="5m", show_default=True, callback=parse_timeout,
              help="Give up when the whole diff takes longer (0: no limit).")
@fleet_options()
@handle_errors
def command(path_arg: str | None, path: str | None, repo: str | None, ref: str | None,
            working_tree: bool, name: str | None, cluster: Overrides, namespace: str | None,
            prune: bool, prune_cascade: bool, output: str, show_secrets: bool, no_color: bool,
            concurrency: int, force_conflicts: bool | None, adopt: bool, take_over: bool,
            timeout: float, fleet: bool, targets: tuple[str, ...], selector: str | None,
            max_parallel: int) -> int:
    """Show how the live cluster differs from a git revision.

    With --fleet (or --target, -l): every target of targets: in
    .gitops.yaml against its own cluster, in parallel; each target's diff,
    then one table. -o markdown writes one report for a pull request.

    Exit status: 0 no differences, 1 differences, 2 error (as kubectl diff;
    with a fleet, 2 when any target failed).
    """
    from kubectl_gitops.engine import app as app_mod  # noqa: PLC0415 - keep --help fast
    from kubectl_gitops.engine import diff  # noqa: PLC0415
    from kubectl_gitops.source import tree  # noqa: PLC0415

    src = tree.resolve(repo=repo, path=pick_path(path_arg, path), ref=ref,
                       working_tree=working_tree, name=name, namespace=namespace)
    if fleet or targets or selector or output == "markdown":
        return _fleet(src, cluster, output, fleet, targets, selector, max_parallel,
                      pick_path(path_arg, path), name, namespace, concurrency, timeout,
                      fleet_mod_options(prune, prune_cascade, force_conflicts, adopt,
                                        take_over, show_secrets), use_color(no_color))
    fleet_hint(src)
    kube = app_mod.connect(cluster, concurrency=concurrency, deadline=timeout or None)
    app = app_mod.load(src, kube, name=name, namespace=namespace)
    the_plan, problems = diff.compare(app, prune=prune, cascade=prune_cascade,
                                      force_conflicts=force_conflicts, adopt=adopt,
                                      take_over=take_over)
    if problems:  # what sync would refuse, said first
        for line in problems:
            click.echo(f"error: {line}", err=True)
        return exitcodes.ERROR
    rendered = [diff.render(i, src.revision, show_secrets=show_secrets)
                for i in diff.changed(the_plan)]
    status = exitcodes.DIFFERENT if rendered else exitcodes.OK
    external = os.environ.get("KUBECTL_EXTERNAL_DIFF")
    if output == "json":
        click.echo(json.dumps(diff.document(the_plan, rendered, revision=src.sha or src.revision,
                                            command="diff", dry_run=True), indent=2))
    elif output == "table":
        if rendered:
            click.echo(diff.as_table(rendered))
    elif external:
        rc = diff.external_diff(external, rendered)
        if rc > 1:
            click.echo(f"error: {external} exited with status {rc}", err=True)
            return exitcodes.ERROR
    else:
        color = use_color(no_color)
        for r in rendered:
            if r.item.note:
                click.echo(f"# {r.item.id}: {r.item.note}")
            if r.item.drift:
                click.echo(f"# {r.item.id}: drifted: {', '.join(r.item.drift)}")
            click.echo(diff.colorize(r.text) if color else r.text, nl=False)
    for item in the_plan.items:  # members prune keeps, and why (see kubectl_gitops.engine.prune)
        if item.kept:
            click.echo(f"kept {item.id}: {item.kept}", err=True)
    _summary(the_plan, prune, app.parent_live is not None)
    return status


def fleet_mod_options(prune: bool, prune_cascade: bool, force_conflicts: bool | None,
                      adopt: bool, take_over: bool, show_secrets: bool) -> Any:
    from kubectl_gitops.engine import fleet  # noqa: PLC0415

    return fleet.DiffOptions(prune=prune, prune_cascade=prune_cascade,
                             force_conflicts=force_conflicts, adopt=adopt,
                             take_over=take_over, show_secrets=show_secrets)


def _fleet(src: Source, cluster: Overrides, output: str, every: bool, targets: tuple[str, ...],
           selector: str | None, max_parallel: int, path: str | None, name: str | None,
           namespace: str | None, concurrency: int, timeout: float, opts: Any,
           color: bool) -> int:
    """``diff --fleet``: each target's diff (or one Markdown report), one table."""
    from kubectl_gitops.cli import fleet as fleet_cli  # noqa: PLC0415
    from kubectl_gitops.engine import diff, fleet  # noqa: PLC0415

    if output == "markdown" and not (every or targets or selector):
        raise click.UsageError("-o markdown reports on a fleet: add --fleet, --target or -l")
    setup = fleet_cli.setup(src, cluster, concurrency=concurrency, timeout=timeout or None,
                            path=path, name=name, namespace=namespace)
    results = fleet.run(fleet_cli.choose(setup, targets, selector),
                        fleet.diff_target(setup, opts), revision=src.sha or src.revision,
                        max_parallel=max_parallel)
    if output == "markdown":
        click.echo(fleet_cli.markdown(results, src), nl=False)
        return fleet.exit_status(results)
    if output == "diff":
        for r in results:
            for one in r.rendered:
                click.echo(f"# target {r.target} ({r.context}): {one.item.id}")
                click.echo(diff.colorize(one.text) if color else one.text, nl=False)
    return fleet_cli.finish(results, "diff", src.sha or src.revision, output)


def _summary(the_plan: Plan, prune: bool, has_parent: bool) -> None:
    counts = the_plan.counts()
    line = (f"{counts['create']} to create, {counts['update']} to update, "
            f"{counts['prune']} to delete, {counts['unchanged']} unchanged")
    if prune and not has_parent:
        line += " (no ApplySet in the cluster yet: nothing to prune)"
    click.echo(line, err=True)


def main() -> None:
    run(command, "kubectl gitops diff")
