"""Identity and scope offline: namespaces, duplicates, unknown kinds, CRDs in the tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubectl_gitops.engine import desired
from kubectl_gitops.engine.desired import crd_types, object_id, offline_mapper, resolve
from kubectl_gitops.errors import ManifestErrors
from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.kubeconfig import Overrides
from kubectl_gitops.kube.resources import Mapper, ObjectId, ResourceType
from kubectl_gitops.source import tree
from kubectl_gitops.source.manifests import Manifest, parse_file
from testing.git import commit, make_repo, write
from testing.kube import obj, scoped_crd


def parse(path: str, text: str) -> list[Manifest]:
    ms, es = parse_file(path, text.encode())
    assert es == []
    return ms


def messages(info: pytest.ExceptionInfo[ManifestErrors]) -> list[str]:
    return info.value.lines()


@pytest.fixture
def repo(git_env: dict[str, str], tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


# --- identity -------------------------------------------------------------------------


def test_identity_is_group_kind_namespace_name_without_version() -> None:
    [a] = parse("a.yaml", obj("apps/v1", "Deployment", "web", "shop"))
    [b] = parse("b.yaml", obj("apps/v1beta2", "Deployment", "web", "shop"))
    [c] = parse("c.yaml", obj("v1", "Namespace", "shop"))
    assert object_id(a) == object_id(b) == ObjectId("apps", "Deployment", "shop", "web")
    assert str(object_id(a)) == "Deployment shop/web"
    assert object_id(a).group_kind == "Deployment.apps"
    assert object_id(c) == ObjectId("", "Namespace", "", "shop")
    assert (str(object_id(c)), object_id(c).group_kind) == ("Namespace shop", "Namespace")


def test_duplicates_across_files_name_both_locations() -> None:
    ms = parse("a/one.yaml", "# x\n" + obj("apps/v1", "Deployment", "web", "shop"))
    ms += parse("b/two.yaml", obj("v1", "ConfigMap", "c") + "---\n"
                + obj("apps/v1beta2", "Deployment", "web"))  # gets namespace shop below
    out, errors = resolve(ms, offline_mapper(ms), "shop")
    assert [str(object_id(m)) for m in out] == ["Deployment shop/web", "ConfigMap shop/c"]
    assert [e.render() for e in errors] == [
        "b/two.yaml:6: Deployment shop/web: duplicate object, also defined at a/one.yaml:2"]


def test_same_name_in_other_namespaces_or_kinds_is_no_duplicate() -> None:
    ms = parse("a.yaml", "---\n".join([
        obj("v1", "ConfigMap", "x", "a"), obj("v1", "ConfigMap", "x", "b"),
        obj("v1", "Secret", "x", "a"), obj("rbac.authorization.k8s.io/v1", "Role", "x", "a"),
        obj("example.com/v1", "Role", "x", "a")]))
    mapper = Mapper({**offline_mapper().types,
                     ("example.com", "Role"): ResourceType("example.com", "Role", True)})
    out, errors = resolve(ms, mapper, "default")
    assert errors == [] and len(out) == 5


# --- namespaces -----------------------------------------------------------------------


def test_namespaced_objects_get_the_default_and_cluster_scoped_ones_none() -> None:
    ms = parse("a.yaml", "---\n".join([
        obj("v1", "ConfigMap", "plain"), obj("v1", "ConfigMap", "mine", "explicit"),
        obj("rbac.authorization.k8s.io/v1", "ClusterRole", "reader"),
        obj("v1", "Namespace", "empty-ns") + "  namespace: ''\n"]))
    out, errors = resolve(ms, offline_mapper(ms), "fallback")
    assert errors == []
    assert [(m.name, m.obj["metadata"].get("namespace")) for m in out] == [
        ("plain", "fallback"), ("mine", "explicit"), ("reader", None), ("empty-ns", None)]


def test_a_cluster_scoped_object_with_a_namespace_is_an_error() -> None:
    ms = parse("rbac.yaml", obj("v1", "ConfigMap", "ok") + "---\n"
               + obj("rbac.authorization.k8s.io/v1", "ClusterRole", "reader", "shop"))
    out, errors = resolve(ms, offline_mapper(ms), "default")
    assert [m.name for m in out] == ["ok"]
    assert [e.render() for e in errors] == [
        "rbac.yaml:6: ClusterRole shop/reader: ClusterRole is cluster-scoped but has "
        "metadata.namespace; remove it"]


def test_namespace_default_order(repo: Path, tmp_path: Path) -> None:
    write(repo, "cm.yaml", obj("v1", "ConfigMap", "cm"))
    commit(repo)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("""\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts:
  - {name: with-ns, context: {cluster: c, user: u, namespace: from-context}}
  - {name: without-ns, context: {cluster: c, user: u}}
current-context: with-ns
""")
    with_ns = Kube(Overrides(kubeconfig=str(kubeconfig)))
    without_ns = Kube(Overrides(kubeconfig=str(kubeconfig), context="without-ns"))
    plain = tree.resolve(repo=repo)
    # 4. nothing given anywhere: "default"
    assert desired.default_namespace(plain, None, None) == "default"
    assert desired.default_namespace(plain, None, without_ns) == "default"
    # 3. the kubeconfig context's namespace
    assert desired.default_namespace(plain, None, with_ns) == "from-context"
    # 2. .gitops.yaml beats the context
    write(repo, ".gitops.yaml", "namespace: from-config\n")
    # ... read from the same place as the manifests: uncommitted, it is not at HEAD yet.
    assert tree.resolve(repo=repo).namespace is None
    assert tree.resolve(repo=repo, working_tree=True).namespace == "from-config"
    commit(repo, "config")
    configured = tree.resolve(repo=repo)
    assert desired.default_namespace(configured, None, with_ns) == "from-config"
    # 1. --namespace beats everything, whether given to resolve() or to load()
    assert desired.default_namespace(configured, "from-flag", with_ns) == "from-flag"
    assert desired.default_namespace(tree.resolve(repo=repo, namespace="from-flag"),
                                     None, with_ns) == "from-flag"
    # And what load() fills in (offline: no context).
    assert [m.namespace for m in desired.load(plain)] == ["default"]
    assert [m.namespace for m in desired.load(configured)] == ["from-config"]
    assert [m.namespace for m in desired.load(configured, namespace="from-flag")] == \
        ["from-flag"]


# --- kinds ----------------------------------------------------------------------------


def test_an_unknown_kind_is_an_error_at_its_location() -> None:
    ms = parse("x.yaml", obj("v1", "ConfigMap", "ok") + "---\n"
               + obj("example.com/v1", "Widget", "w", "shop"))
    out, errors = resolve(ms, offline_mapper(ms), "default")
    assert [m.name for m in out] == ["ok"]
    assert [e.render() for e in errors] == [
        "x.yaml:6: Widget shop/w: unknown kind Widget in example.com/v1: no such resource "
        "type in the cluster and no CRD for it in this revision"]
    out, errors = resolve(ms, offline_mapper(ms), "default", unknown_kinds_ok=True)
    assert errors == [] and [str(object_id(m)) for m in out] == ["ConfigMap default/ok",
                                                                  "Widget shop/w"]


def test_crd_kinds_in_the_same_tree_are_known_offline() -> None:
    ms = parse("crds.yaml", scoped_crd("example.com", "Widget", "widgets", "Namespaced") + "---\n"
               + scoped_crd("example.com", "Gadget", "gadgets", "Cluster"))
    ms += parse("crs.yaml", "---\n".join([
        obj("example.com/v1", "Widget", "w"), obj("example.com/v1", "Gadget", "g"),
        obj("example.com/v1", "Gadget", "bad", "shop")]))
    types = crd_types(ms)
    assert types[("example.com", "Widget")] == ResourceType("example.com", "Widget", True,
                                                            "widgets", "v1")
    assert types[("example.com", "Gadget")].namespaced is False
    out, errors = resolve(ms, offline_mapper(ms), "apps")
    assert [str(object_id(m)) for m in out] == [
        "CustomResourceDefinition widgets.example.com",
        "CustomResourceDefinition gadgets.example.com", "Widget apps/w", "Gadget g"]
    assert [e.render() for e in errors] == [
        "crs.yaml:11: Gadget shop/bad: Gadget is cluster-scoped but has metadata.namespace; "
        "remove it"]


def test_the_cluster_s_knowledge_wins_over_a_crd_in_the_tree() -> None:
    ms = parse("crd.yaml", scoped_crd("example.com", "Widget", "widgets", "Cluster"))
    served = ResourceType("example.com", "Widget", True, "widgets", "v2")
    mapper = Mapper({("example.com", "Widget"): served}).with_types(crd_types(ms))
    assert mapper.lookup("example.com", "Widget") == served


def test_a_malformed_crd_defines_nothing() -> None:
    ms = parse("crd.yaml", "apiVersion: apiextensions.k8s.io/v1\n"
               "kind: CustomResourceDefinition\nmetadata: {name: broken}\nspec: {names: {}}\n")
    assert crd_types(ms) == {}


def test_load_reports_parse_and_identity_errors_together_in_path_order(repo: Path) -> None:
    write(repo, "a.yaml", obj("v1", "ConfigMap", "dup"))
    write(repo, "b.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [\n")
    write(repo, "c.yaml", obj("v1", "ConfigMap", "dup", "default"))
    write(repo, "d.yaml", obj("example.com/v1", "Widget", "w"))
    write(repo, "e.yaml", obj("v1", "Namespace", "ns", "x"))
    commit(repo)
    with pytest.raises(ManifestErrors) as info:
        desired.load(tree.resolve(repo=repo))
    lines = messages(info)
    assert [line.split(":")[0] for line in lines] == ["b.yaml", "c.yaml", "d.yaml", "e.yaml"]
    assert "duplicate object, also defined at a.yaml:1" in lines[1]
    assert "unknown kind Widget" in lines[2]
    assert "cluster-scoped" in lines[3]
    # unknown_kinds_ok lets the hook report unknown kinds its own way.
    with pytest.raises(ManifestErrors) as info:
        desired.load(tree.resolve(repo=repo), unknown_kinds_ok=True)
    assert len(messages(info)) == 3
