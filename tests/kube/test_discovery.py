"""Scope from real API discovery against the local control plane.

A CRD and its custom resources in one revision resolve before the CRD exists
in the cluster, and one run asks discovery once, whatever it reads.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubectl_gitops.engine import desired
from kubectl_gitops.engine.desired import crd_types, object_id
from kubectl_gitops.errors import ManifestErrors
from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.kubeconfig import Overrides
from kubectl_gitops.kube.resources import ResourceType
from kubectl_gitops.source import tree
from testing.git import commit, make_repo, write
from testing.kube import obj, scoped_crd

pytestmark = pytest.mark.cluster

CRD_GROUP = "apiextensions.k8s.io"


@pytest.fixture
def kube(control_plane: Any) -> Kube:
    return Kube(Overrides(kubeconfig=str(control_plane.kubeconfig)))


@pytest.fixture
def repo(git_env: dict[str, str], tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture
def group() -> str:
    """An API group of its own, so that CRDs never meet across tests or runs."""
    return f"t{uuid.uuid4().hex[:8]}.example.com"


def count_requests(kube: Kube, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    seen: Counter[str] = Counter()
    real = kube.request

    def counting(method: str, path: str, **kw: Any) -> Any:
        seen[f"{method} {path}"] += 1
        return real(method, path, **kw)

    monkeypatch.setattr(kube, "request", counting)
    return seen


def test_discovery_knows_built_in_scope_plural_and_version(kube: Kube) -> None:
    mapper = kube.mapper()
    assert mapper.lookup("apps", "Deployment") == ResourceType(
        "apps", "Deployment", namespaced=True, plural="deployments", version="v1")
    assert mapper.lookup("rbac.authorization.k8s.io", "ClusterRole") == ResourceType(
        "rbac.authorization.k8s.io", "ClusterRole", namespaced=False, plural="clusterroles",
        version="v1")
    assert mapper.lookup("", "ConfigMap") == ResourceType("", "ConfigMap", True, "configmaps",
                                                          "v1")
    assert mapper.lookup("", "Namespace").namespaced is False  # type: ignore[union-attr]
    assert mapper.lookup(CRD_GROUP, "CustomResourceDefinition").namespaced is False  # type: ignore[union-attr]
    # Subresources (deployments/scale) never stand for a kind of their own.
    assert mapper.lookup("autoscaling", "Scale") is None
    assert mapper.lookup("example.com", "Widget") is None


def test_crds_in_the_revision_resolve_before_they_exist_in_the_cluster(
        kube: Kube, repo: Path, group: str, namespace: str) -> None:
    write(repo, "crds/widgets.yaml", scoped_crd(group, "Widget", "widgets", "Namespaced"))
    write(repo, "crds/gadgets.yaml", scoped_crd(group, "Gadget", "gadgets", "Cluster"))
    write(repo, "app/crs.yaml", "---\n".join([
        obj(f"{group}/v1", "Widget", "w"), obj(f"{group}/v1", "Widget", "w2", "elsewhere"),
        obj(f"{group}/v1", "Gadget", "g"), obj("apps/v1", "Deployment", "web"),
        obj("rbac.authorization.k8s.io/v1", "ClusterRole", "reader")]))
    commit(repo)
    crd_type = kube.mapper().lookup(CRD_GROUP, "CustomResourceDefinition")
    assert crd_type is not None
    assert kube.get(crd_type, "", f"widgets.{group}") is None  # not in the cluster

    ms = desired.load(tree.resolve(repo=repo), kube=kube, namespace=namespace)

    assert sorted(str(object_id(m)) for m in ms) == sorted([
        f"CustomResourceDefinition widgets.{group}", f"CustomResourceDefinition gadgets.{group}",
        f"Widget {namespace}/w", "Widget elsewhere/w2", "Gadget g",
        f"Deployment {namespace}/web", "ClusterRole reader"])
    gadget = next(m for m in ms if m.kind == "Gadget")
    assert "namespace" not in gadget.obj["metadata"]
    mapper = kube.mapper().with_types(crd_types(ms))
    assert mapper.lookup(group, "Widget") == ResourceType(group, "Widget", True, "widgets", "v1")
    assert mapper.lookup(group, "Gadget") == ResourceType(group, "Gadget", False, "gadgets", "v1")


def test_scope_errors_with_discovery(kube: Kube, repo: Path, group: str) -> None:
    write(repo, "crd.yaml", scoped_crd(group, "Gadget", "gadgets", "Cluster"))
    write(repo, "bad.yaml", "---\n".join([
        obj(f"{group}/v1", "Gadget", "g", "some-ns"),
        obj("rbac.authorization.k8s.io/v1", "ClusterRole", "reader", "some-ns"),
        obj(f"other-{group}/v1", "Gizmo", "x")]))
    commit(repo)
    with pytest.raises(ManifestErrors) as info:
        desired.load(tree.resolve(repo=repo), kube=kube)
    assert info.value.lines() == [
        "bad.yaml:1: Gadget some-ns/g: Gadget is cluster-scoped but has metadata.namespace; "
        "remove it",
        "bad.yaml:7: ClusterRole some-ns/reader: ClusterRole is cluster-scoped but has "
        "metadata.namespace; remove it",
        f"bad.yaml:13: Gizmo x: unknown kind Gizmo in other-{group}/v1: no such resource "
        "type in the cluster and no CRD for it in this revision"]


def test_the_context_namespace_is_the_default_with_a_cluster(
        kube: Kube, repo: Path) -> None:
    write(repo, "cm.yaml", obj("v1", "ConfigMap", "cm"))
    commit(repo)
    [m] = desired.load(tree.resolve(repo=repo), kube=kube)
    assert m.namespace == kube.info.namespace == "default"


def test_discovery_happens_once_per_run(kube: Kube, repo: Path, group: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    write(repo, "crd.yaml", scoped_crd(group, "Widget", "widgets", "Namespaced"))
    for i in range(40):
        write(repo, f"apps/app{i}.yaml", "---\n".join([
            obj("v1", "ConfigMap", f"c{i}"), obj("apps/v1", "Deployment", f"d{i}"),
            obj("rbac.authorization.k8s.io/v1", "ClusterRole", f"r{i}"),
            obj(f"{group}/v1", "Widget", f"w{i}")]))
    commit(repo)
    seen = count_requests(kube, monkeypatch)
    src = tree.resolve(repo=repo)
    first = desired.load(src, kube=kube)
    second = desired.load(src, kube=kube, namespace="other")
    kube.mapper()
    assert len(first) == len(second) == 161
    # One aggregated discovery document for the core group, one for the rest.
    assert seen == Counter({"GET /api": 1, "GET /apis": 1})


def test_a_crd_in_the_cluster_is_known_from_discovery(kube: Kube, group: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    crd_type = kube.mapper().lookup(CRD_GROUP, "CustomResourceDefinition")
    assert crd_type is not None
    import yaml

    body = yaml.safe_load(scoped_crd(group, "Thing", "things", "Namespaced"))
    kube.apply(crd_type, body)
    try:
        wait_established(kube, crd_type, f"things.{group}")
        assert kube.mapper().lookup(group, "Thing") is None  # discovery is cached per run
        kube.forget_discovery()
        seen = count_requests(kube, monkeypatch)
        assert kube.mapper().lookup(group, "Thing") == ResourceType(group, "Thing", True,
                                                                   "things", "v1")
        assert sum(seen.values()) == 2
    finally:
        kube.delete(crd_type, "", f"things.{group}")


def wait_established(kube: Kube, crd_type: ResourceType, name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        live = kube.get(crd_type, "", name) or {}
        if any(c.get("type") == "Established" and c.get("status") == "True"
               for c in (live.get("status") or {}).get("conditions") or []):
            return
        time.sleep(0.2)
    raise AssertionError(f"CustomResourceDefinition {name} not Established within 60 s")


@pytest.fixture(autouse=True)
def _no_leftover_crds(kube: Kube, group: str) -> Iterator[None]:
    """None of these tests may leave a CRD of its group behind (one being
    deleted waits for the API server's cleanup finalizer, which is fine)."""
    yield
    crd_type = kube.mapper().lookup(CRD_GROUP, "CustomResourceDefinition")
    assert crd_type is not None
    kept = [c["metadata"]["name"] for c in kube.list(crd_type)
            if not c["metadata"].get("deletionTimestamp")]
    assert not [n for n in kept if n.endswith(group)]
