"""Shell completion: through the real kubectl (``kubectl __complete``, which
runs our ``kubectl_complete-gitops*``), through git's own bash completion for
``git gitops``, and values from a kubeconfig, a git repository and the real
control plane."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from testing.git import commit, git, make_repo, write
from testing.kube import configmap, docs, gitops

BIN = Path(sys.executable).parent
GIT_COMPLETION = Path("/usr/share/bash-completion/completions/git")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}/usr/bin{os.pathsep}/bin", **extra}


def kubectl_complete(*words: str, cwd: Path | None = None,
                     env: dict[str, str] | None = None) -> tuple[list[str], int]:
    """``kubectl __complete gitops WORDS``: the values offered and the directive."""
    out = subprocess.run(["kubectl", "__complete", "gitops", *words], capture_output=True,
                         text=True, env=env or _env(), cwd=cwd, timeout=60)
    assert out.returncode == 0, out.stderr
    *lines, directive = out.stdout.splitlines()
    return [line.split("\t")[0] for line in lines], int(directive.lstrip(":"))


def test_subcommands_through_kubectl() -> None:
    values, directive = kubectl_complete("sy")
    assert set(values) == {"sync"}  # kubectl's own entry (from kubectl-gitops-sync) and ours
    assert directive == 4  # no file names
    values, _ = kubectl_complete("")
    for sub in ("diff", "sync", "history", "version", "completion"):
        assert sub in values
    assert "pre" not in values  # no console script of ours is mistaken for a plugin


def test_flags_and_output_formats_through_kubectl() -> None:
    values, _ = kubectl_complete("diff", "--pr")
    assert values == ["--prune", "--prune-cascade"]
    values, _ = kubectl_complete("diff", "-o", "")
    assert values == ["diff", "table", "json", "markdown"]
    values, _ = kubectl_complete("version", "--output=j")
    assert values == ["--output=json"]
    _, directive = kubectl_complete("sync", "")
    assert directive == 16  # [PATH]: directories


def test_contexts_from_the_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncontexts:\n"
        "- {name: prod-eu, context: {cluster: c, user: u}}\n"
        "- {name: prod-us, context: {cluster: c, user: u}}\n"
        "- {name: staging, context: {cluster: c, user: u}}\n")
    values, _ = kubectl_complete("diff", "--context", "prod", env=_env(KUBECONFIG=str(kubeconfig)))
    assert values == ["prod-eu", "prod-us"]
    # --kubeconfig on the command line wins over $KUBECONFIG.
    values, _ = kubectl_complete("sync", "--kubeconfig", str(kubeconfig), "--context", "",
                                 env=_env(KUBECONFIG=str(tmp_path / "none")))
    assert values == ["prod-eu", "prod-us", "staging"]


def test_fleet_targets_from_gitops_yaml(tmp_path: Path, git_env: dict[str, str]) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncontexts:\n"
        "- {name: prod-eu, context: {cluster: c, user: u}}\n"
        "- {name: prod-us, context: {cluster: c, user: u}}\n")
    repo = make_repo(tmp_path / "repo")
    write(repo, ".gitops.yaml", "targets:\n- {name: staging, context: kind-staging}\n"
                                "- {contextPattern: 'prod-*'}\n")
    values, _ = kubectl_complete("sync", "--target", "", cwd=repo,
                                 env={**git_env, **_env(KUBECONFIG=str(kubeconfig))})
    assert values == ["staging", "prod-eu", "prod-us"]


def test_refs_from_the_repository(tmp_path: Path, git_env: dict[str, str]) -> None:
    repo = make_repo(tmp_path / "repo")
    write(repo, "a.yaml", "x: 1\n")
    commit(repo, "first")
    git(repo, "branch", "release-1")
    git(repo, "tag", "v1.0.0")
    values, _ = kubectl_complete("diff", "--ref", "", cwd=repo, env={**git_env, **_env()})
    assert values == ["HEAD", "main", "release-1", "v1.0.0"]
    values, _ = kubectl_complete("diff", f"--repo={repo}", "--ref", "v",
                                 env={**git_env, **_env()})
    assert values == ["v1.0.0"]


def test_names_from_the_applysets_in_the_cluster(tmp_path: Path, git_env: dict[str, str],
                                                 kube_env: dict[str, str],
                                                 namespace: str) -> None:
    repo = make_repo(tmp_path / "repo")
    names = ("shop-frontend", "shop-backend")
    for name in names:
        write(repo, f"{name}/cm.yaml", docs(configmap(f"{name}-settings")))
    commit(repo, "manifests")
    for name in names:
        out = gitops("sync", name, "-n", namespace, "--name", name, cwd=repo, env=kube_env)
        assert out.returncode == 0, out.stderr
    # A ConfigMap that is an ApplySet parent of another tool is not one of ours.
    subprocess.run(["kubectl", "create", "configmap", "shop-other", "-n", namespace],
                   env=kube_env, check=True, capture_output=True)
    subprocess.run(["kubectl", "label", "configmap", "shop-other", "-n", namespace,
                    "applyset.kubernetes.io/id=applyset-x-v1"], env=kube_env, check=True,
                   capture_output=True)
    values, _ = kubectl_complete("history", "-n", namespace, "--name", "shop", env=kube_env)
    assert values == ["shop-backend", "shop-frontend"]
    values, _ = kubectl_complete("diff", "-n", namespace[:-3], env=kube_env)
    assert namespace in values


def test_an_unreachable_cluster_offers_nothing_quickly(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dead\n"
        "clusters: [{name: dead, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: dead, context: {cluster: dead, user: u}}]\n")
    values, directive = kubectl_complete("history", "--name", "",
                                         env=_env(KUBECONFIG=str(kubeconfig)))
    assert values == [] and directive == 4


def _bash(script: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                         env=env or _env(), cwd=cwd, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


# Simulates a TAB press: COMP_* as bash sets them, then the registered function.
_PRESS = """
press() {
    COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()
    local fn; fn=$(complete -p "$1" | sed -E 's/.* -F ([^ ]+) .*/\\1/')
    "$fn" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    printf '[%s]' "${COMPREPLY[@]}"; echo
}
"""


def test_git_gitops_through_gits_own_bash_completion() -> None:
    out = _bash(f"source {GIT_COMPLETION}\nsource <(kubectl gitops completion bash)\n"
                f"{_PRESS}\npress git gitops ''\npress git gitops ins\n"
                "press git gitops rollback --to\npress git gitops validate -o ''\n")
    assert out.splitlines() == ["[rollback ][validate ][install-hooks ]", "[install-hooks ]",
                                "[--to ][--token ]", "[text ][json ]"]


def test_the_executables_complete_directly() -> None:
    out = _bash(f"source <(kubectl gitops completion bash)\n{_PRESS}\n"
                "press kubectl-gitops sy\npress git-gitops validate --sta\n")
    assert out.splitlines() == ["[sync]", "[--staged]"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_call_the_complete_entry(shell: str) -> None:
    out = subprocess.run(["kubectl", "gitops", "completion", shell], capture_output=True,
                         text=True, env=_env())
    assert out.returncode == 0, out.stderr
    assert "__complete" in out.stdout and "git-gitops" in out.stdout
    if shell == "bash":
        assert subprocess.run(["bash", "-n"], input=out.stdout, text=True).returncode == 0


def test_the_readme_bash_snippet_completes_kubectl_gitops_and_git_gitops() -> None:
    """The README's ~/.bashrc lines, as written, then TAB presses: kubectl's
    own completion reaching kubectl_complete-gitops, and git's reaching
    _git_gitops (git's completion is what bash-completion would have loaded)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n### Shell completion\n", 1)[1].split("\n#", 1)[0]
    (snippet,) = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    out = _bash(f"source {GIT_COMPLETION}\n{snippet}\n{_PRESS}\n"
                "press kubectl gitops sy\npress kubectl gitops diff -o ''\n"
                "press git gitops ro\n")
    kubectl_sync, kubectl_output, git_rollback = out.splitlines()
    assert "[sync" in kubectl_sync and "[diff" not in kubectl_sync
    assert {"[diff]", "[table]", "[json]"} <= set(re.findall(r"\[\w+\]", kubectl_output))
    assert git_rollback == "[rollback ]"
