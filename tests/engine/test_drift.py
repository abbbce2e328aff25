"""Diff tells the truth and sync converges (issue 12), against the real
control plane: drift from kubectl edits, conflicts, takeover from `kubectl
apply`, API versions, ignore rules, multi-line strings, a pruned Namespace.

Every scenario checks the one decision: diff -o json, sync --dry-run -o json
and sync -o json agree on every object's action and on the counts, and a
second sync writes nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from testing.git import commit, make_repo, write
from testing.kube import configmap, deployment, docs, get, gitops, kubectl


def _repo(tmp_path: Path, text: str, config: str = "") -> Path:
    repo = make_repo(tmp_path / "repo")
    write(repo, "deploy/all.yaml", text)
    if config:
        write(repo, ".gitops.yaml", config)
    commit(repo, "manifests")
    return repo


def _set(repo: Path, text: str) -> None:
    write(repo, "deploy/all.yaml", text)
    commit(repo, "change")


def _run(sub: str, repo: Path, ns: str, env: dict, *extra: str) -> Any:
    return gitops(sub, "deploy", "-n", ns, "--name", "app", *extra, cwd=repo, env=env)


def _json(sub: str, repo: Path, ns: str, env: dict, *extra: str,
          status: int | None = None) -> dict[str, Any]:
    r = _run(sub, repo, ns, env, "-o", "json", *extra)
    if status is not None:
        assert r.returncode == status, r.stderr
    return json.loads(r.stdout)


def _actions(doc: dict[str, Any]) -> dict[tuple[str, str, str], str]:
    return {(i["kind"], i["namespace"], i["name"]): i["action"] for i in doc["items"]}


def _versions(env: dict, ns: str, kinds: str) -> dict[str, str]:
    out = json.loads(kubectl("get", kinds, "-n", ns, "-o", "json", env=env).stdout)
    return {f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
            for o in out["items"] if o["metadata"]["name"] != "app"}


def converge(repo: Path, ns: str, env: dict, *extra: str) -> dict[str, Any]:
    """diff, sync --dry-run and sync agree on every object and on the
    counts; afterwards diff sees nothing and a second sync writes nothing.
    Returns what diff said."""
    d = _json("diff", repo, ns, env, *extra)
    dry = _json("sync", repo, ns, env, "--dry-run", *extra, status=0)
    done = _json("sync", repo, ns, env, *extra, status=0)
    assert _actions(d) == _actions(dry) == _actions(done)
    assert d["counts"] == dry["counts"] == done["counts"], (d["counts"], done["counts"])
    assert (d["result"], dry["result"], done["result"]) == ("planned", "planned", "succeeded")
    assert [k for k in d if k != "command"] == [k for k in done if k != "command"]
    assert [sorted(i) for i in d["items"]] == [sorted(i) for i in done["items"]]
    after = _run("diff", repo, ns, env, *extra)
    assert after.returncode == 0, after.stdout + after.stderr
    again = _json("sync", repo, ns, env, *extra, status=0)
    assert again["counts"]["created"] == again["counts"]["updated"] == 0, again["counts"]
    return d


MULTILINE = "#!/bin/sh\nset -eu\nexec nginx -g 'daemon off;'\n"


def test_drift_is_shown_with_its_manager_and_taken_back(tmp_path: Path, git_env: dict,
                                                        kube_env: dict, namespace: str) -> None:
    web = deployment("web", 2, "nginx:1.27")
    web["metadata"]["labels"] = {"tier": "front"}
    api = deployment("api", 1, "nginx:1.27")
    cfg = configmap("cfg", {"LOG": "info", "start.sh": MULTILINE}, labels={"team": "a"})
    repo = _repo(tmp_path, docs(web, api, cfg, configmap("notes")))
    assert _run("sync", repo, namespace, kube_env).returncode == 0
    ns = ["-n", namespace]
    kubectl("scale", "deployment/web", "--replicas=5", *ns, env=kube_env)
    kubectl("set", "image", "deployment/web", "c=nginx:9", *ns, env=kube_env)
    kubectl("label", "--overwrite", "deployment/web", "tier=back", *ns, env=kube_env)
    kubectl("patch", "configmap/cfg", "--type=merge", "-p",
            json.dumps({"data": {"start.sh": MULTILINE.replace("-eu", "-eux")}}), *ns,
            env=kube_env)
    edit = {**kube_env, "KUBE_EDITOR": "sed -i -e 's/team: a/team: b/'"}
    kubectl("edit", "configmap/cfg", *ns, env=edit)
    # And an ordinary change in git, to an unrelated object, in the same sync.
    api["spec"]["replicas"] = 3
    _set(repo, docs(web, api, cfg, configmap("notes")))

    text = _run("diff", repo, namespace, kube_env)
    assert text.returncode == 1, text.stderr
    notes = [line for line in text.stdout.splitlines() if "drifted:" in line]
    assert len(notes) == 2, text.stdout
    web_note = next(n for n in notes if "Deployment" in n)
    assert web_note.startswith(f"# Deployment {namespace}/web: drifted: ")
    for part in (".metadata.labels.tier (kubectl-label, ", ".spec.replicas (kubectl via scale)",
                 '.spec.template.spec.containers[name="c"].image (kubectl-set, '):
        assert part in web_note, web_note
    assert "s ago)" in web_note or "m ago)" in web_note
    cm_note = next(n for n in notes if "ConfigMap" in n)
    assert '.data["start.sh"] (kubectl-patch, ' in cm_note and \
        ".metadata.labels.team (kubectl-edit, " in cm_note, cm_note
    # A multi-line string diffs as a block, as kubectl shows it.
    assert "  start.sh: |\n" in text.stdout and "-    set -eux\n+    set -eu\n" in text.stdout

    d = converge(repo, namespace, kube_env)
    assert d["counts"] == {"created": 0, "updated": 3, "pruned": 0, "unchanged": 1,
                           "failed": 0}
    web_item = next(i for i in d["items"] if i["name"] == "web")
    assert any(x.startswith(".spec.replicas (kubectl via scale") for x in web_item["drift"])
    live = get("deployment", "web", kube_env, namespace)
    assert live["spec"]["replicas"] == 2 and live["metadata"]["labels"]["tier"] == "front"
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert get("deployment", "api", kube_env, namespace)["spec"]["replicas"] == 3
    assert get("configmap", "cfg", kube_env, namespace)["data"]["start.sh"] == MULTILINE


def test_no_force_conflicts_refuses_and_diff_says_so_first(tmp_path: Path, git_env: dict,
                                                           kube_env: dict,
                                                           namespace: str) -> None:
    repo = _repo(tmp_path, docs(deployment("web", 2), configmap("other", {"v": "1"})),
                 config="forceConflicts: false\n")
    assert _run("sync", repo, namespace, kube_env).returncode == 0
    kubectl("scale", "deployment/web", "--replicas=5", "-n", namespace, env=kube_env)
    _set(repo, docs(deployment("web", 2), configmap("other", {"v": "2"})))
    expected = (f'error: Deployment {namespace}/web: fields set by another manager: '
                '"kubectl" via scale: .spec.replicas; refused by --no-force-conflicts '
                "(forceConflicts: false in .gitops.yaml)")
    d = _run("diff", repo, namespace, kube_env)
    assert (d.returncode, d.stderr.strip()) == (2, expected)
    s = _run("sync", repo, namespace, kube_env)
    assert (s.returncode, s.stderr.strip()) == (2, expected)
    # The whole sync was refused: the unrelated change is not half-applied.
    assert get("configmap", "other", kube_env, namespace)["data"] == {"v": "1"}
    # The flag overrides the file: git takes its field back.
    assert _run("sync", repo, namespace, kube_env, "--force-conflicts").returncode == 0
    assert get("deployment", "web", kube_env, namespace)["spec"]["replicas"] == 2
    assert _run("diff", repo, namespace, kube_env).returncode == 0


def _demo_tree() -> list[dict[str, Any]]:
    """Shapes from the Google microservices demo and kube-prometheus: a
    Deployment with env from the downward API and read-only volume mounts, a
    Secret written with stringData, a Service, a ConfigMap."""
    front = deployment("frontend", 1, "gcr.io/google-samples/microservices-demo/frontend:v0.10.2")
    spec = front["spec"]["template"]["spec"]
    spec["containers"][0].update({
        "ports": [{"containerPort": 8080}],
        "env": [{"name": "PORT", "value": "8080"},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "volumeMounts": [{"name": "config", "mountPath": "/etc/config", "readOnly": True}]})
    spec["volumes"] = [{"name": "config", "configMap": {"name": "frontend-config"}}]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "grafana-config"},
              "type": "Opaque", "stringData": {"grafana.ini": "[date_formats]\n"
                                               "default_timezone = UTC\n"}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "frontend"},
               "spec": {"selector": {"app": "frontend"},
                        "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
    return [front, secret, service, configmap("frontend-config", {"a": "1"})]


@pytest.mark.parametrize("how", ["client-side", "server-side"])
def test_takeover_from_kubectl_apply(how: str, tmp_path: Path, git_env: dict, kube_env: dict,
                                     namespace: str) -> None:
    tree = _demo_tree()
    path = tmp_path / "tree.yaml"
    path.write_text(docs(*tree))
    flags = ["--server-side"] if how == "server-side" else []
    kubectl("apply", *flags, "-n", namespace, "-f", str(path), env=kube_env)
    kinds = "deployments,secrets,services,configmaps"
    repo = _repo(tmp_path, docs(*tree))
    d = converge(repo, namespace, kube_env)
    # Nothing differs but our label and hash: every object is written, and
    # diff said so, showing exactly that.
    assert d["counts"] == {"created": 0, "updated": 4, "pruned": 0, "unchanged": 0,
                           "failed": 0}
    shown = next(i for i in d["items"] if i["kind"] == "Service")["diff"]
    assert "+    applyset.kubernetes.io/part-of: " in shown, shown
    if how == "server-side":
        return  # the conflicts below are those of the issue's client-side case
    before = _versions(kube_env, namespace, kinds)
    # Takeover with conflicts: git now changes fields kubectl apply owned.
    tree[0]["spec"]["replicas"] = 2
    tree[0]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["readOnly"] = False
    tree[1]["stringData"]["grafana.ini"] = "[date_formats]\ndefault_timezone = browser\n"
    _set(repo, docs(*tree))
    d = converge(repo, namespace, kube_env)
    assert d["counts"]["updated"] == 2, d["counts"]
    after = _versions(kube_env, namespace, kinds)
    assert {k for k in before if before[k] != after[k]} == {"Deployment/frontend",
                                                            "Secret/grafana-config"}


def _hpa(api_version: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                               "name": "web"},
                            "minReplicas": 3, "maxReplicas": 5}
    if api_version == "autoscaling/v1":
        spec["targetCPUUtilizationPercentage"] = 80
    else:
        spec["metrics"] = [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
    return {"apiVersion": api_version, "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"}, "spec": spec}


def _crd_two_versions(group: str) -> dict[str, Any]:
    schema = {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
        "type": "object", "properties": {"port": {"type": "integer"},
                                         "hostname": {"type": "string"}}}}}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"gateways.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": "Gateway", "plural": "gateways", "singular": "gateway"},
                     "conversion": {"strategy": "None"},
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "schema": schema},
                                  {"name": "v1beta1", "served": True, "storage": False,
                                   "schema": schema}]}}


def test_served_but_not_preferred_versions_converge(tmp_path: Path, git_env: dict,
                                                    kube_env: dict, namespace: str) -> None:
    group = f"{namespace}.gw.example.com"
    crd = _crd_two_versions(group)
    path = tmp_path / "crd.yaml"
    path.write_text(docs(crd))
    kubectl("apply", "-f", str(path), env=kube_env)
    kubectl("wait", "--for=condition=Established", f"crd/gateways.{group}", env=kube_env)
    gateway = {"apiVersion": f"{group}/v1beta1", "kind": "Gateway",
               "metadata": {"name": "gw"}, "spec": {"port": 80, "hostname": "shop.example"}}
    web = deployment("web", 3)
    tree = docs(web, _hpa("autoscaling/v1"), gateway, configmap("a"), configmap("b"))
    repo = _repo(tmp_path, tree)
    d = converge(repo, namespace, kube_env)
    assert d["counts"]["created"] == 5
    # Read in the manifest's version: the HPA stays autoscaling/v1 on both sides.
    assert {i["apiVersion"] for i in d["items"] if i["kind"] != "ConfigMap"} == {
        "apps/v1", "autoscaling/v1", f"{group}/v1beta1"}
    # kubectl agrees there is nothing to do.
    files = tmp_path / "files.yaml"
    files.write_text(tree)
    kd = kubectl("diff", "--server-side", "-n", namespace,
                 "-f", str(files), env=kube_env, check=False)
    assert kd.returncode == 0, kd.stdout + kd.stderr
    # A kubectl patch of the custom resource is drift, taken back like any other.
    kubectl("patch", f"gateways.{group}", "gw", "-n", namespace, "--type=merge",
            "-p", '{"spec": {"port": 81}}', env=kube_env)
    d = converge(repo, namespace, kube_env)
    [gw] = [i for i in d["items"] if i["kind"] == "Gateway"]
    assert gw["action"] == "update" and gw["drift"][0].startswith(".spec.port (kubectl-patch, ")
    assert json.loads(kubectl("get", f"gateways.{group}", "gw", "-n", namespace, "-o", "json",
                              env=kube_env).stdout)["spec"]["port"] == 80
    kubectl("delete", "crd", f"gateways.{group}", "--wait=false", env=kube_env)


def test_ignore_rules_leave_a_real_hpa_its_replicas(tmp_path: Path, git_env: dict,
                                                   kube_env: dict, namespace: str) -> None:
    # The real HPA controller raises replicas to minReplicas (no metrics needed).
    web = deployment("web", 1)
    rule = ("ignore:\n- group: apps\n  kind: Deployment\n  name: web\n"
            "  jsonPointers: [/spec/replicas]\n")
    repo = _repo(tmp_path, docs(web, _hpa("autoscaling/v2")), config=rule)
    assert _run("sync", repo, namespace, kube_env).returncode == 0
    deadline = time.monotonic() + 90
    while get("deployment", "web", kube_env, namespace)["spec"].get("replicas") != 3:
        assert time.monotonic() < deadline, "the HPA controller never scaled web to 3"
        time.sleep(1)
    converge(repo, namespace, kube_env)
    assert get("deployment", "web", kube_env, namespace)["spec"]["replicas"] == 3
    live = json.loads(kubectl("get", "deployment", "web", "-n", namespace, "-o", "json",
                              "--show-managed-fields", env=kube_env).stdout)
    owners = {m["manager"] for m in live["metadata"]["managedFields"]
              if "f:replicas" in m["fieldsV1"].get("f:spec", {})}
    assert "kubectl-gitops" not in owners, owners  # this tool does not own it
    # Without the rule, sync would fight the HPA: diff shows it would.
    write(repo, ".gitops.yaml", "")
    _set(repo, docs(web, _hpa("autoscaling/v2")))
    text = _run("diff", repo, namespace, kube_env)
    assert text.returncode == 1
    assert "-  replicas: 3\n+  replicas: 1\n" in text.stdout, text.stdout


def test_a_pruned_namespace_is_not_pruned_again(tmp_path: Path, git_env: dict, kube_env: dict,
                                                namespace: str) -> None:
    gone = f"{namespace}-gone"
    ns_obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": gone}}
    # A finalizer keeps the pruned ConfigMap, and so its Namespace, terminating.
    held = configmap("in-it", namespace=gone, finalizers=["example.com/hold"])
    # Another Namespace stays, so Namespaces stay a kind of the set.
    kept = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"{namespace}-kept"}}
    repo = _repo(tmp_path, docs(ns_obj, kept, held, configmap("stay")))
    assert _run("sync", repo, namespace, kube_env, "--prune").returncode == 0
    _set(repo, docs(kept, configmap("stay")))
    # converge: diff --prune, the dry run and sync agree; diff --prune exits 0
    # right after, while the Namespace is still terminating.
    d = converge(repo, namespace, kube_env, "--prune")
    assert d["counts"] == {"created": 0, "updated": 0, "pruned": 2, "unchanged": 2,
                           "failed": 0}
    assert get("namespace", gone, kube_env)["status"]["phase"] == "Terminating"
    kubectl("patch", "configmap", "in-it", "-n", gone, "--type=merge",
            "-p", '{"metadata": {"finalizers": null}}', env=kube_env)
    kubectl("delete", "namespace", f"{namespace}-kept", "--wait=false", env=kube_env)


def test_a_foreign_owner_is_refused_by_diff_first(tmp_path: Path, git_env: dict,
                                                  kube_env: dict, namespace: str) -> None:
    # The per-object policy: what refuses the whole sync, diff reports first,
    # with the same line and exit status 2.
    kubectl("create", "configmap", "shared", "-n", namespace, env=kube_env)
    kubectl("label", "configmap", "shared", "-n", namespace,
            "app.kubernetes.io/managed-by=Helm", env=kube_env)
    repo = _repo(tmp_path, docs(configmap("shared"), configmap("mine")))
    line = (f"error: ConfigMap {namespace}/shared: already owned by "
            "app.kubernetes.io/managed-by=Helm; not taking it over (pass --adopt to take "
            "ownership)")
    for sub in ("diff", "sync"):
        r = _run(sub, repo, namespace, kube_env)
        assert (r.returncode, r.stderr.strip()) == (2, line), r.stderr
    assert get("configmap", "mine", kube_env, namespace) is None  # nothing written
    d = _json("diff", repo, namespace, kube_env, "--adopt", status=1)
    assert _actions(d)[("ConfigMap", namespace, "shared")] == "update"
    assert _run("sync", repo, namespace, kube_env, "--adopt").returncode == 0
    assert _run("diff", repo, namespace, kube_env, "--adopt").returncode == 0
