"""``kubectl gitops version``: what is installed, and what the cluster runs.

As ``kubectl version``: the client side always answers; the server's version
comes from one ``GET /version`` when a cluster is reachable, and an
unreachable one is a note, not a failure (exit status 0).
"""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from typing import TYPE_CHECKING, Any

import click

from kubectl_gitops import __version__, exitcodes
from kubectl_gitops.cli.common import cluster_options, handle_errors, run
from kubectl_gitops.errors import GitOpsError
from kubectl_gitops.versions import KUBERNETES_VERSION

if TYPE_CHECKING:
    from kubectl_gitops.kube.kubeconfig import Overrides

# A version request should not hang a shell prompt on a dead cluster.
SERVER_TIMEOUT = 5.0


@click.command("version", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--client", "client_only", is_flag=True,
              help="Only the local versions; do not contact the cluster.")
@cluster_options
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@handle_errors
def command(client_only: bool, cluster: Overrides, namespace: str | None, output: str) -> int:
    """Show the tool, git, Python, schema and server versions."""
    info = client_versions()
    if not client_only:
        info.update(server_version(cluster))
    click.echo(json.dumps(info, indent=2) if output == "json" else render(info))
    return exitcodes.OK


def client_versions() -> dict[str, Any]:
    return {
        "version": __version__,
        "gitVersion": _git_version(),
        "pythonVersion": platform.python_version(),
        "schemas": _schemas(),
    }


def server_version(cluster: Overrides) -> dict[str, Any]:
    """``serverVersion`` (the API server's /version document), or ``serverError``."""
    from kubectl_gitops.kube.client import Kube  # noqa: PLC0415 - the client only when asked

    try:
        kube = Kube(cluster, timeout=SERVER_TIMEOUT)
        return {"serverVersion": kube.request("GET", "/version")}
    except GitOpsError as e:
        return {"serverError": str(e)}


def _git_version() -> str | None:
    try:
        out = subprocess.run(["git", "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip().removeprefix("git version ")


def _schemas() -> dict[str, Any]:
    from kubectl_gitops.kube import schema  # noqa: PLC0415

    try:
        package = metadata.version("kubernetes-validate")
    except metadata.PackageNotFoundError:
        package = None
    try:
        release = schema.schema_dir(KUBERNETES_VERSION)[0]
    except GitOpsError:
        release = None
    return {"kubernetesVersion": KUBERNETES_VERSION, "release": release,
            "kubernetesValidate": package}


def render(info: dict[str, Any]) -> str:
    s = info["schemas"]
    schemas = f"{s['release'] or 'none'} (default --kubernetes-version {s['kubernetesVersion']}" \
              f", kubernetes-validate {s['kubernetesValidate'] or 'not installed'})"
    lines = [f"Version: v{info['version']}",
             f"Git Version: {info['gitVersion'] or 'git not found'}",
             f"Python Version: {info['pythonVersion']}",
             f"Schemas Version: {schemas}"]
    if "serverVersion" in info:
        lines.append(f"Server Version: {info['serverVersion'].get('gitVersion', '?')}")
    elif "serverError" in info:
        lines.append(f"Server Version: unknown ({info['serverError']})")
    return "\n".join(lines)


def main() -> None:
    run(command, "kubectl gitops version")
