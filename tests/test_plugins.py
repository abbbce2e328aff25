"""Plugin discovery: the real kubectl and git find our executables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(args: list[str], path: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PATH": path, **env}
    return subprocess.run(args, capture_output=True, text=True, env=full, timeout=60)


def test_kubectl_gitops_help_through_plugin_discovery() -> None:
    path = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    r = _run(["kubectl", "gitops", "--help"], path)
    assert r.returncode == 0, r.stderr
    assert "kubectl gitops diff [PATH]" in r.stdout
    d = _run(["kubectl", "gitops", "diff", "--help"], path)
    assert d.returncode == 0 and "--show-secrets" in d.stdout
    listed = _run(["kubectl", "plugin", "list"], path).stdout
    for exe in ("kubectl-gitops", "kubectl-gitops-diff", "kubectl-gitops-sync"):
        assert f"{BIN}/{exe}" in listed


def test_git_gitops_through_git_dispatch() -> None:
    path = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    r = _run(["git", "gitops", "-h"], path)  # git turns --help into `git help`
    assert r.returncode == 0, r.stderr
    assert "rollback" in r.stdout and "validate" in r.stdout


def test_help_does_not_import_the_kubernetes_client() -> None:
    code = ("import sys; from kubectl_gitops.cli import dispatch, diff, sync; "
            "print('kubernetes' in sys.modules, 'urllib3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"]


def test_shims_in_plugins_dir(tmp_path: Path) -> None:
    # Only the shims and kubectl itself on PATH: no console scripts.
    only = tmp_path / "bin"
    only.mkdir()
    (only / "kubectl").symlink_to(BIN / "kubectl")
    path = os.pathsep.join([str(ROOT / "plugins"), str(only), "/usr/bin", "/bin"])
    r = _run(["kubectl", "gitops", "sync", "--help"], path, KUBECTL_GITOPS_PYTHON=sys.executable)
    assert r.returncode == 0, r.stderr
    assert "--prune" in r.stdout and "kubectl gitops sync" in r.stdout
