"""``kubectl gitops version`` through kubectl's plugin discovery."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from kubectl_gitops import __version__
from kubectl_gitops.versions import KUBERNETES_VERSION

BIN = Path(sys.executable).parent


def _version(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "gitops", "version", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_client_versions_as_json(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "KUBECONFIG": str(tmp_path / "none")}
    out = _version("--client", "-o", "json", env=env)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout
    assert info["version"] == __version__
    assert git.strip() == f"git version {info['gitVersion']}"
    assert info["pythonVersion"] == platform.python_version()
    assert info["schemas"]["kubernetesVersion"] == KUBERNETES_VERSION
    assert info["schemas"]["release"] == ".".join(KUBERNETES_VERSION.split(".")[:2])
    assert "serverVersion" not in info and "serverError" not in info


def test_an_unreachable_server_is_a_note_not_a_failure(tmp_path: Path) -> None:
    # A real listening socket that is closed again: connection refused.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dead\n"
        "clusters: [{name: dead, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: dead, context: {cluster: dead, user: u}}]\n")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "KUBECONFIG": str(kubeconfig)}
    out = _version(env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"Version: v{__version__}"
    assert lines[-1].startswith("Server Version: unknown (cannot reach the cluster at "
                                "https://127.0.0.1:1")


@pytest.mark.usefixtures("control_plane")
def test_server_version_from_the_real_control_plane(kube_env: dict[str, str]) -> None:
    out = _version("-o", "json", env=kube_env)
    assert out.returncode == 0, out.stderr
    server = json.loads(out.stdout)["serverVersion"]
    assert server["gitVersion"] == f"v{KUBERNETES_VERSION}"
    text = _version(env=kube_env)
    assert text.stdout.splitlines()[-1] == f"Server Version: v{KUBERNETES_VERSION}"
