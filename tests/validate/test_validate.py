"""``git gitops validate``: the corpus of bad manifests, each with the exact
lines it must produce (``tests/data/invalid/<case>.expected``), valid
real-world manifests, the schema compiler, the executable, and one
server-side dry-run against the real control plane.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from kubectl_gitops.errors import UsageError
from kubectl_gitops.kube import schema
from kubectl_gitops.source import tree
from kubectl_gitops.validate import checks
from kubectl_gitops.versions import KUBERNETES_VERSION
from testing.cli import cm, run
from testing.git import commit, git, make_repo, write

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[2]
INVALID = sorted(p.name for p in (DATA / "invalid").iterdir() if p.suffix != ".expected")
VALID = sorted(p.name for p in (DATA / "valid").iterdir())




@pytest.fixture
def repo(git_env: dict[str, str], tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")



def check_files(names: list[str], where: Path, monkeypatch: pytest.MonkeyPatch,
                **kw: object) -> checks.Result:
    monkeypatch.chdir(where)
    return checks.validate_files(names, checks.Options(**kw))  # type: ignore[arg-type]


# --- the pinned version ----------------------------------------------------------


def test_kubernetes_version_is_the_one_pinned_in_go_mod() -> None:
    go_mod = (ROOT / "tools" / "controlplane" / "go.mod").read_text()
    pinned = re.search(r"^require k8s\.io/kubernetes v(\S+)$", go_mod, re.M)
    assert pinned, "k8s.io/kubernetes is not required in tools/controlplane/go.mod"
    assert KUBERNETES_VERSION == pinned[1]


# --- the corpus ------------------------------------------------------------------


def test_the_corpus_covers_at_least_thirty_cases() -> None:
    assert len(INVALID) >= 30
    missing = [n for n in INVALID if not (DATA / "invalid" / f"{n}.expected").is_file()]
    assert not missing


@pytest.mark.parametrize("case", INVALID)
def test_invalid_manifest_reports_exactly_the_expected_lines(
        case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Copied out of this repository, so no .gitops.yaml here can skip it.
    shutil.copy(DATA / "invalid" / case, tmp_path / case)
    expected = (DATA / "invalid" / f"{case}.expected").read_text(encoding="utf-8").splitlines()
    result = check_files([case], tmp_path, monkeypatch)
    assert not result.valid
    assert [p.render() for p in result.problems] == expected


def test_valid_real_world_manifests_pass_as_files(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VALID:
        shutil.copy(DATA / "valid" / name, tmp_path / name)
    result = check_files(VALID, tmp_path, monkeypatch)
    assert [p.render() for p in result.problems] == []
    assert (result.files, result.objects) == (len(VALID), 32)


def test_valid_manifests_pass_from_the_index_and_from_a_commit(repo: Path) -> None:
    shutil.copytree(DATA / "valid", repo / "deploy")
    git(repo, "add", "deploy")
    staged = checks.validate_source(checks.staged_source(repo=str(repo)), checks.Options())
    assert (staged.valid, staged.objects, staged.source) == (True, 32, "index")
    commit(repo, "manifests")
    committed = checks.validate_source(tree.resolve(repo=repo), checks.Options())
    assert committed.valid and committed.objects == 32 and committed.source.startswith("git@")


def test_a_twenty_megabyte_file_is_refused_without_being_parsed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "huge.yaml"
    line = "  key-{:08d}: " + "x" * 80 + "\n"
    with big.open("w") as f:
        f.write(cm("huge", "data:\n"))
        for i in range(20 * 1024 * 1024 // 100):
            f.write(line.format(i))
    assert big.stat().st_size > 20_000_000
    result = check_files(["huge.yaml"], tmp_path, monkeypatch)
    [problem] = result.problems
    assert problem.line is None and problem.check == "syntax"
    assert re.fullmatch(r"huge\.yaml: file is 2\d\.\d MB, over the 8 MiB limit for a manifest "
                        r"file", problem.render())


@pytest.mark.parametrize("content", ["", "\n\n", "# nothing yet\n", "---\n---\n"])
def test_an_empty_file_is_valid_and_holds_no_objects(
        content: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty.yaml").write_text(content)
    result = check_files(["empty.yaml"], tmp_path, monkeypatch)
    assert (result.valid, result.files, result.objects) == (True, 1, 0)


def test_duplicate_identities_are_found_across_files(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.yaml").write_text(cm("same"))
    (tmp_path / "b.yaml").write_text(cm("same", "  namespace: default\n"))
    result = check_files(["a.yaml", "b.yaml"], tmp_path, monkeypatch)
    assert [p.render() for p in result.problems] == [
        "b.yaml:1: ConfigMap default/same: duplicate object, also defined at a.yaml:1"]


def test_a_custom_resource_finds_its_crd_in_another_file(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("crd.yaml", "crontab.yaml"):
        shutil.copy(DATA / "valid" / name, tmp_path / name)
    assert check_files(["crd.yaml", "crontab.yaml"], tmp_path, monkeypatch).valid
    alone = check_files(["crontab.yaml"], tmp_path, monkeypatch)
    assert [p.check for p in alone.problems] == ["missing-schema"]


def test_loose_files_find_crds_in_the_work_tree_of_their_repo(repo: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(DATA / "valid" / "crd.yaml", repo / "crd.yaml")
    shutil.copy(DATA / "valid" / "crontab.yaml", repo / "crontab.yaml")
    # What the pre-commit framework does when only the CR changed.
    result = check_files(["crontab.yaml"], repo, monkeypatch)
    assert result.valid and result.objects == 1


def test_ignore_missing_schemas_lets_unknown_kinds_pass_but_not_other_problems(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(DATA / "invalid" / "cr-without-crd.yaml", tmp_path / "cr.yaml")
    (tmp_path / "bad.yaml").write_text(cm("Bad"))
    result = check_files(["cr.yaml", "bad.yaml"], tmp_path, monkeypatch,
                         ignore_missing_schemas=True)
    assert [p.check for p in result.problems] == ["name"]


def test_the_kubernetes_version_picks_that_releases_schemas(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ValidatingAdmissionPolicy reached admissionregistration.k8s.io/v1 in 1.30.
    (tmp_path / "vap.yaml").write_text(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\n"
        "metadata:\n  name: replicas\nspec:\n  validations:\n"
        "  - expression: object.spec.replicas <= 5\n")
    new = check_files(["vap.yaml"], tmp_path, monkeypatch, kubernetes_version="1.30.4")
    old = check_files(["vap.yaml"], tmp_path, monkeypatch, kubernetes_version="v1.29")
    assert (new.valid, new.schemas) == (True, "1.30")
    assert old.schemas == "1.29"
    assert [p.check for p in old.problems] == ["missing-schema"]
    assert "Kubernetes 1.29 serves ValidatingAdmissionPolicy only as " \
        "admissionregistration.k8s.io/v1alpha1, admissionregistration.k8s.io/v1beta1;" \
        in old.problems[0].message


def test_service_names_follow_the_release(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # DNS-1035 labels until RelaxedServiceNameValidation (on by default in 1.36).
    (tmp_path / "svc.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata:\n"
                                       "  name: 8080-web\nspec:\n  ports:\n  - port: 80\n")
    assert check_files(["svc.yaml"], tmp_path, monkeypatch, kubernetes_version="1.36").valid
    old = check_files(["svc.yaml"], tmp_path, monkeypatch, kubernetes_version="1.35")
    assert [p.message for p in old.problems] == [
        'metadata.name: "8080-web" is not a valid DNS-1035 label (lowercase letters, digits '
        "and '-', starting with a letter and ending with a letter or digit)"]


@pytest.mark.parametrize("version", ["1.99", "1.10", "banana", "2"])
def test_a_kubernetes_version_without_schemas_is_a_usage_error(version: str) -> None:
    with pytest.raises(UsageError, match="--kubernetes-version|no schemas for Kubernetes"):
        schema.schema_dir(version)


def test_paths_with_control_characters_are_quoted_on_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = 'new\nline "q".yaml'
    (tmp_path / name).write_text(cm("Bad"))
    [problem] = check_files([name], tmp_path, monkeypatch).problems
    assert problem.render().startswith('"new\\nline \\"q\\".yaml":4: ConfigMap default/Bad: ')
    assert problem.to_json()["path"] == name


# --- the schema compiler, CRD dialect ------------------------------------------------


def crd_problems(openapi: dict[str, object], obj: dict[str, object]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    schema.crd_check(openapi, None)(obj, "", found)
    return found


def test_crd_schemas_are_strict_unless_they_keep_unknown_fields() -> None:
    spec = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "a": {"type": "string"},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "map": {"type": "object", "additionalProperties": {"type": "integer"}}}}}}
    obj = {"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "x"},
           "spec": {"a": "ok", "b": 1, "free": {"z": [1]}, "map": {"k": 1, "j": "no"}}}
    assert crd_problems(spec, obj) == [("spec.b", "unknown field"),
                                       ("spec.map[j]", 'expected integer, got string "no"')]
    assert crd_problems(spec, {**obj, "status": {}}) [-1] == ("status", "unknown field")


def test_crd_dialect_int_or_string_nullable_and_exclusive_bounds() -> None:
    spec = {"type": "object", "properties": {
        "port": {"x-kubernetes-int-or-string": True},
        "ratio": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1},
        "note": {"type": "string", "nullable": True},
        "emb": {"type": "object", "x-kubernetes-embedded-resource": True,
                "properties": {"spec": {"type": "object"}}}}}
    ok = {"port": "http", "ratio": 1, "note": None,
          "emb": {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {}}}
    assert crd_problems(spec, ok) == []
    assert crd_problems(spec, {"port": 1.5, "ratio": 0}) == [
        ("port", "expected integer or string, got number 1.5"),
        ("ratio", "must be > 0, got 0")]


def test_crd_combinators_and_list_types() -> None:
    spec = {"type": "object", "properties": {
        "one": {"type": "object", "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
                "properties": {"a": {"type": "string"}, "b": {"type": "string"}}},
        "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
        "ports": {"type": "array", "x-kubernetes-list-type": "map",
                  "x-kubernetes-list-map-keys": ["port"],
                  "items": {"type": "object", "properties": {"port": {"type": "integer"}}}}}}
    assert crd_problems(spec, {"one": {"a": "x"}, "tags": ["a", "b"],
                               "ports": [{"port": 1}, {"port": 2}]}) == []
    found = crd_problems(spec, {"one": {"a": "x", "b": "y"}, "tags": ["a", "a"],
                                "ports": [{"port": 1}, {"port": 1}]})
    assert [p for p, _ in found] == ["one", "tags[1]", "ports[1]"]
    assert "exactly one must match" in found[0][1]


def test_definitions_are_cached_without_descriptions(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _, directory = schema.schema_dir(KUBERNETES_VERSION)
    first = schema.definitions(directory)
    [cached] = (tmp_path / "cache" / "kubectl-gitops" / "schemas").iterdir()
    assert cached.name.startswith(directory.name) and cached.suffix == ".marshal"
    assert schema.definitions(directory) == first
    pc = first["io.k8s.api.scheduling.v1.PriorityClass"]
    assert "description" not in pc and "description" in pc["properties"]  # a field's name
    # A damaged or unwritable cache is only slower.
    cached.write_bytes(b"not marshal data")
    assert schema.definitions(directory) == first
    assert cached.read_bytes() != b"not marshal data"  # rewritten
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/no-such-dir")
    assert schema.definitions(directory) == first


def test_builtin_schemas_are_loaded_once_and_cached_per_kind() -> None:
    b = schema.BuiltinSchemas(KUBERNETES_VERSION)
    first = b.lookup("apps", "v1", "Deployment")
    assert first is not None and b.lookup("apps", "v1", "Deployment") is first
    assert b.lookup("apps.example.com", "v1", "Deployment") is None  # not the built-in one
    assert b.api_versions("CronJob") == ["batch/v1"]


# --- the executable ------------------------------------------------------------------


def test_cli_exit_status_and_one_line_per_problem(repo: Path, env: dict[str, str]) -> None:
    write(repo, "ok.yaml", cm("ok"))
    write(repo, "bad.yaml", cm("bad", "data:\n  num: 1\n"))
    ok = run(["git-gitops-validate", "ok.yaml"], repo, env)
    assert (ok.returncode, ok.stderr) == (0, "")
    assert ok.stdout == "valid: 1 object in 1 file (files, Kubernetes 1.37 schemas)\n"
    bad = run(["git-gitops-validate", "ok.yaml", "bad.yaml"], repo, env)
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == [
        "bad.yaml:6: ConfigMap default/bad: data[num]: expected string, got integer 1",
        "invalid: 1 problem in 2 objects in 2 files"]


def test_cli_json_output(repo: Path, env: dict[str, str]) -> None:
    write(repo, "deploy/bad.yaml", cm("bad", "data:\n  num: 1\n"))
    commit(repo, "bad")
    proc = run(["git", "gitops", "validate", "deploy", "-o", "json", "-n", "prod"], repo, env)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["valid"] is False and doc["source"].startswith("git@") and doc["path"] == "deploy"
    assert (doc["kubernetesVersion"], doc["schemas"]) == (KUBERNETES_VERSION, "1.37")
    assert doc["problems"] == [{"path": "deploy/bad.yaml", "line": 6,
                                "object": "ConfigMap prod/bad", "check": "schema",
                                "message": "data[num]: expected string, got integer 1"}]


def test_cli_staged_reads_the_index_not_the_work_tree(repo: Path, env: dict[str, str]) -> None:
    write(repo, "a.yaml", cm("Bad-Name"))
    git(repo, "add", "a.yaml")
    write(repo, "a.yaml", cm("good-name"))  # fixed, but not staged
    staged = run(["git", "gitops", "validate", "--staged"], repo, env)
    worktree = run(["git", "gitops", "validate", "--working-tree"], repo, env)
    assert staged.returncode == 1 and '"Bad-Name" is not a valid' in staged.stderr
    assert worktree.returncode == 0, worktree.stderr
    assert "(working-tree," in worktree.stdout


def test_cli_ref_validates_an_older_revision(repo: Path, env: dict[str, str]) -> None:
    write(repo, "a.yaml", cm("Bad"))
    bad = commit(repo, "bad")
    write(repo, "a.yaml", cm("good"))
    commit(repo, "good")
    assert run(["git-gitops-validate"], repo, env).returncode == 0
    old = run(["git-gitops-validate", "--ref", bad[:10]], repo, env)
    assert old.returncode == 1 and old.stderr.startswith("a.yaml:4: ConfigMap default/Bad:")


@pytest.mark.parametrize("args, message", [
    (["a.yaml", "--staged"], "cannot be combined with --path, --ref, --staged"),
    (["--kubernetes-version", "1.99"], "error: no schemas for Kubernetes 1.99"),
    (["--ref", "no-such-ref"], "error: no-such-ref: no such revision"),
    (["missing.yaml"], "error: missing.yaml: cannot read"),
])
def test_cli_errors_exit_2_with_one_line(args: list[str], message: str, repo: Path,
                                         env: dict[str, str]) -> None:
    write(repo, "a.yaml", cm("a"))
    commit(repo, "a")
    proc = run(["git-gitops-validate", *args], repo, env)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_hook_path_imports_neither_the_kubernetes_client_nor_gitpython(
        repo: Path, env: dict[str, str]) -> None:
    write(repo, "a.yaml", cm("a"))
    git(repo, "add", "a.yaml")
    code = ("import sys\n"
            "from kubectl_gitops.cli import validate as v\n"
            "assert v._hook('1.37', False) == 0\n"
            "print(sorted(m for m in ('kubernetes', 'git', 'jsonschema', 'urllib3')"
            " if m in sys.modules))\n")
    proc = run([sys.executable, "-c", code], repo, env)
    assert (proc.returncode, proc.stdout.strip()) == (0, "[]"), proc.stderr


def test_a_leaked_index_of_another_repository_is_ignored(repo: Path, tmp_path: Path) -> None:
    other = make_repo(tmp_path / "other")
    write(other, "x.yaml", cm("Bad"))
    git(other, "add", "x.yaml")
    write(repo, "a.yaml", cm("a"))
    git(repo, "add", "a.yaml")
    os.environ["GIT_INDEX_FILE"] = str(other / ".git" / "index")
    try:
        src = checks.staged_source(repo=str(repo))
        result = checks.validate_source(src, checks.Options())
    finally:
        del os.environ["GIT_INDEX_FILE"]
    assert src.index_file is None
    assert result.valid and result.objects == 1


# --- against the cluster ---------------------------------------------------------------


def test_cluster_dry_run_finds_what_only_the_server_knows(
        repo: Path, namespace: str, kube_env: dict[str, str], git_env: dict[str, str]) -> None:
    env = {**git_env, **{k: kube_env[k] for k in ("KUBECONFIG", "PATH")}}
    write(repo, "ok.yaml", cm("ok"))
    # Offline-valid, but the API server rejects a selector that does not
    # match the template's labels.
    write(repo, "deploy.yaml", """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: mismatch
spec:
  selector:
    matchLabels: {app: one}
  template:
    metadata:
      labels: {app: two}
    spec:
      containers:
      - {name: c, image: busybox:1.36}
""")
    # A namespace and its object that this revision creates: skipped.
    write(repo, "later.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "
          f"{namespace}-later\n---\n" + cm("cm", f"  namespace: {namespace}-later\n"))
    commit(repo, "manifests")
    offline = run(["git-gitops-validate"], repo, env)
    assert offline.returncode == 0, offline.stderr
    proc = run(["git-gitops-validate", "--cluster", "-n", namespace, "-o", "json"], repo, env)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    [problem] = doc["problems"]
    assert (problem["path"], problem["check"], problem["object"]) == \
        ("deploy.yaml", "cluster", f"Deployment {namespace}/mismatch")
    assert "selector" in problem["message"] and "does not match" in problem["message"]
    assert doc["cluster"] == {"checked": 3, "skipped": [f"ConfigMap {namespace}-later/cm"]}
