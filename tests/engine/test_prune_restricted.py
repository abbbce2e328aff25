"""Issue 22: a namespace owner (the built-in ``admin`` ClusterRole bound in
one namespace, what most teams give an app's deployer) prunes, and still
cannot cascade into objects that are not the app's, not even those of types
it may not list.

The user is a real ServiceAccount with a token from the TokenRequest API,
and its own kubeconfig; every command runs as it through kubectl.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from testing.agent import wait_for
from testing.git import make_repo
from testing import apps
from testing.kube import configmap, deployment, docs, get, gone, kubectl

pytestmark = pytest.mark.cluster


def _service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}}


def namespace_owner(tmp_path: Path, kube_env: dict[str, str], ns: str) -> dict[str, str]:
    """The environment of a ServiceAccount bound to ``admin`` in ``ns`` only."""
    kubectl("create", "serviceaccount", "deployer", "-n", ns, env=kube_env)
    kubectl("create", "rolebinding", "deployer", "-n", ns, "--clusterrole=admin",
            f"--serviceaccount={ns}:deployer", env=kube_env)
    token = kubectl("create", "token", "deployer", "-n", ns, "--duration=1h",
                    env=kube_env).stdout.strip()
    config = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json",
                                env=kube_env).stdout)
    context = config["contexts"][0]
    context["context"] = {**context["context"], "user": "deployer", "namespace": ns}
    config["users"] = [{"name": "deployer", "user": {"token": token}}]
    path = tmp_path / "deployer.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return {**kube_env, "KUBECONFIG": str(path)}


def _owned_by(owner: dict[str, Any]) -> list[dict[str, Any]]:
    meta = owner["metadata"]
    return [{"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"],
             "uid": meta["uid"]}]


def test_a_namespace_owner_prunes_and_cannot_cascade_into_foreign_objects(
        tmp_path: Path, git_env: dict, kube_env: dict, namespace: str) -> None:
    owner = namespace_owner(tmp_path, kube_env, namespace)
    denied = kubectl("auth", "can-i", "list", "podtemplates", "-n", namespace, env=owner,
                     check=False)
    assert denied.stdout.strip() == "no"  # what made every candidate kept before
    repo = make_repo(tmp_path / "repo")
    every = [deployment("web"), configmap("cfg"), _service("svc"), configmap("keep"),
             configmap("tied")]
    apps.commit_manifests(repo, docs(*every))
    r = apps.sync(repo, namespace, owner)
    assert r.returncode == 0, r.stderr
    # Objects the app does not own, tied to its members by ownerReferences, made
    # by the cluster's admin: a ConfigMap the owner can see, a PodTemplate it cannot.
    cfg = get("configmap", "cfg", kube_env, namespace)
    tied = get("configmap", "tied", kube_env, namespace)
    foreign = [
        {"apiVersion": "v1", "kind": "PodTemplate",
         "metadata": {"name": "hidden", "namespace": namespace,
                      "ownerReferences": _owned_by(cfg)},
         "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
        {**configmap("theirs"), "metadata": {"name": "theirs", "namespace": namespace,
                                             "ownerReferences": _owned_by(tied)}},
    ]
    (tmp_path / "foreign.yaml").write_text(docs(*foreign))
    kubectl("create", "-f", str(tmp_path / "foreign.yaml"), env=kube_env)

    apps.commit_manifests(repo, docs(configmap("keep")))
    r = apps.sync(repo, namespace, owner)
    assert r.returncode == 0, r.stderr
    assert "deprecated" not in r.stderr  # v1 Endpoints: listed by the tool, not the user
    for what in ("Deployment web", "ConfigMap cfg", "Service svc"):
        kind, name = what.split()
        assert f"pruned     {kind} {namespace}/{name}" in r.stdout, r.stdout + r.stderr
    assert gone("deployment", "web", owner, namespace)
    assert get("service", "svc", owner, namespace) is None
    # Not the foreign ones: the one it can see keeps its owner, and the one it
    # cannot see survives its owner (deleted with propagationPolicy Orphan).
    assert f"kept       ConfigMap {namespace}/tied" in r.stderr + r.stdout
    assert get("configmap", "tied", kube_env, namespace) is not None
    assert get("configmap", "theirs", kube_env, namespace) is not None  # FOREIGN DELETED: 0
    hidden = get("podtemplate", "hidden", kube_env, namespace)
    assert hidden is not None and not hidden["metadata"].get("deletionTimestamp")
    # What the Deployment's controller made went with it, deleted one by one;
    # what the user may not delete is named with the permission that would.
    wait_for(lambda: not kubectl("get", "replicasets,pods", "-n", namespace, "-o", "name",
                                 env=kube_env).stdout.strip(), 30, "the ReplicaSet and Pods gone")
    assert f"left       EndpointSlice {namespace}/svc-" in r.stdout
    assert "the RBAC verb delete on it would let sync remove it" in r.stdout
