"""`kubectl gitops diff` against the real control plane."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from kubectl_gitops.engine.applyset import PART_OF_LABEL, SOURCE_ANNOTATION, applyset_id
from testing.git import commit, make_repo, write
from testing.kube import configmap, crd, deployment, docs, gitops, kubectl

# Every kind the issue names, as a user would write it: no server defaults.
KINDS = {
    "deployment": docs(deployment("web", replicas=2)),
    "statefulset": """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: postgres:16}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
""",
    "daemonset": """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: busybox:1.36, args: [sleep, "3600"]}]
""",
    "service": """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-nodeport}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: http, protocol: TCP}]
""",
    "config": docs(configmap("settings", {"a": "1"})) + """---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: hunter2}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: robot}
""",
    "rbac": """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects: [{kind: ServiceAccount, name: default}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: NS-viewer}
rules: [{apiGroups: [apps], resources: [deployments], verbs: [get]}]
""",
    "ingress": """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  rules:
  - host: shop.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web, port: {number: 80}}}
""",
    "batch": """
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: c, image: busybox:1.36, command: [date]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox:1.36, command: [date]}]
""",
    "pvc": """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
""",
    "crd": crd("Widget", "NS.example.com", {"size": {"type": "integer", "default": 3},
                                            "color": {"type": "string"}}) + """---
apiVersion: NS.example.com/v1
kind: Widget
metadata: {name: blue}
spec: {color: blue}
""",
    "namespace": """
apiVersion: v1
kind: Namespace
metadata: {name: NS-extra, labels: {team: shop}}
""",
}


def _repo(tmp_path: Path, text: str, ns: str) -> Path:
    repo = make_repo(tmp_path / "repo")
    write(repo, "deploy/all.yaml", textwrap.dedent(text).replace("NS", ns))
    commit(repo, "manifests")
    return repo


def _args(ns: str) -> list[str]:
    return ["deploy", "-n", ns, "--name", "app"]


@pytest.mark.parametrize("applier", ["sync", "kubectl"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_no_spurious_differences(kind: str, applier: str, tmp_path: Path, git_env: dict,
                                 kube_env: dict, namespace: str) -> None:
    repo = _repo(tmp_path, KINDS[kind], namespace)
    if applier == "sync":
        r = gitops("sync", *_args(namespace), cwd=repo, env=kube_env)
    else:
        r = kubectl("apply", "--server-side", "-n", namespace, "-f", "deploy/all.yaml",
                    env=kube_env, cwd=repo, check=False)
        if r.returncode != 0 and "ensure CRDs are installed first" in r.stderr:
            r = kubectl("apply", "--server-side", "-n", namespace, "-f", "deploy/all.yaml",
                        env=kube_env, cwd=repo, check=False)  # the CR, once its CRD is in
    assert r.returncode == 0, r.stderr
    d = gitops("diff", *_args(namespace), cwd=repo, env=kube_env)
    if applier == "kubectl":
        # Taken over from kubectl: the only differences are the label and the
        # source annotation sync adds.
        assert d.returncode == 1, d.stderr
        changes = [line for line in d.stdout.splitlines()
                   if line[:1] in "+-" and not line.startswith(("+++", "---"))]
        label = f"+    {PART_OF_LABEL}: {applyset_id('app', namespace)}"
        source = f"+    {SOURCE_ANNOTATION}: commit:"
        assert changes and all(line in ("+  labels:", label, "+  annotations:")
                               or line.startswith(source) for line in changes), d.stdout
        assert label in changes
        assert gitops("sync", *_args(namespace), cwd=repo, env=kube_env).returncode == 0
        d = gitops("diff", *_args(namespace), cwd=repo, env=kube_env)
    assert d.returncode == 0, d.stdout + d.stderr
    assert d.stdout == ""
    assert re.search(r"^0 to create, 0 to update, 0 to delete, \d+ unchanged$", d.stderr, re.M)


def test_drift_shows_up(tmp_path: Path, git_env: dict, kube_env: dict, namespace: str) -> None:
    repo = _repo(tmp_path, docs(deployment("web", 2), configmap("cfg", {"mode": "calm"})),
                 namespace)
    assert gitops("sync", *_args(namespace), cwd=repo, env=kube_env).returncode == 0
    kubectl("scale", "deployment/web", "--replicas=5", "-n", namespace, env=kube_env)
    kubectl("patch", "configmap", "cfg", "-n", namespace, "-p", '{"data":{"mode":"wild"}}',
            env=kube_env)
    d = gitops("diff", *_args(namespace), "--no-color", cwd=repo, env=kube_env)
    assert d.returncode == 1, d.stderr
    assert f"--- live apps/v1 Deployment {namespace}/web" in d.stdout
    assert re.search(r"^\+\+\+ git@[0-9a-f]{7} apps/v1 Deployment ", d.stdout, re.M)
    assert "-  replicas: 5\n+  replicas: 2\n" in d.stdout
    assert "-  mode: wild\n+  mode: calm\n" in d.stdout
    assert "0 to create, 2 to update, 0 to delete, 0 unchanged" in d.stderr


def test_json_table_and_creations(tmp_path: Path, git_env: dict, kube_env: dict,
                                  namespace: str) -> None:
    repo = _repo(tmp_path, docs(configmap("a"), configmap("b")), namespace)
    j = gitops("diff", *_args(namespace), "-o", "json", cwd=repo, env=kube_env)
    assert j.returncode == 1
    doc = json.loads(j.stdout)
    assert doc["counts"] == {"created": 2, "updated": 0, "pruned": 0, "unchanged": 0,
                             "failed": 0}
    out = doc["items"]
    assert [(o["action"], o["kind"], o["namespace"], o["name"]) for o in out] == \
        [("create", "ConfigMap", namespace, "a"), ("create", "ConfigMap", namespace, "b")]
    assert out[0]["diff"].startswith(f"--- live v1 ConfigMap {namespace}/a\n")
    assert all(o["removed"] == 0 and o["added"] > 5 for o in out)
    t = gitops("diff", *_args(namespace), "-o", "table", cwd=repo, env=kube_env)
    assert t.stdout.splitlines()[0].split() == ["ACTION", "KIND", "NAMESPACE", "NAME", "+/-"]
    assert t.stdout.splitlines()[1].split()[:4] == ["CREATE", "ConfigMap", namespace, "a"]


def test_revision_that_creates_namespace_and_crd(tmp_path: Path, git_env: dict,
                                                 kube_env: dict, namespace: str) -> None:
    other = f"{namespace}-new"
    text = KINDS["crd"] + "---\n" + docs(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}},
        configmap("inside", namespace=other))
    repo = _repo(tmp_path, text, namespace)
    d = gitops("diff", *_args(namespace), "-o", "json", cwd=repo, env=kube_env)
    assert d.returncode == 1, d.stderr
    notes = {o["name"]: o["note"] for o in json.loads(d.stdout)["items"]}
    assert notes["blue"] == "Widget is defined by a CRD this revision creates"
    assert notes["inside"] == f"namespace {other} is created by this revision"
    kubectl("delete", "namespace", other, "--ignore-not-found", env=kube_env)


def test_secrets_are_masked(tmp_path: Path, git_env: dict, kube_env: dict,
                            namespace: str) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
              "stringData": {"password": "first-Pa55word", "user": "admin-user-x"}}
    repo = _repo(tmp_path, docs(secret), namespace)
    created = gitops("diff", *_args(namespace), cwd=repo, env=kube_env)
    assert "first-Pa55word" not in created.stdout + created.stderr
    assert gitops("sync", *_args(namespace), cwd=repo, env=kube_env).returncode == 0
    secret["stringData"]["password"] = "second-Pa55word"
    write(repo, "deploy/all.yaml", docs(secret))
    commit(repo, "rotate")
    d = gitops("diff", *_args(namespace), "-o", "json", cwd=repo, env=kube_env)
    assert d.returncode == 1
    for value in ("first-Pa55word", "second-Pa55word", "admin-user-x"):
        for enc in (value, __import__("base64").b64encode(value.encode()).decode()):
            assert enc not in d.stdout + d.stderr
    text = json.loads(d.stdout)["items"][0]["diff"]
    assert "-  password: '*** (before)'" in text and "+  password: '*** (after)'" in text
    assert "   user: '***'" in text
    shown = gitops("diff", *_args(namespace), "--show-secrets", cwd=repo, env=kube_env)
    assert "c2Vjb25kLVBhNTV3b3Jk" in shown.stdout  # base64 of second-Pa55word


def test_prune_lists_deletions(tmp_path: Path, git_env: dict, kube_env: dict,
                               namespace: str) -> None:
    repo = _repo(tmp_path, docs(configmap("keep"), configmap("drop")), namespace)
    first = gitops("diff", *_args(namespace), "--prune", cwd=repo, env=kube_env)
    assert "no ApplySet in the cluster yet: nothing to prune" in first.stderr
    assert gitops("sync", *_args(namespace), cwd=repo, env=kube_env).returncode == 0
    write(repo, "deploy/all.yaml", docs(configmap("keep")))
    commit(repo, "drop one")
    plain = gitops("diff", *_args(namespace), cwd=repo, env=kube_env)
    assert plain.returncode == 0  # without --prune, deletions are not shown
    d = gitops("diff", *_args(namespace), "--prune", "-o", "json", cwd=repo, env=kube_env)
    assert d.returncode == 1
    assert [(o["action"], o["name"]) for o in json.loads(d.stdout)["items"]] == \
        [("unchanged", "keep"), ("prune", "drop")]


def test_external_diff(tmp_path: Path, git_env: dict, kube_env: dict, namespace: str) -> None:
    repo = _repo(tmp_path, docs(configmap("a")), namespace)
    script = tmp_path / "ext.sh"
    script.write_text("#!/bin/sh\nls \"$1\" > \"$OUT.live\"; ls \"$2\" > \"$OUT.merged\"; exit 1\n")
    script.chmod(0o755)
    env = {**kube_env, "KUBECTL_EXTERNAL_DIFF": str(script), "OUT": str(tmp_path / "out")}
    d = gitops("diff", *_args(namespace), cwd=repo, env=env)
    assert d.returncode == 1, d.stderr
    assert (tmp_path / "out.live").read_text() == ""
    assert (tmp_path / "out.merged").read_text().split() == [f"v1.ConfigMap.{namespace}.a"]


def test_errors_exit_2_without_traceback(tmp_path: Path, git_env: dict, kube_env: dict,
                                         namespace: str) -> None:
    repo = _repo(tmp_path, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [\n", namespace)
    bad = gitops("diff", *_args(namespace), cwd=repo, env=kube_env)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: deploy/all.yaml:")
    assert "Traceback" not in bad.stderr
    write(repo, "deploy/all.yaml", docs(configmap("a")))
    commit(repo, "fix")
    cfg = yaml.safe_load(Path(kube_env["KUBECONFIG"]).read_text())
    cfg["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(yaml.safe_dump(cfg))
    down = gitops("diff", *_args(namespace), "--kubeconfig", str(dead), cwd=repo, env=kube_env)
    assert down.returncode == 2
    assert down.stderr.count("\n") == 1 and "cannot reach the cluster at https://127.0.0.1:1" \
        in down.stderr


def test_forbidden_object_is_one_line(tmp_path: Path, git_env: dict, kube_env: dict,
                                      namespace: str) -> None:
    kubectl("create", "serviceaccount", "nobody", "-n", namespace, env=kube_env)
    token = kubectl("create", "token", "nobody", "-n", namespace, env=kube_env).stdout.strip()
    cfg = yaml.safe_load(Path(kube_env["KUBECONFIG"]).read_text())
    cfg["users"] = [{"name": "nobody", "user": {"token": token}}]
    cfg["contexts"][0]["context"]["user"] = "nobody"
    weak = tmp_path / "weak.kubeconfig"
    weak.write_text(yaml.safe_dump(cfg))
    repo = _repo(tmp_path, docs(configmap("a")), namespace)
    d = gitops("diff", *_args(namespace), "--kubeconfig", str(weak), cwd=repo, env=kube_env)
    assert d.returncode == 2
    assert "forbidden" in d.stderr and "Traceback" not in d.stderr
    assert len(d.stderr.strip().splitlines()) == 1


def test_oracle_matches_kubectl_diff(tmp_path: Path, git_env: dict, kube_env: dict,
                                     namespace: str) -> None:
    base = [configmap(f"same-{i}", {"v": "1"}) for i in range(3)] + \
        [configmap(f"change-{i}", {"v": "1"}) for i in range(3)] + [deployment("web", 1)]
    repo = _repo(tmp_path, docs(*base), namespace)
    assert gitops("sync", *_args(namespace), cwd=repo, env=kube_env).returncode == 0
    new = [configmap(f"same-{i}", {"v": "1"}) for i in range(3)] + \
        [configmap(f"change-{i}", {"v": "2"}) for i in range(3)] + \
        [deployment("web", 3), configmap("brand-new")]
    write(repo, "deploy/all.yaml", docs(*new))
    commit(repo, "changes")
    ours = gitops("diff", *_args(namespace), "-o", "json", cwd=repo, env=kube_env)
    assert ours.returncode == 1, ours.stderr
    our_set = {(o["kind"], o["name"]) for o in json.loads(ours.stdout)["items"]
               if o["action"] != "unchanged"}
    # kubectl's own manager, forcing: what git changes, not our bookkeeping.
    theirs = kubectl("diff", "--server-side", "--force-conflicts", "-n",
                     namespace, "-f", "deploy/all.yaml", env=kube_env, cwd=repo, check=False)
    assert theirs.returncode == 1, theirs.stderr
    their_set = set()
    for m in re.finditer(r"^diff -u -N \S+/(\S+) ", theirs.stdout, re.M):
        parts = m.group(1).split(".")
        their_set.add((parts[-3], parts[-1]))
    assert our_set == their_set
    assert our_set == {("ConfigMap", f"change-{i}") for i in range(3)} | \
        {("Deployment", "web"), ("ConfigMap", "brand-new")}
