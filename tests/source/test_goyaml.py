"""Manifests read as kubectl reads them (sigs.k8s.io/yaml, go-yaml v2 rules).

The unit tests pin go-yaml v2's resolution (resolve.go: its word table, then
strconv.ParseInt(s, 0, 64), ParseUint, the yamlStyleFloat pattern) and the
JSON trip kubectl makes; the cluster test asks the real kubectl for its
reading of the same file and compares it with ours.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from kubectl_gitops.source import goyaml
from kubectl_gitops.source.manifests import parse_file, repeated_key_errors
from testing.git import commit, make_repo, write
from testing.kube import gitops, kubectl

# text: (what kubectl reads, what PyYAML's YAML 1.1 reads when that differs)
CASES = {
    "y": True, "Y": True, "n": False, "N": False, "yes": True, "No": False, "on": True,
    "OFF": False, "true": True, "~": None, "null": None, "1e3": 1000, "1.0e3": 1000,
    "1.5e3": 1500, "0o17": 15, "0O17": 15, "0X1F": 31, "0x1f": 31, "017": 15, "08": 8,
    "0b101": 5, "-0x10": -16, "1_000": 1000, "+12": 12, ".5": 0.5, "1.0": 1, "1.": 1,
    "1:30": "1:30", "=": "=", "2024-01-02": "2024-01-02", "12abc": "12abc", "-": "-",
    ".": ".", "0.1.2": "0.1.2", "99999999999999999999": 1e20, "1e400": math.inf,
}


@pytest.mark.parametrize("text", sorted(CASES))
def test_plain_scalars_resolve_as_go_yaml_v2(text: str) -> None:
    got = goyaml.resolve(text)[1]
    want = CASES[text]
    assert got == want and type(got) is type(want), (text, got)


def test_a_document_reads_as_kubectl_reads_it() -> None:
    text = ("apiVersion: example.com/v1\nkind: Thing\nmetadata: {name: t}\n"
            "spec:\n  flags: [y, n, on, 'y']\n  numbers: [1e3, 0o17, 08, 1.0]\n"
            "  strings: [1:30, =, 2024-01-02]\n  enum: [<, '>', =]\n  y: key\n  1.0e3: float key\n")
    [m], errors = parse_file("t.yaml", text.encode())
    assert not errors
    assert m.obj["spec"] == {"flags": [True, False, True, "y"], "numbers": [1000, 15, 8, 1],
                             "strings": ["1:30", "=", "2024-01-02"], "enum": ["<", ">", "="],
                             "true": "key", "1000": "float key"}
    # Where a YAML 1.1 reader disagrees, the file:line is kept for validate.
    lines = sorted({line for line, _ in m.go_meanings})
    assert lines == [5, 6, 7, 9, 10]
    [msg] = {msg for line, msg in m.go_meanings if line == 7}
    assert msg == ("plain scalar 1:30 means the string '1:30' to kubectl (go-yaml) but a "
                   "number to YAML 1.1 readers; quote it if you mean a string")


def test_a_typed_list_of_any_group_is_expanded() -> None:
    # The shape kube-prometheus ships (manifests/*RoleBindingConfig.yaml).
    text = """apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBindingList
items:
- apiVersion: rbac.authorization.k8s.io/v1
  kind: RoleBinding
  metadata: {name: prometheus-k8s, namespace: default}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: prometheus-k8s}
  subjects: [{kind: ServiceAccount, name: prometheus-k8s, namespace: monitoring}]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: RoleBinding
  metadata: {name: prometheus-k8s, namespace: kube-system}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: prometheus-k8s}
  subjects: [{kind: ServiceAccount, name: prometheus-k8s, namespace: monitoring}]
"""
    ms, errors = parse_file("rb.yaml", text.encode())
    assert not errors
    assert [(m.kind, m.namespace) for m in ms] == [("RoleBinding", "default"),
                                                   ("RoleBinding", "kube-system")]


def test_a_repeated_key_is_an_error_for_diff_and_sync() -> None:
    text = ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: one\n"
            "  k: two\n---\n"
            "base: &b {x: 1}\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n"
            "data:\n  <<: *b\n  x: '2'\n")
    ms, errors = parse_file("dup.yaml", text.encode())
    assert not errors
    assert [e.render() for e in repeated_key_errors(ms)] == [
        'dup.yaml:7: ConfigMap a: duplicate key "k": kubectl refuses a mapping that repeats '
        "a key; keep one"]  # a key merged in with << may be overridden


def test_generate_name_is_refused_with_a_hint() -> None:
    text = "apiVersion: batch/v1\nkind: Job\nmetadata: {generateName: migrate-}\n"
    _, [error] = parse_file("job.yaml", text.encode())
    assert error.render() == ("job.yaml:1: metadata.generateName without metadata.name: "
                              "apply cannot use generateName; give it a name (or make it a "
                              "hook, which is created)")


@pytest.mark.parametrize("annotation", ["kubectl-gitops.io/hook", "argocd.argoproj.io/hook"])
def test_a_hook_may_have_only_generate_name(annotation: str) -> None:
    text = ("apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: migrate-\n"
            f"  annotations: {{{annotation}: PreSync}}\n")
    [m], errors = parse_file("job.yaml", text.encode())
    assert not errors and (m.name, str(m)) == ("", "Job migrate-*")


def _validate(tmp_path: Path, git_env: dict, name: str, text: str) -> Any:
    """``git-gitops-validate NAME`` on one file in a fresh repository."""
    from testing.cli import BIN, run

    repo = make_repo(tmp_path / "repo")
    write(repo, name, text)
    return run(["git-gitops-validate", name], repo, {**git_env,
                                                     "PATH": f"{BIN}:{git_env['PATH']}"})


def test_validate_says_where_readings_differ(git_env: dict, tmp_path: Path) -> None:
    proc = _validate(tmp_path, git_env, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\n"
                     "metadata: {name: a}\ndata:\n  answer: 'y'\n  flag: n\n")
    assert proc.returncode == 1
    assert sorted(proc.stderr.splitlines()[:2]) == [
        "cm.yaml:6: ConfigMap default/a: data[flag]: expected string, got boolean false",
        "cm.yaml:6: ConfigMap default/a: plain scalar n means the boolean false to kubectl "
        "(go-yaml) but the string 'n' to YAML 1.1 readers; quote it if you mean a string"]


# The CRD is written as YAML with the enum prometheus-operator's
# AlertmanagerConfig CRD has for matchType (a plain `=` and `=~` among quoted
# ones), which PyYAML tags !!value.
CRD_YAML = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: things.GROUP}
spec:
  group: GROUP
  scope: Namespaced
  names: {kind: Thing, plural: things, singular: thing}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
            properties:
              matchType:
                type: string
                enum:
                - '!='
                - =
                - =~
                - '!~'
"""

ROLE_BINDINGS = """apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBindingList
items:
- apiVersion: rbac.authorization.k8s.io/v1
  kind: RoleBinding
  metadata: {name: prometheus-k8s-config}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: prometheus-k8s-config}
  subjects: [{kind: ServiceAccount, name: prometheus-k8s, namespace: monitoring}]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: RoleBinding
  metadata: {name: prometheus-k8s}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: prometheus-k8s}
  subjects: [{kind: ServiceAccount, name: prometheus-k8s, namespace: monitoring}]
"""


def test_kubectl_reads_the_file_as_we_do(tmp_path: Path, git_env: dict, kube_env: dict,
                                         namespace: str) -> None:
    # The real kubectl is the oracle: a custom resource that keeps any JSON
    # is created by sync and by `kubectl apply` from the same text; the two
    # stored specs must be equal, and diff must then see no difference.
    group = f"{namespace}.yaml.example.com"
    body = ("spec:\n  matchType: =\n  flags: [y, n, on, off, 'y']\n"
            "  numbers: [1e3, 0o17, 08, 1.0, 0X1F]\n  strings: [1:30, =, 2024-01-02]\n"
            "  y: key\n")
    thing = f"apiVersion: {group}/v1\nkind: Thing\nmetadata:\n  name: NAME\n{body}"
    repo = make_repo(tmp_path / "repo")
    write(repo, "deploy/crd.yaml", CRD_YAML.replace("GROUP", group))
    write(repo, "deploy/thing.yaml", thing.replace("NAME", "by-us"))
    write(repo, "deploy/rbac.yaml", ROLE_BINDINGS)
    commit(repo)
    r = gitops("sync", "deploy", "-n", namespace, "--name", "app", cwd=repo, env=kube_env)
    assert r.returncode == 0, r.stderr
    by_kubectl = tmp_path / "thing.yaml"
    by_kubectl.write_text(thing.replace("NAME", "by-kubectl"))
    kubectl("apply", "--server-side", "-n", namespace, "-f", str(by_kubectl), env=kube_env)
    specs = [json.loads(kubectl("get", f"things.{group}", name, "-n", namespace, "-o", "json",
                                env=kube_env).stdout)["spec"] for name in ("by-kubectl", "by-us")]
    assert specs[0] == specs[1]
    assert specs[1]["flags"] == [True, False, True, False, "y"] and "true" in specs[1]
    assert specs[1]["matchType"] == "="
    bindings = json.loads(kubectl("get", "rolebindings", "-n", namespace, "-o", "json",
                                  env=kube_env).stdout)["items"]
    assert sorted(b["metadata"]["name"] for b in bindings) == ["prometheus-k8s",
                                                               "prometheus-k8s-config"]
    d = gitops("diff", "deploy", "-n", namespace, "--name", "app", cwd=repo, env=kube_env)
    assert d.returncode == 0, d.stdout + d.stderr
    kubectl("delete", "crd", f"things.{group}", "--wait=false", env=kube_env)


def test_a_repeated_key_refuses_sync(tmp_path: Path, git_env: dict, kube_env: dict,
                                     namespace: str) -> None:
    repo = make_repo(tmp_path / "repo")
    write(repo, "deploy/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"
          "data:\n  mode: calm\n  mode: wild\n")
    commit(repo)
    for sub in ("diff", "sync"):
        r = gitops(sub, "deploy", "-n", namespace, "--name", "app", cwd=repo, env=kube_env)
        assert (r.returncode, r.stderr.strip()) == (
            2, f'error: deploy/cm.yaml:7: ConfigMap {namespace}/a: duplicate key "mode": '
            "kubectl refuses a mapping that repeats a key; keep one"), r.stderr
    assert kubectl("get", "configmap", "a", "-n", namespace, env=kube_env,
                   check=False).returncode != 0


def test_validate_names_no_secret_value(git_env: dict, tmp_path: Path) -> None:
    proc = _validate(tmp_path, git_env, "s.yaml", "apiVersion: v1\nkind: Secret\n"
                     "metadata: {name: s}\nstringData:\n  pin: 0o7531\n")
    assert proc.returncode == 1
    assert "7531" not in proc.stdout + proc.stderr and "3929" not in proc.stderr
    assert "s.yaml:5: Secret default/s: a plain scalar here means one thing to kubectl" \
        in proc.stderr
