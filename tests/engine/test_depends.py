"""``dependsOn`` between apps, through the CLI: ``kubectl gitops sync``
refuses while an app it depends on is not synced and healthy, naming what
blocks it; ``--ignore-dependencies`` syncs anyway; ``status`` and ``ls``
show what blocks an app. (The agent waits instead: tests/agent.)

No kubelet runs here: the dependency's Deployment becomes healthy when the
test reports its pod ready (testing.kubelet), as a kubelet would.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.kubeconfig import Overrides
from testing.git import commit, make_repo, write
from testing.kube import configmap, deployment, docs, get, gitops
from testing.kubelet import run_pods


def _app(path: Path, text: str, config: dict | None = None) -> Path:
    repo = make_repo(path)
    write(repo, "deploy/all.yaml", text)
    if config:
        write(repo, ".gitops.yaml", yaml.safe_dump(config))
    commit(repo, "app")
    return repo


def _sync(repo: Path, name: str, ns: str, env: dict, *extra: str) \
        -> subprocess.CompletedProcess[str]:
    return gitops("sync", "deploy", "-n", ns, "--name", name, *extra, cwd=repo, env=env)


def test_sync_is_refused_until_the_dependency_is_healthy(
        tmp_path: Path, git_env: dict, kube_env: dict, namespace: str,
        fresh_namespace: str) -> None:
    infra, ns = namespace, fresh_namespace
    manager = _app(tmp_path / "cert-manager", docs(deployment("webhook", 1)))
    certs = _app(tmp_path / "certs", docs(configmap("issuer")),
                 {"dependsOn": [{"name": "cert-manager", "namespace": infra}]})
    r = _sync(certs, "certs", ns, kube_env)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"error: blocked on {infra}/cert-manager: not synced yet; "
                                "pass --ignore-dependencies to sync anyway")

    assert _sync(manager, "cert-manager", infra, kube_env).returncode == 0
    r = _sync(certs, "certs", ns, kube_env)
    assert r.returncode == 2
    assert (f"error: blocked on {infra}/cert-manager: Progressing (Deployment {infra}/webhook: "
            "Progressing: 0 of 1 replica available)") in r.stderr
    assert get("configmap", "issuer", kube_env, ns) is None  # nothing written
    assert get("configmap", "certs", kube_env, ns) is None

    run_pods(Kube(Overrides(kubeconfig=kube_env["KUBECONFIG"])), infra, "app=webhook")
    r = _sync(certs, "certs", ns, kube_env)
    assert r.returncode == 0, r.stderr
    assert get("configmap", "issuer", kube_env, ns) is not None
    st = json.loads(gitops("status", "certs", "-n", ns, "-o", "json", cwd=certs,
                           env=kube_env).stdout)
    assert (st["dependsOn"], st["blockedBy"]) == ([f"{infra}/cert-manager"], [])

    # A new rollout of the dependency (its pod not ready yet) blocks again:
    # status and ls say by what; --ignore-dependencies syncs anyway.
    write(manager, "deploy/all.yaml", docs(deployment("webhook", 1, image="nginx:1.28")))
    commit(manager, "new webhook")
    assert _sync(manager, "cert-manager", infra, kube_env).returncode == 0
    st = json.loads(gitops("status", "certs", "-n", ns, "-o", "json", cwd=certs,
                           env=kube_env).stdout)
    assert st["blockedBy"] and st["blockedBy"][0].startswith(f"{infra}/cert-manager: "
                                                             "Progressing (Deployment ")
    listed = gitops("ls", "-n", ns, cwd=certs, env=kube_env).stdout
    assert f"blocked on {infra}/cert-manager" in listed  # the ERROR column, cut at 80
    [app] = json.loads(gitops("ls", "-n", ns, "-o", "json", cwd=certs, env=kube_env).stdout)
    assert app["blockedBy"] == st["blockedBy"]
    detail = gitops("status", "certs", "-n", ns, cwd=certs, env=kube_env).stdout
    assert f"Depends on:  {infra}/cert-manager" in detail and "  blocked on: " in detail
    write(certs, "deploy/all.yaml", docs(configmap("issuer", {"k": "v2"})))
    commit(certs, "new issuer")
    assert _sync(certs, "certs", ns, kube_env).returncode == 2
    r = _sync(certs, "certs", ns, kube_env, "--ignore-dependencies")
    assert r.returncode == 0, r.stderr
    assert get("configmap", "issuer", kube_env, ns)["data"] == {"k": "v2"}


def test_an_app_depending_on_itself_is_not_blocked(
        tmp_path: Path, git_env: dict, kube_env: dict, namespace: str) -> None:
    """One .gitops.yaml serves every path of a repository: the app it names
    as a dependency is not blocked by itself."""
    repo = _app(tmp_path / "mono", docs(configmap("a")),
                {"dependsOn": [{"name": "infra"}]})
    r = _sync(repo, "infra", namespace, kube_env)
    assert r.returncode == 0, r.stderr
