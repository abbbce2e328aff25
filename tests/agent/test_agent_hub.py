"""Hub mode: an agent running against one cluster (the suite's) manages an
app in another (``prod-eu`` of ``three_clusters``) through a kubeconfig
Secret, as Flux's ``spec.kubeConfig.secretRef``: the app's objects, Lease,
status and Events live in the remote cluster, and drift there is corrected."""

from __future__ import annotations

import base64
from pathlib import Path

from testing.agent import AgentProc, events, status, wait_for
from testing.fleet import Fleet
from testing.git import commit, make_repo, write
from testing.kube import configmap, docs, get, kubectl


def test_a_hub_agent_syncs_and_heals_an_app_in_a_remote_cluster(
        tmp_path: Path, kube_env: dict[str, str], git_env: dict[str, str], namespace: str,
        fresh_namespace: str, three_clusters: Fleet) -> None:
    hub = {**kube_env, **{k: v for k, v in git_env.items() if k.startswith("GIT_")}}
    remote = {**hub, "KUBECONFIG": str(three_clusters.own["prod-eu"])}
    ns = fresh_namespace
    origin = make_repo(tmp_path / "origin")
    write(origin, "deploy/all.yaml", docs(configmap("settings", {"color": "blue"})))
    sha = commit(origin, "first")
    # The remote cluster's kubeconfig, as a Secret in the hub's own cluster.
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "prod-eu-kubeconfig", "namespace": namespace},
              "data": {"value": base64.b64encode(three_clusters.own["prod-eu"].read_bytes())
                       .decode()}}
    write(tmp_path, "secret.yaml", docs(secret))
    kubectl("apply", "-f", str(tmp_path / "secret.yaml"), env=hub)

    a = AgentProc(tmp_path, hub, "--repo", f"file://{origin}", "--ref", "main", "--path",
                  "deploy", "--name", "app", "-n", ns, "--self-heal", "--heal-backoff", "1s",
                  "--kubeconfig-secret", f"{namespace}/prod-eu-kubeconfig")
    try:
        a.wait_ready()
        wait_for(lambda: status("app", ns, remote).get("revision") == sha
                 and status("app", ns, remote).get("sync") == "Synced", 30,
                 "the app synced in the remote cluster")
        assert (get("configmap", "settings", remote, ns) or {})["data"] == {"color": "blue"}
        assert get("lease", "kubectl-gitops.app", remote, ns) is not None
        assert get("namespace", ns, hub) is None  # nothing of the app in the hub's cluster
        assert events(ns, remote, "Synced")

        kubectl("patch", "configmap", "settings", "-n", ns, "-p", '{"data":{"color":"red"}}',
                env=remote)
        wait_for(lambda: ((get("configmap", "settings", remote, ns) or {}).get("data")
                          == {"color": "blue"}), 20, "the drift corrected in the remote cluster")
        wait_for(lambda: events(ns, remote, "DriftCorrected"), 10, "a DriftCorrected Event")
    finally:
        assert a.stop() == 0, a.text()[-2000:]
