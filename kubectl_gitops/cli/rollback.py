"""``git gitops rollback`` / ``git-gitops-rollback``: restore PATH as a new commit."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from kubectl_gitops import exitcodes
from kubectl_gitops.cli import common
from kubectl_gitops.engine import rollback
from kubectl_gitops.source import tree
from kubectl_gitops.source.tree import Source

if TYPE_CHECKING:
    from kubectl_gitops.kube.kubeconfig import Overrides


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("rev", metavar="[REV]", required=False)
@click.option("--to", "to", metavar="REV", help="Restore PATH as it was at REV (same as the "
                                               "REV argument).")
@click.option("--steps", type=click.IntRange(min=1), metavar="N",
              help="Go N changes of PATH back (default 1; repeated rollbacks step further "
                   "back, like undo).")
@click.option("--last-synced", is_flag=True,
              help="Restore the newest revision the cluster's sync history records as "
                   "synced successfully that differs from HEAD.")
@click.option("--dry-run", is_flag=True, help="Show the files that would change and the "
                                              "diff; commit nothing.")
@click.option("--sync", is_flag=True, help="Sync the new commit to the cluster afterwards.")
@click.option("--prune", is_flag=True, help="With --sync: delete what the restored revision "
                                            "no longer holds.")
@click.option("--push", is_flag=True, help="Push the branch to its upstream afterwards.")
@common.source_options(positional_path=False, ref=False)
@common.cluster_options
@common.handle_errors
def command(rev: str | None, to: str | None, steps: int | None, last_synced: bool,
            dry_run: bool, sync: bool, prune: bool, push: bool, path: str | None,
            repo: str | None, name: str | None, cluster: Overrides,
            namespace: str | None) -> int:
    """Restore the manifests under PATH as they were at REV, as a new commit.

    REV defaults to the state before the newest commit that changed PATH
    (history walked along first parents). Files outside PATH are untouched;
    uncommitted changes under PATH are refused.

    \b
    Exit status: 0 done, 1 nothing to roll back, 2 error.
    """
    target = _check_options(rev, to, steps, last_synced, dry_run, sync, prune, push)
    src = tree.resolve(repo=repo, path=path, name=name)
    synced = functools.partial(_synced, src, name, cluster, namespace) if last_synced else None
    finished = None if dry_run else rollback.finish_interrupted(src.root)
    if finished:
        click.echo(finished)  # that rollback was the one asked for: no second step
        return exitcodes.OK
    try:
        plan = rollback.make_plan(src, rev=target, steps=steps, synced=synced)
    except rollback.NothingToRollBack as e:
        click.echo(str(e), err=True)
        return exitcodes.NOTHING_TO_DO
    if dry_run:
        return _show(plan)
    # Find out before committing whether the steps after it can run at all.
    upstream = rollback.upstream(plan.root, plan.branch) if push else None
    sync_exe = rollback.sync_executable() if sync else None
    sha = rollback.perform(plan)
    click.echo(f"[{plan.branch} {sha[:7]}] {plan.message().splitlines()[0]}")
    for change in plan.changes:
        click.echo(f" {change}")
    if upstream:
        rollback.push(plan.root, plan.branch, upstream)
        click.echo(f"pushed {plan.branch} to {upstream[0]} "
                   f"{upstream[1].removeprefix('refs/heads/')}")
    if sync_exe:
        args = rollback.sync_args(sync_exe, plan, sha, prune=prune, name=name,
                                  cluster=[*cluster.argv(), *(["--namespace", namespace]
                                                              if namespace else [])])
        if rollback.run_sync(args) != exitcodes.OK:
            common.report([f"the rollback is committed as {sha[:7]} but the sync failed; "
                           "fix the cause and run kubectl gitops sync again"])
            return exitcodes.ERROR
    return exitcodes.OK


def _check_options(rev: str | None, to: str | None, steps: int | None, last_synced: bool,
                   dry_run: bool, sync: bool, prune: bool, push: bool) -> str | None:
    """The explicit target, if any; usage errors for options that do not fit."""
    if rev and to and rev != to:
        raise click.UsageError("give the revision either as an argument or as --to, not both")
    target = rev or to
    chosen = [flag for flag, on in (("REV/--to", target), ("--steps", steps),
                                    ("--last-synced", last_synced)) if on]
    if len(chosen) > 1:
        raise click.UsageError(f"{' and '.join(chosen)} exclude each other; choose one target")
    if prune and not sync:
        raise click.UsageError("--prune only applies with --sync")
    if dry_run and (sync or push):
        raise click.UsageError("--dry-run commits nothing, so it cannot --sync or --push")
    return target


def _synced(src: Source, name: str | None, cluster: Overrides,
            namespace: str | None) -> Iterable[str]:
    return rollback.synced_revisions(src, name=name, cluster=cluster, namespace=namespace)


def _show(plan: rollback.Restore) -> int:
    head, target = rollback.describe(plan.root, plan.head), rollback.describe(
        plan.root, plan.target)
    click.echo(f"Would roll back {plan.label}{plan.also()} to {target}, replacing {head}:")
    for change in plan.changes:
        click.echo(f" {change}")
    click.echo()
    click.echo(rollback.diff(plan, color=sys.stdout.isatty()))
    return exitcodes.OK


def main() -> None:
    common.run(command, "git-gitops-rollback")
