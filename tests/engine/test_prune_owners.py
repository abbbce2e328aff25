"""Prune never lets the garbage collector take a non-member (issue 13's
contract, for ``metadata.ownerReferences``).

Against the real control plane with kube-controller-manager running, so a
deleted owner really loses its dependents (its garbage collector, Deployment
and Job controllers are the real ones). The unit tests at the end pin the
rule that tells a controller's children from foreign dependents.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubectl_gitops.engine import prune
from testing import apps
from testing.git import commit, make_repo, write
from testing.kube import configmap, docs, get, gitops, gone, kubectl

# Upstream examples, as in the Kubernetes documentation
# (https://k8s.io/examples/controllers/nginx-deployment.yaml, .../controllers/job.yaml,
# and the ClusterRole "secret-reader" from the RBAC page).
NGINX_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
        # What `helm template` output carries in pod templates: copied onto
        # the ReplicaSets and Pods, it is not another tool's claim there.
        app.kubernetes.io/managed-by: Helm
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
"""
PI_JOB = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: pi
spec:
  template:
    spec:
      containers:
      - name: pi
        image: perl:5.34.0
        command: ["perl",  "-Mbignum=bpi", "-wle", "print bpi(2000)"]
      restartPolicy: Never
  backoffLimit: 4
"""
SECRET_READER = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {name}
rules:
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "watch", "list"]
"""


def _owned_by(obj: dict[str, Any]) -> list[dict[str, Any]]:
    meta = obj["metadata"]
    return [{"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"],
             "uid": meta["uid"]}]


def _create(env: dict, tmp: Path, text: str, *args: str) -> None:
    """``kubectl create`` (or ``apply ARGS``) of a manifest, as a person would."""
    path = tmp / f"obj-{time.monotonic_ns()}.yaml"
    path.write_text(text)
    kubectl(*(args or ("create",)), "-f", str(path), env=env)


def _eventually(what: str, check: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what}: not after {seconds:g} s"
        time.sleep(0.3)


def _names(kind: str, ns: str, env: dict, selector: str) -> list[str]:
    out = kubectl("get", kind, "-n", ns, "-l", selector, "-o", "json", env=env).stdout
    return [o["metadata"]["name"] for o in json.loads(out)["items"]
            if not o["metadata"].get("deletionTimestamp")]


def test_foreign_dependents_keep_their_owner(tmp_path: Path, git_env: dict, kube_env: dict,
                                             namespace: str) -> None:
    repo = make_repo(tmp_path / "repo")
    apps.commit_manifests(repo, docs(configmap("owner"), configmap("stays")))
    assert apps.sync(repo, namespace, kube_env).returncode == 0
    owner = get("configmap", "owner", kube_env, namespace)
    assert owner
    # Another app's ConfigMap that names ours as its owner...
    other = make_repo(tmp_path / "other")
    write(other, "deploy/all.yaml", docs(configmap("theirs", ownerReferences=_owned_by(owner))))
    commit(other)
    assert apps.sync(other, namespace, kube_env, name="neighbour").returncode == 0
    # ...and a user's Job (the docs' pi example) tied to it by hand.
    job = yaml.safe_load(PI_JOB)
    job["metadata"]["ownerReferences"] = _owned_by(owner)
    _create(kube_env, tmp_path, json.dumps(job), "create", "-n", namespace)
    foreign = [("configmap", "theirs"), ("job", "pi")]

    apps.commit_manifests(repo, docs(configmap("stays")))  # our ConfigMap leaves git
    diff = gitops("diff", "deploy", "-n", namespace, "--name", "app", "--prune", cwd=repo,
                  env=kube_env)
    assert diff.returncode == 0, diff.stderr  # nothing will change: the owner is kept
    kept = (f"kept ConfigMap {namespace}/owner: kept: deleting it would also delete "
            f"ConfigMap {namespace}/theirs (ApplySet applyset-")
    assert kept in diff.stderr, diff.stderr
    assert f"Job {namespace}/pi (written by kubectl-create)" in diff.stderr
    assert "pass --prune-cascade to delete them with it" in diff.stderr

    r = apps.sync(repo, namespace, kube_env, "-o", "json")
    assert r.returncode == 0, r.stderr
    items = {i["name"]: i for i in json.loads(r.stdout)["items"]}
    assert items["owner"]["action"] == "unchanged" and "theirs" in items["owner"]["kept"]
    assert not [i for i in items.values() if i["action"] == "prune"]
    time.sleep(2)  # time enough for the garbage collector, had anything gone
    assert [f for f in foreign if gone(*f, kube_env, namespace)] == []  # FOREIGN DELETED: 0
    assert not gone("configmap", "owner", kube_env, namespace)

    # --prune-cascade is the explicit override: the plan names what goes,
    # and the garbage collector takes it.
    diff = gitops("diff", "deploy", "-n", namespace, "--name", "app", "--prune",
                  "--prune-cascade", cwd=repo, env=kube_env)
    assert f"# ConfigMap {namespace}/owner: --prune-cascade: also deletes" in diff.stdout
    r = apps.sync(repo, namespace, kube_env, "--prune-cascade")
    assert r.returncode == 0, r.stderr
    assert f"pruned     ConfigMap {namespace}/owner" in r.stdout
    assert f"cascade    ConfigMap {namespace}/owner: --prune-cascade: also deletes" in r.stderr
    for kind, name in foreign:
        _eventually(f"{kind} {name} collected", lambda: gone(kind, name, kube_env, namespace))


def test_a_deployment_takes_its_replicasets_and_pods(tmp_path: Path, git_env: dict,
                                                     kube_env: dict, namespace: str) -> None:
    repo = make_repo(tmp_path / "repo")
    apps.commit_manifests(repo, NGINX_DEPLOYMENT + "---\n" + docs(configmap("stays")))
    assert apps.sync(repo, namespace, kube_env).returncode == 0
    _eventually("the Deployment's Pods", lambda: len(_names("pods", namespace, kube_env,
                                                            "app=nginx")) == 3)
    assert len(_names("replicasets", namespace, kube_env, "app=nginx")) == 1

    apps.commit_manifests(repo, docs(configmap("stays")))
    r = apps.sync(repo, namespace, kube_env)
    assert r.returncode == 0, r.stderr
    assert f"pruned     Deployment {namespace}/nginx-deployment" in r.stdout
    assert "kept" not in r.stderr and "cascade" not in r.stderr
    # The garbage collector really takes the controller's children.
    _eventually("ReplicaSets collected",
                lambda: _names("replicasets", namespace, kube_env, "app=nginx") == [])
    _eventually("Pods collected", lambda: _names("pods", namespace, kube_env, "app=nginx") == [])


# The Service example of the Kubernetes documentation (concepts/services-networking).
MY_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app.kubernetes.io/name: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
"""


def test_a_service_takes_its_endpointslices(tmp_path: Path, git_env: dict, kube_env: dict,
                                            namespace: str) -> None:
    # The EndpointSlice controller copies the Service's labels, our part-of
    # label among them, onto the slices it makes: that is no claim of
    # theirs, so the Service is pruned and its slices go with it.
    repo = make_repo(tmp_path / "repo")
    apps.commit_manifests(repo, MY_SERVICE + "---\n" + docs(configmap("stays")))
    assert apps.sync(repo, namespace, kube_env).returncode == 0
    slices = lambda: _names("endpointslices", namespace, kube_env,  # noqa: E731
                            "kubernetes.io/service-name=my-service")
    _eventually("the Service's EndpointSlice", lambda: len(slices()) == 1)

    apps.commit_manifests(repo, docs(configmap("stays")))
    r = apps.sync(repo, namespace, kube_env)
    assert r.returncode == 0, r.stderr
    assert f"pruned     Service {namespace}/my-service" in r.stdout
    assert "kept" not in r.stderr and "cascade" not in r.stderr
    _eventually("EndpointSlices collected", lambda: slices() == [])


def test_a_cluster_scoped_owner_of_a_namespaced_object_elsewhere(
        tmp_path: Path, git_env: dict, kube_env: dict, namespace: str) -> None:
    role = f"{namespace}-secret-reader"  # cluster-scoped: unique to this test
    elsewhere = f"{namespace}-else"
    kubectl("create", "namespace", elsewhere, env=kube_env)
    repo = make_repo(tmp_path / "repo")
    try:
        apps.commit_manifests(repo, SECRET_READER.format(name=role) + "---\n" + docs(configmap("stays")))
        assert apps.sync(repo, namespace, kube_env).returncode == 0
        live = get("clusterrole", role, kube_env)
        assert live
        # Someone ties a ConfigMap in another namespace to our ClusterRole
        # (server-side apply with kubectl's default field manager).
        theirs = configmap("notes", namespace=elsewhere, ownerReferences=_owned_by(live))
        _create(kube_env, tmp_path, json.dumps(theirs), "apply", "--server-side")

        apps.commit_manifests(repo, docs(configmap("stays")))
        r = apps.sync(repo, namespace, kube_env)
        assert r.returncode == 0, r.stderr
        assert (f"kept       ClusterRole {role}: kept: deleting it would also delete "
                f"ConfigMap {elsewhere}/notes (written by kubectl)") in r.stderr, r.stderr
        time.sleep(2)
        assert not gone("configmap", "notes", kube_env, elsewhere)  # FOREIGN DELETED: 0
        assert not gone("clusterrole", role, kube_env)

        # Once the dependent is gone, the ClusterRole is pruned as usual.
        kubectl("delete", "configmap", "notes", "-n", elsewhere, env=kube_env)
        r = apps.sync(repo, namespace, kube_env)
        assert r.returncode == 0, r.stderr
        assert f"pruned     ClusterRole {role}" in r.stdout
    finally:
        kubectl("delete", "clusterrole", role, "--ignore-not-found", env=kube_env, check=False)
        kubectl("delete", "namespace", elsewhere, "--wait=false", env=kube_env, check=False)


REQUEST = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) https?://[^/\s]+(\S+) \d{3}", re.M)


def _requests(stderr: str) -> list[str]:
    return [f"{m[1]} {m[2].split('?')[0]}" for m in REQUEST.finditer(stderr)]


def test_no_request_for_dependents_when_nothing_is_pruned(tmp_path: Path, git_env: dict,
                                                          kube_env: dict,
                                                          namespace: str) -> None:
    repo = make_repo(tmp_path / "repo")
    apps.commit_manifests(repo, docs(configmap("a"), configmap("b")))
    assert apps.sync(repo, namespace, kube_env).returncode == 0
    foreign_lists = re.compile(r"^GET \S*/(replicasets|pods|secrets|jobs|serviceaccounts)$")

    same = apps.sync(repo, namespace, kube_env, "-v", "6")  # the no-change path
    assert same.returncode == 0, same.stderr
    requests = _requests(same.stderr)
    assert requests, same.stderr  # -v 6 really logs each request
    assert [q for q in requests if foreign_lists.match(q)] == []
    diff = gitops("diff", "deploy", "-n", namespace, "--name", "app", "--prune", "-v", "6",
                  cwd=repo, env=kube_env)
    assert [q for q in _requests(diff.stderr) if foreign_lists.match(q)] == []

    # Pruning one ConfigMap is what pays for the listing (metadata only, per type).
    apps.commit_manifests(repo, docs(configmap("a")))
    pruning = apps.sync(repo, namespace, kube_env, "-v", "6")
    assert pruning.returncode == 0, pruning.stderr
    listed = [q for q in _requests(pruning.stderr) if foreign_lists.match(q)]
    assert f"GET /apis/apps/v1/namespaces/{namespace}/replicasets" in listed
    # Each type listed twice: for the plan, and again right before the delete
    # (a dependent may have arrived since the plan).
    assert sorted(listed) == sorted(q for q in set(listed) for _ in (0, 1))
    assert not [q for q in _requests(pruning.stderr) if q.startswith("GET /api/v1/pods")]


# The rule itself, without a cluster.

def _meta(managers: tuple[str, ...] = ("kube-controller-manager",), **labels: str) \
        -> dict[str, Any]:
    return {"name": "x", "labels": labels,
            "managedFields": [{"manager": m, "operation": "Update"} for m in managers]}


CONTROLLER_REF = {"uid": "u", "controller": True}


@pytest.mark.parametrize(("meta", "ref", "why"), [
    (_meta(), CONTROLLER_REF, ""),  # a ReplicaSet the Deployment controller made
    (_meta(("kube-controller-manager", "kubelet", "kubectl-label")), CONTROLLER_REF, ""),
    (_meta(), {"uid": "u"}, ""),  # a StatefulSet's PVC: only Kubernetes wrote it
    (_meta(("my-operator",)), {"uid": "u"}, "a plain ownerReference, not a controller's"),
    (_meta(("kubectl-create",)), CONTROLLER_REF, "written by kubectl-create"),
    (_meta(("kustomize-controller",)), CONTROLLER_REF, "written by kustomize-controller"),
    (_meta(**{"kapp.k14s.io/app": "123"}), CONTROLLER_REF, "kapp.k14s.io/app=123"),
    (_meta(**{"applyset.kubernetes.io/part-of": "applyset-x-v1"}), CONTROLLER_REF,
     "ApplySet applyset-x-v1"),
    (_meta(**{"app.kubernetes.io/managed-by": "Helm"}), CONTROLLER_REF, ""),  # templated
    (_meta(**{"argocd.argoproj.io/instance": "shop"}), CONTROLLER_REF,
     "argocd.argoproj.io/instance=shop"),
    # an EndpointSlice: the controller copied its Service's (our member's) labels
    (_meta(**{"applyset.kubernetes.io/part-of": "applyset-ours-v1"}), CONTROLLER_REF, ""),
    (_meta(**{"team": "web"}), CONTROLLER_REF, ""),
])
def test_foreign_rule(meta: dict[str, Any], ref: dict[str, Any], why: str) -> None:
    owner = {"metadata": {"labels": {"applyset.kubernetes.io/part-of": "applyset-ours-v1",
                                     "team": "web"}},
             "spec": {"template": {"metadata": {"labels": {
                 "app.kubernetes.io/managed-by": "Helm"}}}}}
    assert prune.foreign(meta, ref, prune.inherited_marks(owner), False) == why


def test_only_dependents_the_collector_would_delete_count() -> None:
    from kubectl_gitops.engine.model import Item
    from kubectl_gitops.kube.resources import ObjectId, ResourceType

    cm = ResourceType("", "ConfigMap", True, "configmaps", "v1", ("list",))
    shared = {"name": "shared", "namespace": "n", "uid": "d", "managedFields": [],
              "ownerReferences": [{"uid": "ours"}, {"uid": "stays"}]}  # another owner stays
    lone = {**shared, "name": "lone", "uid": "e", "ownerReferences": [{"uid": "ours"}]}
    going = {**lone, "name": "going", "uid": "f", "deletionTimestamp": "2026-01-01T00:00:00Z"}
    elsewhere = {**lone, "name": "elsewhere", "namespace": "m", "uid": "g"}  # cross-namespace
    results: dict[Any, Any] = {(cm, ""): [shared, lone, going, elsewhere,
                                          {"name": "keeper", "namespace": "n", "uid": "stays"}]}
    root = Item(ObjectId("", "ConfigMap", "n", "ours"), "prune", cm,
                live={"metadata": {"uid": "ours"}})
    found, going = prune._Graph(results).foreign_dependents(root, {root.id}, set(), {"ours"})
    assert going == []
    assert found == ["ConfigMap n/lone (a plain ownerReference, not a controller's)"]
