"""``kubectl gitops status [NAME]``, ``ls``, ``suspend NAME``, ``resume NAME``:
an app's state read from the cluster alone (no checkout)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from kubectl_gitops import exitcodes
from kubectl_gitops.cli.common import cluster_options, fleet_options, handle_errors, run

if TYPE_CHECKING:
    from kubectl_gitops.kube.client import Kube
    from kubectl_gitops.kube.kubeconfig import Overrides

_CTX = {"help_option_names": ["-h", "--help"]}
# Here -n narrows where to look (cluster_options leaves a command's own -n alone).
_NAMESPACE = click.option("-n", "--namespace", metavar="NS",
                          help="Only this namespace (default: every namespace).")


def _kube(cluster: Overrides) -> Kube:
    from kubectl_gitops.engine import app as app_mod  # noqa: PLC0415

    return app_mod.connect(cluster)


def _find(kube: Kube, name: str, namespace: str | None) -> dict[str, Any]:
    """The parent of app ``name``: in ``namespace``, else the one in any namespace."""
    from kubectl_gitops.engine import status  # noqa: PLC0415
    from kubectl_gitops.errors import ConfigError  # noqa: PLC0415

    found = [p for p in status.list_parents(kube, namespace) if p["metadata"]["name"] == name]
    if not found:
        where = f"namespace {namespace}" if namespace else "any namespace"
        raise ConfigError(f"no application {name} in {where} (kubectl gitops ls lists them)")
    if len(found) > 1:
        spaces = ", ".join(p["metadata"]["namespace"] for p in found)
        raise ConfigError(f"application {name} exists in several namespaces ({spaces}); "
                          "choose one with -n")
    return found[0]


def _rows(apps: list[dict[str, Any]]) -> list[list[str]]:
    return [[a["namespace"], a["name"], str(a["revision"])[:12] or "-",
             a["sync"] + (" (suspended)" if a["suspended"] else ""), a["health"],
             str(a["driftCount"]), a["managedBy"], a["lastSyncTime"] or "-",
             _error(a)] for a in apps]


def _error(a: dict[str, Any]) -> str:
    """``LeaseFailed: cannot take the Lease ...``: why a stalled app is stuck;
    else ``blocked on monitoring/cert-manager: Progressing (...)``."""
    text = f"{a['stalled']}: {a['lastError']}" if a.get("stalled") else a["lastError"] or ""
    if not text and a.get("blockedBy"):
        text = "blocked on " + "; ".join(a["blockedBy"])
    return text[:80]


_HEAD = ["NAMESPACE", "NAME", "REVISION", "SYNC", "HEALTH", "DRIFT", "BY", "LAST SYNC",
         "ERROR"]


def _table(apps: list[dict[str, Any]]) -> None:
    from tabulate import tabulate  # noqa: PLC0415

    click.echo(tabulate(_rows(apps), headers=_HEAD, tablefmt="plain"))


_REPO = click.option("--repo", metavar="DIR", help="With a fleet: the git repository whose "
                     ".gitops.yaml declares the targets (default: the current directory's).")
_REF = click.option("--ref", metavar="REV", help="With a fleet: the revision to compare "
                    "each target with (default: HEAD).")


@click.command(context_settings=_CTX)
@click.argument("name", required=False)
@cluster_options
@_NAMESPACE
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@fleet_options()
@_REPO
@_REF
@handle_errors
def command(name: str | None, cluster: Overrides, namespace: str | None,
            output: str, fleet: bool, targets: tuple[str, ...], selector: str | None,
            max_parallel: int, repo: str | None, ref: str | None) -> int:
    """An app's state: revision synced, Synced/OutOfSync, health, drift, last error.

    Without NAME, every app (as ls). Reads the cluster only. With --fleet
    (or --target, -l): the app of .gitops.yaml on each of its targets, one
    row each, and whether it is at --ref (exit status 2 when a target cannot
    be read).
    """
    from kubectl_gitops.engine import status  # noqa: PLC0415

    if fleet or targets or selector:
        return _fleet(name, cluster, namespace, output, targets, selector, max_parallel,
                      repo, ref)

    kube = _kube(cluster)
    parents = [_find(kube, name, namespace)] if name else status.list_parents(kube, namespace)
    apps = [status.read(kube, p) for p in parents]
    if output == "json":
        click.echo(json.dumps(apps[0] if name else apps, indent=2))
    elif name:
        _detail(apps[0])
    else:
        _table(apps)
    return exitcodes.OK


def _fleet(name: str | None, cluster: Overrides, namespace: str | None, output: str,
           targets: tuple[str, ...], selector: str | None, max_parallel: int,
           repo: str | None, ref: str | None) -> int:
    from kubectl_gitops.cli import fleet as fleet_cli  # noqa: PLC0415
    from kubectl_gitops.engine import fleet  # noqa: PLC0415
    from kubectl_gitops.source import tree  # noqa: PLC0415

    src = tree.resolve(repo=repo, ref=ref, name=name, namespace=namespace)
    setup = fleet_cli.setup(src, cluster, concurrency=16, timeout=None, path=None, name=name,
                            namespace=namespace)
    results = fleet.run(fleet_cli.choose(setup, targets, selector), fleet.status_target(setup),
                        revision=src.sha or src.revision, max_parallel=max_parallel)
    return fleet_cli.finish(results, "status", src.sha or src.revision, output)


def _detail(a: dict[str, Any]) -> None:
    for key, label in (("name", "Name"), ("namespace", "Namespace"), ("managedBy", "Managed by"),
                       ("revision", "Revision"), ("sync", "Sync"), ("health", "Health"),
                       ("suspended", "Suspended"), ("driftCount", "Drift"),
                       ("lastSyncTime", "Last sync"), ("lastResult", "Last result"),
                       ("lastFetchTime", "Last fetch"), ("stalled", "Stalled"),
                       ("lastError", "Last error")):
        click.echo(f"{label + ':':<13}{a.get(key) if a.get(key) not in (None, '') else '-'}")
    if a.get("dependsOn"):
        click.echo(f"{'Depends on:':<13}{', '.join(a['dependsOn'])}")
    for line in a.get("blockedBy") or []:
        click.echo(f"  blocked on: {line}")
    for line in a.get("drift") or []:
        click.echo(f"  drift: {line}")
    for line in a.get("unhealthy") or []:
        click.echo(f"  not healthy: {line}")
    for c in a.get("conditions") or []:
        click.echo(f"  {c['type']}={c['status']} ({c['reason']}) since "
                   f"{c['lastTransitionTime']}")


@click.command(context_settings=_CTX)
@cluster_options
@_NAMESPACE
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@fleet_options()
@click.option("--all-contexts", is_flag=True, help="Every context of the kubeconfig, one "
              "cluster each (no repository needed).")
@_REPO
@_REF
@handle_errors
def ls_command(cluster: Overrides, namespace: str | None, output: str, fleet: bool,
               targets: tuple[str, ...], selector: str | None, max_parallel: int,
               all_contexts: bool, repo: str | None, ref: str | None) -> int:
    """Every app this tool manages, with its state (no member reads: fast).

    With --fleet (or --target, -l): on every target of .gitops.yaml; with
    --all-contexts: on every context of the kubeconfig. A cluster that
    cannot be read is a row with its error (exit status 2).
    """
    from kubectl_gitops.engine import status  # noqa: PLC0415

    if fleet or targets or selector or all_contexts:
        return _ls_fleet(cluster, namespace, output, targets, selector, max_parallel,
                         all_contexts, repo, ref)
    kube = _kube(cluster)
    apps = [status.read(kube, p, with_health=False) for p in status.list_parents(kube, namespace)]
    if output == "json":
        click.echo(json.dumps(apps, indent=2))
    else:
        _table(apps)
    return exitcodes.OK


def _ls_fleet(cluster: Overrides, namespace: str | None, output: str,
              targets: tuple[str, ...], selector: str | None, max_parallel: int,
              all_contexts: bool, repo: str | None, ref: str | None) -> int:
    from tabulate import tabulate  # noqa: PLC0415

    from kubectl_gitops.cli import fleet as fleet_cli  # noqa: PLC0415
    from kubectl_gitops.engine import fleet  # noqa: PLC0415
    from kubectl_gitops.kube import kubeconfig  # noqa: PLC0415
    from kubectl_gitops.source import tree  # noqa: PLC0415

    if all_contexts:
        if cluster.context:
            raise click.UsageError("--all-contexts and --context exclude each other")
        chosen = fleet.of_contexts(kubeconfig.contexts(cluster.kubeconfig))
    else:
        src = tree.resolve(repo=repo, ref=ref)
        chosen = fleet_cli.choose(fleet_cli.setup(src, cluster, concurrency=16, timeout=None,
                                                  path=None, name=None, namespace=None),
                                  targets, selector)
    results = fleet.run(chosen, fleet.ls_target(cluster, namespace), revision="",
                        max_parallel=max_parallel)
    rc = fleet.exit_status(results)
    if output == "json":
        click.echo(json.dumps([{"target": r.target, "context": r.context, "server": r.server,
                                "error": r.error, "apps": r.apps} for r in results],
                              indent=2))
        return rc
    rows = []
    for r in results:
        if r.error:
            rows.append([r.target, "-", "-", "-", "-", "-", "-", "-", "-", r.error])
        rows += [[r.target, *row] for row in _rows(r.apps)]
    click.echo(tabulate(rows, headers=["TARGET", *_HEAD], tablefmt="plain"))
    return rc


def _flip(on: bool) -> click.Command:
    @click.command(context_settings=_CTX)
    @click.argument("name")
    @cluster_options
    @_NAMESPACE
    @handle_errors
    def flip(name: str, cluster: Overrides, namespace: str | None) -> int:
        from kubectl_gitops.engine import status  # noqa: PLC0415

        kube = _kube(cluster)
        parent = _find(kube, name, namespace)
        status.set_suspended(kube, parent["metadata"]["namespace"], name, on)
        click.echo(f"{'suspended' if on else 'resumed'} {name} in namespace "
                   f"{parent['metadata']['namespace']}", err=True)
        return exitcodes.OK

    flip.help = ("Stop the agent syncing and correcting an app (a flag on its parent)."
                 if on else "Let the agent sync and correct an app again.")
    return flip


suspend_command = _flip(True)
resume_command = _flip(False)


def main() -> None:
    run(command, "kubectl gitops status")
