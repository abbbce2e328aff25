"""Helm charts through diff, sync, prune and rollback, against the real
control plane, with the real helm and real upstream charts: podinfo from a
chart repository served over HTTP and from an OCI registry (``crane
registry serve``), sealed-secrets (a chart with CRDs) found by its
``Chart.yaml``, and a kustomization's ``helmCharts:``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from testing.git import commit, git, make_repo, write
from testing.kube import get, gitops, kubectl
from testing.sources import (chart_repo, copy_chart, oci_registry, package, tool_path,
                             upstream_chart)

PODINFO = "6.9.2"


@pytest.fixture
def env(git_env: dict[str, str], kube_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The cluster's environment with helm on PATH (behind a shim that logs
    each run's subcommand to ``helm.log``) and a cache of this test's own."""
    path = tool_path(kube_env["PATH"])
    real = shutil.which("helm", path=path)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "helm").write_text(f'#!/bin/sh\necho "$1" >> {tmp_path / "helm.log"}\n'
                               f'exec {real} "$@"\n')
    (shim / "helm").chmod(0o755)
    return {**kube_env, "PATH": f"{shim}{os.pathsep}{path}",
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
            "HELM_CONFIG_HOME": str(tmp_path / "helm-config")}


def helm_runs(env: dict[str, str]) -> list[str]:
    """The subcommands of every helm run so far (helm.log of the shim)."""
    log = Path(env["XDG_CACHE_HOME"]).parent / "helm.log"
    return log.read_text().split() if log.exists() else []


def podinfo_dropping_its_service(tmp_path: Path) -> Path:
    """A later podinfo release that no longer ships a Service: the real 6.9.2
    chart with templates/service.yaml removed and a new appVersion (packaged
    as 6.9.3-drop.1 by the test's repository)."""
    chart = copy_chart(upstream_chart("podinfo", PODINFO), tmp_path / "podinfo-next")
    (chart / "templates" / "service.yaml").unlink()
    text = (chart / "Chart.yaml").read_text()
    (chart / "Chart.yaml").write_text(text.replace(f"appVersion: {PODINFO}",
                                                   "appVersion: 6.9.3"))
    return chart


def gitops_yaml(ns: str, helm: dict[str, Any], path: str | None = "deploy") -> str:
    doc = {"name": "shop", "namespace": ns, "path": path, "helm": helm}
    return yaml.safe_dump({k: v for k, v in doc.items() if v is not None}, sort_keys=False)


def sync(repo: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    proc = gitops("sync", "-o", "json", *args, cwd=repo, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def counts(result: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in result["counts"].items() if v}


def versions(env: dict[str, str], ns: str) -> dict[str, str]:
    out = json.loads(kubectl("get", "deployments,services,configmaps", "-n", ns, "-o", "json",
                             env=env).stdout)
    return {f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
            for o in out["items"] if o["metadata"]["name"] not in ("shop", "kube-root-ca.crt")}


def changed_lines(diff: str) -> list[str]:
    return [line for line in diff.splitlines()
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


@pytest.mark.slow
@pytest.mark.parametrize("where", ["http", "oci"])
def test_podinfo_from_a_repository_values_bump_prune_and_rollback(
        where: str, tmp_path: Path, env: dict[str, str], namespace: str) -> None:
    with chart_repo(tmp_path / "repo-http", env) as http, \
            oci_registry(tmp_path / "oci", env) as oci:
        if where == "http":
            http.add(upstream_chart("podinfo", PODINFO))
            http.add(podinfo_dropping_its_service(tmp_path), version="6.9.3-drop.1")
            ref: dict[str, Any] = {"repo": http.url, "chart": "podinfo"}
        else:
            for chart, version in ((upstream_chart("podinfo", PODINFO), None),
                                   (podinfo_dropping_its_service(tmp_path), "6.9.3-drop.1")):
                url = oci.push(package(chart, tmp_path / "pkg", env, version=version))
            ref = {"chart": f"{url}/podinfo", "plainHTTP": True}
        served = (lambda: list(http.requests)) if where == "http" else (lambda: oci.requests())
        _scenario(tmp_path, env, namespace, ref, served)


def _scenario(tmp_path: Path, env: dict[str, str], ns: str, ref: dict[str, Any],
              served: Any) -> None:
    repo = make_repo(tmp_path / "git")
    helm = {**ref, "version": PODINFO, "releaseName": "web", "valuesFiles": ["deploy/values.yaml"]}
    write(repo, ".gitops.yaml", gitops_yaml(ns, helm))
    write(repo, "deploy/values.yaml", "replicaCount: 2\n")
    commit(repo, "podinfo 6.9.2")

    # A first diff shows everything as new; nothing is written.
    diff = gitops("diff", cwd=repo, env=env)
    assert diff.returncode == 1, diff.stderr
    assert "Deployment" in diff.stdout and "web-podinfo" in diff.stdout
    assert get("deployment", "web-podinfo", env, ns) is None

    first = sync(repo, env)
    assert counts(first) == {"created": 2}
    deploy = get("deployment", "web-podinfo", env, ns)
    assert deploy is not None and deploy["spec"]["replicas"] == 2
    assert deploy["metadata"]["labels"]["helm.sh/chart"] == f"podinfo-{PODINFO}"
    assert get("service", "web-podinfo", env, ns) is not None
    # The values file is a values file, not a manifest; test hooks are not applied.
    pods = json.loads(kubectl("get", "pods", "-n", ns, "-o", "json", env=env).stdout)
    assert [p["metadata"]["name"] for p in pods["items"]
            if "helm.sh/hook" in (p["metadata"].get("annotations") or {})] == []

    # A second sync writes nothing, fetches nothing and runs no helm template.
    before, asked, runs = versions(env, ns), served(), helm_runs(env)
    again = sync(repo, env)
    assert counts(again) == {"unchanged": 2}
    assert versions(env, ns) == before
    assert served() == asked
    assert helm_runs(env) == runs

    # A values change diffs and syncs exactly those fields.
    write(repo, "deploy/values.yaml", "replicaCount: 3\nui:\n  message: from git\n")
    commit(repo, "values")
    diff = gitops("diff", cwd=repo, env=env)
    assert diff.returncode == 1, diff.stderr
    assert changed_lines(diff.stdout) == [
        "-  replicas: 2", "+  replicas: 3",
        "+        - name: PODINFO_UI_MESSAGE", "+          value: from git"], diff.stdout
    changed = sync(repo, env)
    assert counts(changed) == {"updated": 1, "unchanged": 1}
    deploy = get("deployment", "web-podinfo", env, ns)
    assert deploy["spec"]["replicas"] == 3
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "PODINFO_UI_MESSAGE", "value": "from git"} in container["env"]

    # A version bump: the new release drops its Service, which prune removes.
    write(repo, ".gitops.yaml", gitops_yaml(ns, {**helm, "version": "6.9.3-drop.1"}))
    commit(repo, "podinfo 6.9.3-drop.1")
    diff = gitops("diff", "--prune", "-o", "json", cwd=repo, env=env)
    assert diff.returncode == 1, diff.stderr
    actions = {f"{d['kind']}/{d['name']}": d["action"] for d in json.loads(diff.stdout)["items"]}
    assert actions == {"Deployment/web-podinfo": "update", "Service/web-podinfo": "prune"}
    bumped = sync(repo, env, "--prune")
    assert counts(bumped) == {"updated": 1, "pruned": 1}
    assert get("service", "web-podinfo", env, ns) is None
    deploy = get("deployment", "web-podinfo", env, ns)
    assert deploy["metadata"]["labels"]["helm.sh/chart"] == "podinfo-6.9.3-drop.1"

    # Rollback moves git forward to the chart reference of before, and syncs it.
    back = subprocess.run(["git", "gitops", "rollback", "--sync"], cwd=repo, env=env,
                          capture_output=True, text=True)
    assert back.returncode == 0, back.stderr
    assert f"version: {PODINFO}" in (repo / ".gitops.yaml").read_text()
    assert git(repo, "status", "--porcelain") == ""
    assert get("service", "web-podinfo", env, ns) is not None
    deploy = get("deployment", "web-podinfo", env, ns)
    assert deploy["metadata"]["labels"]["helm.sh/chart"] == f"podinfo-{PODINFO}"
    assert deploy["spec"]["replicas"] == 3  # the values of HEAD~ stay: only the bump is undone
    assert gitops("diff", cwd=repo, env=env).returncode == 0


SEALED_SECRET = """\
apiVersion: bitnami.com/v1alpha1
kind: SealedSecret
metadata:
  name: db
spec:
  encryptedData:
    password: AgBy3i4OJSWK+PiTySYZZA==
  template:
    metadata:
      name: db
"""


@pytest.mark.slow
def test_a_chart_with_crds_and_custom_resources_in_one_sync(
        tmp_path: Path, env: dict[str, str], namespace: str) -> None:
    """sealed-secrets, found by its Chart.yaml under PATH, brings the
    SealedSecret CRD; a SealedSecret beside it is applied in the same sync.
    Then the real upgrade 2.16.0 -> 2.19.3."""
    repo = make_repo(tmp_path / "git")
    copy_chart(upstream_chart("sealed-secrets", "2.16.0"), repo / "deploy" / "sealed-secrets")
    write(repo, "deploy/db.yaml", SEALED_SECRET)
    write(repo, ".gitops.yaml", yaml.safe_dump({"name": "sealed", "namespace": namespace,
                                                "path": "deploy"}))
    commit(repo, "sealed-secrets 2.16.0")
    crd = "sealedsecrets.bitnami.com"
    try:
        first = sync(repo, env)
        assert first["counts"]["failed"] == 0
        assert get("crd", crd, env) is not None
        assert get("sealedsecret", "db", env, namespace)["spec"]["encryptedData"] == \
            {"password": "AgBy3i4OJSWK+PiTySYZZA=="}
        deploy = get("deployment", "sealed-secrets", env, namespace)
        assert deploy["metadata"]["labels"]["helm.sh/chart"] == "sealed-secrets-2.16.0"
        assert counts(sync(repo, env)) == {"unchanged": first["counts"]["created"]}

        (repo / "deploy" / "sealed-secrets").rename(tmp_path / "old-chart")
        git(repo, "rm", "-r", "-q", "--cached", "deploy/sealed-secrets")
        copy_chart(upstream_chart("sealed-secrets", "2.19.3"), repo / "deploy" / "sealed-secrets")
        commit(repo, "sealed-secrets 2.19.3")
        upgraded = sync(repo, env, "--prune")
        assert upgraded["counts"]["failed"] == 0 and upgraded["counts"]["updated"] >= 1
        deploy = get("deployment", "sealed-secrets", env, namespace)
        assert deploy["metadata"]["labels"]["helm.sh/chart"] == "sealed-secrets-2.19.3"
    finally:
        kubectl("delete", "crd", crd, "--ignore-not-found", "--wait=false", env=env)
        kubectl("delete", "clusterrole,clusterrolebinding", "-l",
                "app.kubernetes.io/name=sealed-secrets", "--ignore-not-found", env=env)


def test_kustomize_helm_charts_render_with_the_real_helm(
        tmp_path: Path, env: dict[str, str], namespace: str) -> None:
    """``helmCharts:`` of a kustomization, the chart in the repository."""
    repo = make_repo(tmp_path / "git")
    copy_chart(upstream_chart("podinfo", PODINFO), repo / "deploy" / "charts" / "podinfo")
    write(repo, "deploy/kustomization.yaml", yaml.safe_dump({
        "namePrefix": "k-",
        "helmCharts": [{"name": "podinfo", "releaseName": "web", "namespace": namespace,
                        "valuesInline": {"replicaCount": 2}}]}))
    commit(repo, "kustomize + helm")
    result = sync(repo, env, "deploy", "-n", namespace, "--name", "kz")
    assert counts(result) == {"created": 2}
    assert get("deployment", "k-web-podinfo", env, namespace)["spec"]["replicas"] == 2


def test_a_missing_chart_version_is_one_line_and_nothing_is_written(
        tmp_path: Path, env: dict[str, str], namespace: str) -> None:
    with chart_repo(tmp_path / "repo-http", env) as http:
        http.add(upstream_chart("podinfo", PODINFO))
        repo = make_repo(tmp_path / "git")
        write(repo, ".gitops.yaml", gitops_yaml(namespace, {
            "repo": http.url, "chart": "podinfo", "version": "9.9.9"}))
        write(repo, "deploy/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n")
        commit(repo, "a version that does not exist")
        proc = gitops("sync", cwd=repo, env=env)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: .gitops.yaml: helm: podinfo version 9.9.9 is not in {http.url}/"], proc.stderr
    assert get("configmap", "a", env, namespace) is None
    assert get("configmap", "shop", env, namespace) is None


def test_private_repository_credentials_come_from_helms_config_and_never_show(
        tmp_path: Path, env: dict[str, str], namespace: str) -> None:
    with chart_repo(tmp_path / "repo-http", env, auth=("robot", "s3cret-pw")) as http:
        http.add(upstream_chart("podinfo", PODINFO))
        repo = make_repo(tmp_path / "git")
        write(repo, ".gitops.yaml", gitops_yaml(namespace, {
            "repo": http.url, "chart": "podinfo", "version": PODINFO}, path=None))
        commit(repo, "private chart")
        denied = gitops("sync", cwd=repo, env=env)
        assert denied.returncode == 2
        assert "HTTP 401" in denied.stderr and len(denied.stderr.splitlines()) == 1
        config = tmp_path / "repositories.yaml"
        config.write_text(yaml.safe_dump({"apiVersion": "", "repositories": [
            {"name": "private", "url": http.url, "username": "robot", "password": "s3cret-pw"}]}))
        ok = gitops("sync", cwd=repo, env={**env, "HELM_REPOSITORY_CONFIG": str(config)})
        assert ok.returncode == 0, ok.stderr
        assert "s3cret-pw" not in ok.stdout + ok.stderr + denied.stdout + denied.stderr
    assert get("deployment", "podinfo", env, namespace) is not None
    for f in (tmp_path / "cache").rglob("*"):
        assert not f.is_file() or b"s3cret-pw" not in f.read_bytes(), f


CAPABILITIES = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: caps
data:
  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}
  widgets: {{ .Capabilities.APIVersions.Has "example.com/v1/Widget" | quote }}
"""


def test_charts_see_the_clusters_capabilities(tmp_path: Path, env: dict[str, str],
                                              namespace: str) -> None:
    """--kube-version and --api-versions come from the live cluster: a kind
    only this cluster serves (a CRD made here) is seen by the chart."""
    crd = tmp_path / "crd.yaml"
    crd.write_text(yaml.safe_dump({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                     "openAPIV3Schema": {"type": "object",
                                         "x-kubernetes-preserve-unknown-fields": True}}}]}}))
    kubectl("apply", "-f", str(crd), env=env)
    try:
        kubectl("wait", "--for=condition=Established", "crd/widgets.example.com", env=env)
        _capabilities(tmp_path, env, namespace)
    finally:
        kubectl("delete", "-f", str(crd), "--wait=false", env=env)


def _capabilities(tmp_path: Path, env: dict[str, str], namespace: str) -> None:
    repo = make_repo(tmp_path / "git")
    write(repo, "charts/caps/Chart.yaml", "apiVersion: v2\nname: caps\nversion: 1.0.0\n")
    write(repo, "charts/caps/templates/cm.yaml", CAPABILITIES)
    write(repo, ".gitops.yaml", gitops_yaml(namespace, {"chart": "charts/caps"}, path=None))
    commit(repo, "a chart that reads Capabilities")
    sync(repo, env)
    server = json.loads(kubectl("version", "-o", "json", env=env).stdout)["serverVersion"]
    data = get("configmap", "caps", env, namespace)["data"]
    assert data == {"kubeVersion": server["gitVersion"], "widgets": "true"}
    # Offline (validate), the schema release and helm's own API versions.
    shown = subprocess.run(["git", "gitops", "validate", "-o", "json"], cwd=repo, env=env,
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stdout + shown.stderr


HOOK_JOB = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-migrate
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: m, image: busybox}]
"""


def test_chart_hooks_are_not_applied_and_are_named(tmp_path: Path, env: dict[str, str],
                                                   namespace: str) -> None:
    repo = make_repo(tmp_path / "git")
    write(repo, "deploy/web/Chart.yaml", "apiVersion: v2\nname: web\nversion: 1.0.0\n")
    write(repo, "deploy/web/templates/cm.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cfg\n")
    write(repo, "deploy/web/templates/hook.yaml", HOOK_JOB)
    commit(repo, "a chart with a hook")
    proc = gitops("sync", "deploy", "-n", namespace, "--name", "hooks", "-o", "json",
                  cwd=repo, env=env)
    assert proc.returncode == 0, proc.stderr
    assert counts(json.loads(proc.stdout)) == {"created": 1}
    assert get("configmap", "web-cfg", env, namespace) is not None
    assert get("job", "web-migrate", env, namespace) is None
    assert proc.stderr.splitlines() == [
        f"note: deploy/web: Job {namespace}/web-migrate (pre-install,pre-upgrade) is a Helm "
        "hook and is not applied (see README, Helm charts)"]
