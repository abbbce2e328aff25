"""``dependsOn`` in the agent: an app waits (it is not an error) until the
app it depends on is synced at its current revision and healthy, says so
in status, ``ls`` and an Event, and syncs on its own once it is.

No kubelet runs here: the dependency's Deployment becomes healthy when the
test reports its pod ready (testing.kubelet), as a kubelet would. Times are
bounds on waiting, never measurements.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.kubeconfig import Overrides
from testing.agent import AgentProc, events, status, wait_for
from testing.git import commit, make_repo, write
from testing.kube import configmap, deployment, docs, get, gitops, kubectl
from testing.kubelet import run_pods


@pytest.fixture
def env(git_env: dict, kube_env: dict) -> dict:
    return {**kube_env, **{k: v for k, v in git_env.items() if k.startswith("GIT_")}}


def test_the_dependent_app_waits_until_its_dependency_is_healthy(
        tmp_path: Path, env: dict, fresh_namespace: str) -> None:
    infra, ns = f"{fresh_namespace}-infra", fresh_namespace
    manager = make_repo(tmp_path / "cert-manager")
    write(manager, "deploy/all.yaml", docs(deployment("webhook", 1)))
    manager_sha = commit(manager, "cert-manager")
    certs = make_repo(tmp_path / "certs")
    write(certs, "deploy/all.yaml", docs(configmap("issuer")))
    write(certs, ".gitops.yaml", yaml.safe_dump(
        {"dependsOn": [{"name": "cert-manager", "namespace": infra}]}))
    certs_sha = commit(certs, "certs")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(yaml.safe_dump({"apps": [
        {"name": "cert-manager", "repo": f"file://{manager}", "ref": "main",
         "path": "deploy", "namespace": infra, "interval": "2s"},
        {"name": "certs", "repo": f"file://{certs}", "ref": "main", "path": "deploy",
         "namespace": ns, "interval": "2s"}]}))
    a = AgentProc(tmp_path, env, "--config", str(cfg))
    try:
        a.wait_ready()
        wait_for(lambda: status("cert-manager", infra, env).get("revision") == manager_sha,
                 30, "the dependency synced")
        st = wait_for(lambda: (s := status("certs", ns, env)).get("blockedBy") and
                      s["blockedBy"][0].startswith(f"{infra}/cert-manager: Progressing (") and s,
                      30, "the dependent app says what it waits for")
        assert f"(Deployment {infra}/webhook: " in st["blockedBy"][0]
        assert st["sync"] == "OutOfSync" and not st.get("lastError")  # waiting, no error
        reconciling = {c["type"]: c for c in st["conditions"]}["Reconciling"]
        assert (reconciling["status"], reconciling["reason"]) == ("True", "DependencyNotReady")
        assert get("configmap", "issuer", env, ns) is None  # nothing synced
        assert events(ns, env, "DependencyNotReady")
        listed = json.loads(gitops("ls", "-n", ns, "-o", "json", cwd=tmp_path, env=env).stdout)
        assert listed[0]["blockedBy"] == st["blockedBy"]

        run_pods(Kube(Overrides(kubeconfig=env["KUBECONFIG"])), infra, "app=webhook")
        wait_for(lambda: status("certs", ns, env).get("revision") == certs_sha, 30,
                 "the dependent app synced once its dependency is healthy")
        assert get("configmap", "issuer", env, ns) is not None
        assert status("certs", ns, env)["blockedBy"] == []
    finally:
        assert a.stop() == 0, a.text()[-2000:]
        kubectl("delete", "namespace", infra, "--wait=false", env=env, check=False)
