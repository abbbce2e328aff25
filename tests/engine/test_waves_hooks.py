"""Waves and hooks: ``kubectl gitops sync`` of a tree written for Argo CD.

No kubelet runs here: a background stand-in (testing.kubelet.Kubelet)
reports each pod as it appears, and while it does, looks at what exists at
that moment. That is how the order is checked: nothing else exists when the
PreSync hook's pod starts; the next wave does not exist while the
Deployment of the wave before it has no ready pod. The real Job, ReplicaSet
and Deployment controllers do the rest.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kubectl_gitops.engine.applyset import GROUP_KINDS_ANNOTATION, PART_OF_LABEL
from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.kubeconfig import Overrides
from testing.git import commit, make_repo, write
from testing.kube import configmap, deployment, docs, get, gitops, kubectl
from testing.kubelet import Kubelet

ARGO_HOOK = "argocd.argoproj.io/hook"
ARGO_WAVE = "argocd.argoproj.io/sync-wave"
ARGO_POLICY = "argocd.argoproj.io/hook-delete-policy"


@pytest.fixture
def kube(kube_env: dict) -> Kube:
    return Kube(Overrides(kubeconfig=kube_env["KUBECONFIG"]))


def _sync(tmp_path: Path, ns: str, env: dict, text: str, *extra: str) \
        -> subprocess.CompletedProcess[str]:
    repo = tmp_path / "repo"
    if not repo.exists():
        make_repo(repo)
    write(repo, "deploy/all.yaml", text)
    commit(repo, "manifests")
    return gitops("sync", "deploy", "-n", ns, "--name", "app", "--timeout", "2m", *extra,
                  cwd=repo, env=env)


def _job(annotations: dict[str, str], *, name: str = "", generate: str = "") \
        -> dict[str, Any]:
    meta: dict[str, Any] = {"annotations": annotations}
    meta.update({"name": name} if name else {"generateName": generate})
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "registry.invalid/tool:1"}]}}}}


def _with(obj: dict[str, Any], **annotations: str) -> dict[str, Any]:
    obj["metadata"].setdefault("annotations", {}).update(annotations)
    return obj


def _exists(kube: Kube, ns: str, *what: tuple[str, str, str]) -> list[str]:
    types = kube.resource_types()
    return [f"{kind} {name}" for group, kind, name in what
            if kube.get(types[(group, kind)], ns, name) is not None]


def _order(out: str, *lines: str) -> list[int]:
    """Where each line starts in ``out``; fails naming one that is missing."""
    at = []
    for line in lines:
        assert line in out, f"{line!r} not in:\n{out}"
        at.append(out.index(line))
    return at


def test_an_argo_cd_tree_syncs_hook_first_then_wave_by_wave(
        tmp_path: Path, kube: Kube, kube_env: dict, git_env: dict, namespace: str) -> None:
    ns = namespace
    tree = docs(
        _job({ARGO_HOOK: "PreSync", ARGO_POLICY: "HookSucceeded"}, generate="migrate-"),
        _with(configmap("db-config"), **{ARGO_WAVE: "-1"}),
        _with(deployment("web", 1), **{ARGO_WAVE: "0"}),
        _with(configmap("after-web"), **{ARGO_WAVE: "1"}),
        _job({ARGO_HOOK: "PostSync"}, name="smoke"))
    members = (("", "ConfigMap", "db-config"), ("apps", "Deployment", "web"),
               ("", "ConfigMap", "after-web"))
    seen: dict[str, list[str]] = {}

    def kubelet(pod: dict[str, Any]) -> str:
        labels = pod["metadata"].get("labels") or {}
        job = labels.get("job-name", "")
        if job.startswith("migrate-"):
            seen["PreSync"] = _exists(kube, ns, *members)
            return "Succeeded"
        if labels.get("app") == "web":
            seen["web"] = _exists(kube, ns, *members)
            return "Running"
        if job == "smoke":
            seen["PostSync"] = _exists(kube, ns, *members)
            return "Succeeded"
        return ""

    with Kubelet(kube, ns, kubelet):
        r = _sync(tmp_path, ns, kube_env, tree)
    assert r.returncode == 0, r.stdout + r.stderr
    assert seen == {"PreSync": [],  # the hook ran before anything else was written
                    "web": ["ConfigMap db-config", "Deployment web"],  # wave 1 waits
                    "PostSync": ["ConfigMap db-config", "Deployment web", "ConfigMap after-web"]}
    at = _order(r.stdout, f"hook       PreSync Job {ns}/migrate-",
                f"created    ConfigMap {ns}/db-config", f"created    Deployment {ns}/web",
                f"created    ConfigMap {ns}/after-web", f"hook       PostSync Job {ns}/smoke")
    assert at == sorted(at)
    assert f"hook       PostSync Job {ns}/smoke succeeded" in r.stdout

    # Hooks are no members: no part-of label, no Job in the ApplySet, never pruned.
    smoke = get("job", "smoke", kube_env, ns)
    assert smoke and PART_OF_LABEL not in (smoke["metadata"].get("labels") or {})
    parent = get("configmap", "app", kube_env, ns)
    assert "Job.batch" not in parent["metadata"]["annotations"][GROUP_KINDS_ANNOTATION]
    # HookSucceeded deleted the PreSync Job (with its pod); the named PostSync Job stays.
    jobs = json.loads(kubectl("get", "jobs", "-n", ns, "-o", "json", env=kube_env).stdout)
    assert [j["metadata"]["name"] for j in jobs["items"]
            if not j["metadata"].get("deletionTimestamp")] == ["smoke"]

    # A commit that changes nothing here writes nothing and runs no hook;
    # --prune leaves the hooks alone.
    again = _sync(tmp_path, ns, kube_env, tree, "--prune")
    assert again.returncode == 0, again.stderr
    assert "hook" not in again.stdout and "pruned" not in again.stdout
    assert get("job", "smoke", kube_env, ns) is not None


def test_a_failing_presync_hook_writes_nothing_else(
        tmp_path: Path, kube: Kube, kube_env: dict, git_env: dict, namespace: str) -> None:
    ns = namespace
    tree = docs(
        _job({ARGO_HOOK: "PreSync"}, generate="migrate-"),
        _with(configmap("on-failure"), **{ARGO_HOOK: "SyncFail"}),
        configmap("settings"),
        deployment("web", 1))
    with Kubelet(kube, ns, lambda pod: "Failed"):
        r = _sync(tmp_path, ns, kube_env, tree)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"error: PreSync hook Job {ns}/migrate-" in r.stderr
    assert "Degraded: failed: Job has reached the specified backoff limit" in r.stderr
    assert get("configmap", "settings", kube_env, ns) is None
    assert get("deployment", "web", kube_env, ns) is None
    # SyncFail hooks run when the sync failed; the history records the failure.
    assert get("configmap", "on-failure", kube_env, ns) is not None
    assert f"hook       SyncFail ConfigMap {ns}/on-failure succeeded" in r.stdout
    history = json.loads(get("configmap", "app", kube_env, ns)["data"]["kubectl-gitops.history"])
    assert history[0]["result"] == "failed" and "PreSync hook" in history[0]["failures"][0]
    assert GROUP_KINDS_ANNOTATION in get("configmap", "app", kube_env, ns)["metadata"][
        "annotations"]
    assert get("configmap", "app", kube_env, ns)["metadata"]["annotations"][
        GROUP_KINDS_ANNOTATION] == ""  # no member kind recorded: none was written


def test_a_degraded_wave_stops_the_sync_before_the_next(
        tmp_path: Path, kube: Kube, kube_env: dict, git_env: dict, namespace: str) -> None:
    ns = namespace
    migrate = _job({}, name="migrate")
    tree = docs(_with(migrate, **{ARGO_WAVE: "0"}),
                _with(configmap("settings"), **{ARGO_WAVE: "1"}))
    with Kubelet(kube, ns, lambda pod: "Failed"):
        r = _sync(tmp_path, ns, kube_env, tree)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"error: Job {ns}/migrate: Degraded: failed: " in r.stderr
    assert get("configmap", "settings", kube_env, ns) is None


def test_prune_goes_in_reverse_wave_order(tmp_path: Path, kube_env: dict, git_env: dict,
                                          namespace: str) -> None:
    ns = namespace
    waves = [_with(configmap(f"w{w}"), **{"kubectl-gitops.io/wave": str(w)}) for w in (0, 2, 1)]
    assert _sync(tmp_path, ns, kube_env, docs(configmap("keep"), *waves)).returncode == 0
    r = _sync(tmp_path, ns, kube_env, docs(configmap("keep")), "--prune")
    assert r.returncode == 0, r.stderr
    at = _order(r.stdout, f"pruned     ConfigMap {ns}/w2", f"pruned     ConfigMap {ns}/w1",
                f"pruned     ConfigMap {ns}/w0")
    assert at == sorted(at)


@pytest.mark.parametrize(("annotation", "value", "error"), [
    (ARGO_WAVE, "soon", "argocd.argoproj.io/sync-wave: 'soon' is not an integer"),
    (ARGO_HOOK, "PreDelete", "argocd.argoproj.io/hook: PreDelete is not a hook this tool runs"),
    (ARGO_POLICY, "Never", "argocd.argoproj.io/hook-delete-policy: Never is not a delete "
                           "policy"),
])
def test_a_bad_order_annotation_refuses_the_sync(
        tmp_path: Path, kube_env: dict, git_env: dict, namespace: str, annotation: str,
        value: str, error: str) -> None:
    ns = namespace
    obj = _with(configmap("odd"), **{annotation: value})
    if annotation == ARGO_POLICY:
        obj["metadata"]["annotations"][ARGO_HOOK] = "PostSync"
    r = _sync(tmp_path, ns, kube_env, docs(configmap("fine"), obj))
    assert r.returncode == 2
    assert f"deploy/all.yaml:8: ConfigMap {ns}/odd: {error}" in r.stderr
    assert get("configmap", "fine", kube_env, ns) is None
