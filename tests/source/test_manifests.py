"""Manifest files to objects: documents, lines, Lists, kustomize, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubectl_gitops.errors import ManifestError, ManifestErrors
from kubectl_gitops.source import manifests, tree
from kubectl_gitops.source.manifests import MAX_EXPANDED_NODES, MAX_FILE_BYTES, parse_file
from testing.git import commit, git, make_repo, write


def cm(name: str, value: str = "v") -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: {value}\n"


def rendered(errors: list[ManifestError]) -> list[str]:
    return [e.render() for e in errors]


@pytest.fixture
def repo(git_env: dict[str, str], tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


# --- documents and lines -------------------------------------------------------------

MULTI = """\
# a leading comment
apiVersion: v1
kind: ConfigMap
metadata:
  name: one
---
apiVersion: v1
kind: ConfigMap
metadata: {name: two}
---
# document 3 is bad on its line 3 (file line 14)
apiVersion: v1
kind: ConfigMap
metadata: {name: [unclosed
data: {}
---
apiVersion: v1
kind: Secret
metadata:
  name: four
"""


def test_multi_document_file_keeps_lines_and_reports_the_bad_document() -> None:
    ms, es = parse_file("app/multi.yaml", MULTI.encode())
    assert [(m.kind, m.name, m.line) for m in ms] == [
        ("ConfigMap", "one", 2), ("ConfigMap", "two", 7), ("Secret", "four", 17)]
    assert len(es) == 1
    # libyaml notices the unclosed flow sequence on the following line.
    assert es[0].path == "app/multi.yaml" and es[0].line in (14, 15)
    assert es[0].render().startswith(f"app/multi.yaml:{es[0].line}: invalid YAML: ")


def test_lines_are_the_same_for_a_valid_file_and_one_with_a_bad_document() -> None:
    good, _ = parse_file("a.yaml", MULTI.replace("[unclosed", "three}").encode())
    bad, _ = parse_file("a.yaml", MULTI.encode())
    assert [(m.name, m.line) for m in good] == [("one", 2), ("two", 7), ("three", 12),
                                                ("four", 17)]
    assert [(m.name, m.line) for m in bad] == [("one", 2), ("two", 7), ("four", 17)]


@pytest.mark.parametrize(("text", "line", "message"), [
    ("kind: ConfigMap\nmetadata: {name: a}\n", 1, "missing required field apiVersion"),
    ("apiVersion: v1\nmetadata: {name: a}\n", 1, "missing required field kind"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", 1,
     "missing required field metadata.name"),
    ("apiVersion: v1\nkind: ConfigMap\n", 1, "missing required field metadata.name"),
    ("{}\n", 1, "missing required fields apiVersion, kind, metadata.name"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: [x]}\n", 1,
     "metadata.namespace must be a string"),
    ("- a\n- b\n", 1, "document is a list, not a Kubernetes object"),
    ("just a string\n", 1, "document is a str scalar, not a Kubernetes object"),
    (cm("a") + "---\n\n\napiVersion: v1\nkind: Secret\nmetadata: {}\n", 10,
     "missing required field metadata.name"),
])
def test_required_fields_are_reported_at_the_document(text: str, line: int,
                                                      message: str) -> None:
    ms, es = parse_file("x.yaml", text.encode())
    assert rendered(es) == [f"x.yaml:{line}: {message}" + (
        " (expected a mapping with apiVersion, kind, metadata)" if "document is" in message
        else "")]


def test_empty_and_comment_only_documents_are_skipped() -> None:
    text = "---\n---\n# just a comment\n---\n" + cm("a") + "---\n...\n---\n"
    ms, es = parse_file("x.yaml", text.encode())
    assert es == [] and [(m.name, m.line) for m in ms] == [("a", 5)]
    assert parse_file("empty.yaml", b"") == ([], [])
    assert parse_file("empty.json", b"  \n") == ([], [])


def test_plain_values_read_as_kubectl_reads_them() -> None:
    text = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
            "data: {date: 2024-01-31, when: 2024-01-31T10:00:00Z, port: 8080, hex: 0x1F,\n"
            "       ratio: 0.5, enabled: on, disabled: no, nothing: ~, quoted: '8080'}\n")
    [m], es = parse_file("x.yaml", text.encode())
    assert es == []
    # Timestamps stay strings (kubectl's YAML reader does the same), so the
    # object is always JSON.
    assert m.obj["data"] == {"date": "2024-01-31", "when": "2024-01-31T10:00:00Z",
                             "port": 8080, "hex": 31, "ratio": 0.5, "enabled": True,
                             "disabled": False, "nothing": None, "quoted": "8080"}
    json.dumps(m.obj)


def test_anchors_aliases_and_merge_keys_give_independent_copies() -> None:
    text = ("apiVersion: apps/v1\nkind: Deployment\n"
            "metadata: &meta {name: web, labels: &labels {app: web}}\n"
            "spec:\n  selector: {matchLabels: *labels}\n"
            "  template:\n    metadata: {<<: *meta, annotations: {a: b}}\n")
    [m], es = parse_file("x.yaml", text.encode())
    assert es == []
    spec = m.obj["spec"]
    assert spec["selector"]["matchLabels"] == {"app": "web"}
    assert spec["template"]["metadata"] == {"name": "web", "labels": {"app": "web"},
                                            "annotations": {"a": "b"}}
    # Setting the namespace on the object must not leak into its template.
    m.obj["metadata"]["namespace"] = "ns"
    m.obj["metadata"]["labels"]["extra"] = "x"
    assert "namespace" not in spec["template"]["metadata"]
    assert spec["selector"]["matchLabels"] == {"app": "web"}


# --- Lists ----------------------------------------------------------------------------


def test_list_kinds_are_expanded_with_the_list_s_line() -> None:
    items = [json.loads(json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"name": n}})) for n in ("a", "b")]
    text = "# comment\n" + json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    ms, es = parse_file("list.yaml", f"{cm('first')}---\n{text}\n".encode())
    assert es == []
    assert [(m.name, m.line) for m in ms] == [("first", 1), ("a", 9), ("b", 9)]
    typed = {"apiVersion": "v1", "kind": "ConfigMapList", "items": items}
    ms, _ = parse_file("typed.json", json.dumps(typed).encode())
    assert [m.name for m in ms] == ["a", "b"]


def test_a_bad_item_in_a_list_is_an_error_and_the_rest_still_count() -> None:
    text = ("apiVersion: v1\nkind: List\nitems:\n"
            "  - {apiVersion: v1, kind: ConfigMap, metadata: {name: ok}}\n"
            "  - {apiVersion: v1, kind: ConfigMap}\n")
    ms, es = parse_file("l.yaml", text.encode())
    assert [m.name for m in ms] == ["ok"]
    assert rendered(es) == ["l.yaml:1: missing required field metadata.name"]


def test_a_custom_kind_ending_in_list_with_items_is_not_expanded() -> None:
    text = ("apiVersion: example.com/v1\nkind: AllowList\nmetadata: {name: a}\n"
            "items: [x, y]\n")
    [m], es = parse_file("x.yaml", text.encode())
    assert es == [] and m.kind == "AllowList"


# --- JSON -----------------------------------------------------------------------------


def test_json_files() -> None:
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "j"}}
    [m], es = parse_file("a.json", json.dumps(doc, indent=2).encode())
    assert es == [] and m.name == "j" and m.line == 1
    ms, es = parse_file("bad.json", b'{\n  "apiVersion": "v1",\n  "kind": ,\n}\n')
    assert ms == [] and rendered(es) == ["bad.json:3: invalid JSON: Expecting value at column 11"]


def test_deeply_nested_input_is_an_error_not_a_crash() -> None:
    ms, es = parse_file("deep.json", b"[" * 100_000 + b"]" * 100_000)
    assert ms == [] and len(es) == 1 and "nested too deeply" in es[0].render()
    ms, es = parse_file("deep.yaml", b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n")
    assert ms == [] and len(es) == 1 and es[0].render().startswith("deep.yaml:1: ")


# --- hostile and broken input ---------------------------------------------------------


def test_non_utf8_is_an_error_naming_the_line() -> None:
    data = cm("a").encode() + b"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: caf\xe9}\n"
    ms, es = parse_file("latin1.yaml", data)
    assert ms == []
    assert rendered(es) == [f"latin1.yaml:10: not valid UTF-8 (byte 0xe9 at offset "
                            f"{data.index(0xe9)}); save the file as UTF-8"]


def test_a_utf8_byte_order_mark_is_accepted() -> None:
    [m], es = parse_file("bom.yaml", b"\xef\xbb\xbf" + cm("a").encode())
    assert es == [] and m.name == "a"


def test_binary_files_are_refused() -> None:
    png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256))
    ms, es = parse_file("logo.yaml", png)
    assert ms == [] and rendered(es) == ["logo.yaml: binary file (contains NUL bytes), "
                                         "not YAML or JSON"]


BILLION_LAUGHS = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: lol}
data:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_a_yaml_alias_bomb_is_refused_with_a_clear_error() -> None:
    text = cm("before") + "---\n" + BILLION_LAUGHS + "---\n" + cm("after")
    ms, es = parse_file("bomb.yaml", text.encode())
    assert [m.name for m in ms] == ["before", "after"]
    assert rendered(es) == [f"bomb.yaml:8: YAML aliases expand to more than "
                            f"{MAX_EXPANDED_NODES:,} nodes (an alias bomb?); "
                            "write the values out instead"]


def test_a_self_referencing_alias_is_refused() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: &m {name: a, again: [*m]}\n"
    ms, es = parse_file("loop.yaml", text.encode())
    assert ms == [] and len(es) == 1
    assert es[0].render().startswith("loop.yaml:1: YAML alias refers to a node that contains it")


def test_an_oversized_file_is_refused_without_parsing() -> None:
    data = cm("big").encode() + b"# " + b"x" * MAX_FILE_BYTES + b"\n"
    ms, es = parse_file("big.yaml", data)
    assert ms == [] and len(es) == 1
    assert es[0].render() == ("big.yaml: file is 8.4 MB, over the 8 MiB limit for a "
                              "manifest file")


@pytest.mark.parametrize(("value", "problem"), [
    ("!!python/object/apply:os.system ['touch /tmp/pwned']",
     "unsupported YAML tag !!python/object/apply:os.system on a sequence"),
    ("!!binary aGVsbG8=", "unsupported YAML tag !!binary on a scalar"),
    ("!!set {a, b}", "unsupported YAML tag !!set on a mapping"),
    ("!Ref something", "unsupported YAML tag !Ref on a scalar"),
    ("!!int twelve", "cannot read the value as !!int"),
])
def test_only_plain_data_is_loaded(value: str, problem: str) -> None:
    text = f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\ndata:\n  x: {value}\n"
    ms, es = parse_file("tags.yaml", text.encode())
    assert ms == [] and len(es) == 1
    assert es[0].render().startswith(f"tags.yaml:5: invalid YAML: {problem}")


def test_every_error_of_a_read_is_reported_together(repo: Path) -> None:
    write(repo, "a/bad.yaml", cm("ok1") + "---\nkind: ConfigMap\nmetadata: {name: x}\n")
    write(repo, "b/broken.yaml", "apiVersion: v1\nkind: [\n")
    write(repo, "c/good.yaml", cm("ok2"))
    write(repo, "d/bin.yml", b"\0\1\2")
    write(repo, "e/x.json", "{")
    commit(repo)
    src = tree.resolve(repo=repo)
    ms, es = manifests.read(src)
    assert [m.name for m in ms] == ["ok1", "ok2"]
    assert [(e.path, e.line) for e in es] == [("a/bad.yaml", 8), ("b/broken.yaml", 3),
                                              ("d/bin.yml", None), ("e/x.json", 1)]
    with pytest.raises(ManifestErrors) as info:
        manifests.load(src)
    assert info.value.lines() == rendered(es)
    assert len(info.value.lines()) == 4


# --- kustomize ------------------------------------------------------------------------

BASE_DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: "nginx:{tag}"}}]
"""


def kustomize_repo(repo: Path, *, tag: str) -> None:
    write(repo, "base/kustomization.yaml", "resources: [deploy.yaml, cm.yaml]\n")
    write(repo, "base/deploy.yaml", BASE_DEPLOY.format(replicas=1, tag=tag))
    write(repo, "base/cm.yaml", cm("settings", f"tag-{tag}"))
    write(repo, "overlays/prod/kustomization.yaml",
          "namespace: prod\nnamePrefix: prod-\nresources: [../../base]\n"
          "patches:\n  - path: replicas.yaml\n"
          "configMapGenerator:\n  - name: extra\n    files: [extra.properties]\n")
    # A partial object: read on its own it would be an error.
    write(repo, "overlays/prod/replicas.yaml",
          "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 3}\n")
    write(repo, "overlays/prod/extra.properties", f"tag={tag}\n")


def test_kustomize_directory_with_a_base_outside_the_path_at_an_older_commit(
        repo: Path) -> None:
    kustomize_repo(repo, tag="1.0")
    # export-ignore must not hide files from the render (git archive would).
    write(repo, ".gitattributes", "base/** export-ignore\n")
    commit(repo, "one")
    kustomize_repo(repo, tag="2.0")
    commit(repo, "two")
    kustomize_repo(repo, tag="3.0-dirty")
    (repo / "base" / "cm.yaml").unlink()
    src = tree.resolve(repo=repo, ref="HEAD~1", path="overlays/prod")
    ms, es = manifests.read(src)
    assert es == []
    by_name = {m.name: m for m in ms}
    assert len(by_name) == 3 and {"prod-settings", "prod-web"} < set(by_name)
    deploy = by_name["prod-web"]
    assert deploy.namespace == "prod"
    assert deploy.obj["spec"]["replicas"] == 3
    assert deploy.obj["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.0"
    assert by_name["prod-settings"].obj["data"] == {"key": "tag-1.0"}
    extra = next(m for n, m in by_name.items() if n.startswith("prod-extra-"))
    assert extra.obj["data"] == {"extra.properties": "tag=1.0\n"}
    # Every object names the kustomization it came from, without a line.
    assert {(m.path, m.line, m.location) for m in ms} == {
        ("overlays/prod/kustomization.yaml", 0, "overlays/prod/kustomization.yaml")}


@pytest.mark.parametrize("kw", [{"working_tree": True}, {"staged": True}],
                         ids=["worktree", "index"])
def test_kustomize_in_working_tree_and_index_modes(repo: Path, kw: dict[str, bool]) -> None:
    kustomize_repo(repo, tag="committed")
    commit(repo)
    kustomize_repo(repo, tag="staged")
    git(repo, "add", "-A")
    kustomize_repo(repo, tag="worktree")
    ms = manifests.load(tree.resolve(repo=repo, path="overlays/prod", **kw))
    want = "worktree" if "working_tree" in kw else "staged"
    assert {m.name: m.obj.get("data") for m in ms}["prod-settings"] == {"key": f"tag-{want}"}


def test_nested_kustomizations_render_once_from_the_top(repo: Path) -> None:
    kustomize_repo(repo, tag="1")
    write(repo, "kustomization.yaml", "resources: [overlays/prod]\n")
    write(repo, "lone.yaml", cm("not-listed"))
    commit(repo)
    ms = manifests.load(tree.resolve(repo=repo))
    assert sorted(m.name for m in ms if not m.name.startswith("prod-extra-")) == \
        ["prod-settings", "prod-web"]
    assert {m.path for m in ms} == {"kustomization.yaml"}


def test_a_broken_kustomization_is_one_error_at_its_file(repo: Path) -> None:
    write(repo, "app/kustomization.yml", "resources: [missing.yaml]\n")
    write(repo, "other.yaml", cm("other"))
    commit(repo)
    ms, es = manifests.read(tree.resolve(repo=repo))
    assert [m.name for m in ms] == ["other"]
    assert len(es) == 1 and es[0].path == "app/kustomization.yml" and es[0].line is None
    assert es[0].render().startswith("app/kustomization.yml: kustomize: ")
    assert "missing.yaml" in es[0].render()
    assert str(repo) not in es[0].render() and "/tmp" not in es[0].render()
