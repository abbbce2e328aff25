"""``kubectl gitops history``: the sync records kept in the cluster."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from kubectl_gitops import exitcodes
from kubectl_gitops.cli.common import cluster_options, handle_errors, run

if TYPE_CHECKING:  # the loader is imported only once a cluster is needed
    from kubectl_gitops.kube.kubeconfig import Overrides


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--repo", metavar="DIR", help="The git repository (for the default --name).")
@click.option("--name", metavar="NAME", help="Application / ApplySet name.")
@cluster_options
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@handle_errors
def command(repo: str | None, name: str | None, cluster: Overrides, namespace: str | None,
            output: str) -> int:
    """Show the sync records kept in the cluster for an application."""
    from kubectl_gitops.engine import app as app_mod  # noqa: PLC0415
    from kubectl_gitops.engine import desired, history  # noqa: PLC0415
    from kubectl_gitops.source import tree  # noqa: PLC0415

    src = tree.resolve(repo=repo, name=name, namespace=namespace)
    kube = app_mod.connect(cluster)
    ns = desired.default_namespace(src, namespace, kube)
    app = app_mod.name_in_cluster(src, kube, name, ns)
    records = history.records(kube, app, ns)
    if output == "json":
        click.echo(json.dumps(records, indent=2))
        return exitcodes.OK
    if not records:
        click.echo(f"no sync records for {app} in namespace {ns}", err=True)
        return exitcodes.OK
    from tabulate import tabulate  # noqa: PLC0415

    rows = [(r.get("time", ""), r.get("revision", "")[:7], r.get("ref", ""), r.get("path", ""),
             r.get("result", ""), _counts(r.get("counts") or {}), r.get("gitUser", ""),
             r.get("clusterUser", "")) for r in records]
    click.echo(tabulate(rows, headers=["TIME", "REVISION", "REF", "PATH", "RESULT",
                                       "CHANGES", "GIT USER", "CLUSTER USER"],
                        tablefmt="plain"))
    return exitcodes.OK


def _counts(c: dict[str, int]) -> str:
    return (f"+{c.get('created', 0)} ~{c.get('updated', 0)} -{c.get('pruned', 0)} "
            f"={c.get('unchanged', 0)}" + (f" !{c['failed']}" if c.get("failed") else ""))


def main() -> None:
    run(command, "kubectl gitops history")
