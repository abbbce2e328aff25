"""Issue 13, items 1 and 2: prune never deletes a non-member by cascade.

Against the real control plane (kube-controller-manager running, so a
deleted Namespace really takes its contents and a deleted CRD its custom
resources). Each test counts the foreign objects that went: always 0.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing import apps
from testing.git import commit, make_repo, write
from testing.kube import configmap, crd, docs, get, gitops, gone, kubectl

pytestmark = pytest.mark.cluster


def _foreign_deleted(objs: list[tuple[str, str, str | None]], env: dict) -> list[str]:
    return [f"{k} {ns}/{n}" for k, n, ns in objs if gone(k, n, env, ns)]


def _namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


@pytest.fixture
def extra_namespaces(kube_env: dict) -> Iterator[list[str]]:
    """Namespaces a test creates through a sync; deleted afterwards whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found",
                env=kube_env, check=False)


def _wait_for(kind: str, name: str, env: dict, ns: str) -> None:
    """What kube-controller-manager puts into a new namespace arrives shortly after."""
    deadline = time.monotonic() + 30
    while get(kind, name, env, ns) is None:
        assert time.monotonic() < deadline, f"{kind} {ns}/{name} never appeared"
        time.sleep(0.2)


def test_namespace_holding_non_members_is_kept(tmp_path: Path, git_env: dict, kube_env: dict,
                                               namespace: str,
                                               extra_namespaces: list[str]) -> None:
    x = f"{namespace}-x"
    extra_namespaces.append(x)
    pinned = configmap("pinned", namespace=x, annotations={"kubectl-gitops.io/prune": "false"})
    repo = make_repo(tmp_path / "repo")
    apps.commit_manifests(repo, docs(_namespace(x), configmap("member", namespace=x), pinned,
                                     configmap("stays")))
    assert apps.sync(repo, namespace, kube_env).returncode == 0
    # Non-members in the member namespace: an unlabelled object, and another
    # app's ApplySet (its parent and a member) living there.
    kubectl("create", "configmap", "unlabelled", "-n", x, env=kube_env)
    other = make_repo(tmp_path / "other")
    write(other, "deploy/all.yaml", docs(configmap("theirs")))
    commit(other)
    assert apps.sync(other, x, kube_env, name="neighbour").returncode == 0
    foreign = [("configmap", "unlabelled", x), ("configmap", "neighbour", x),
               ("configmap", "theirs", x), ("configmap", "pinned", x), ("namespace", x, None)]

    apps.commit_manifests(repo, docs(configmap("stays")))  # the namespace and everything in it leave git
    diff = gitops("diff", "deploy", "-n", namespace, "--name", "app", "--prune", cwd=repo,
                  env=kube_env)
    assert diff.returncode == 1, diff.stderr
    assert f"kept Namespace {x}: kept: deleting it would also delete" in diff.stderr
    for held in (f"ConfigMap {x}/unlabelled", f"ConfigMap {x}/neighbour (an ApplySet parent)",
                 f"ConfigMap {x}/theirs (ApplySet", f"ConfigMap {x}/pinned "
                 "(kubectl-gitops.io/prune=false)"):
        assert held in diff.stderr, diff.stderr
    assert "kube-root-ca.crt" not in diff.stderr and "ServiceAccount" not in diff.stderr

    r = apps.sync(repo, namespace, kube_env, "-o", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    pruned = [i["name"] for i in out["items"] if i["action"] == "prune"]
    assert pruned == ["member"]  # the member inside goes, the Namespace stays
    kept = [i for i in out["items"] if i["kind"] == "Namespace"]
    assert kept and kept[0]["action"] == "unchanged" and "--prune-cascade" in kept[0]["kept"]
    assert gone("configmap", "member", kube_env, x)
    assert _foreign_deleted(foreign, kube_env) == []  # FOREIGN DELETED: 0

    # --prune-cascade is the explicit override; the plan names what goes.
    r = apps.sync(repo, namespace, kube_env, "--prune-cascade")
    assert r.returncode == 0, r.stderr
    assert f"cascade    Namespace {x}: --prune-cascade: also deletes" in r.stderr
    assert f"ConfigMap {x}/unlabelled" in r.stderr
    assert gone("namespace", x, kube_env)


def test_namespace_with_only_members_and_automatic_contents_is_pruned(
        tmp_path: Path, git_env: dict, kube_env: dict, namespace: str,
        extra_namespaces: list[str]) -> None:
    y = f"{namespace}-y"
    extra_namespaces.append(y)
    repo = make_repo(tmp_path / "repo")
    apps.commit_manifests(repo, docs(_namespace(y), configmap("member", namespace=y), configmap("stays")))
    assert apps.sync(repo, namespace, kube_env).returncode == 0
    _wait_for("configmap", "kube-root-ca.crt", kube_env, y)
    _wait_for("serviceaccount", "default", kube_env, y)
    apps.commit_manifests(repo, docs(configmap("stays")))
    r = apps.sync(repo, namespace, kube_env)
    assert r.returncode == 0, r.stderr
    assert f"pruned     Namespace {y}" in r.stdout and "kept" not in r.stderr
    assert gone("namespace", y, kube_env)


def test_the_parents_own_namespace_is_never_pruned(tmp_path: Path, git_env: dict,
                                                   kube_env: dict, namespace: str,
                                                   extra_namespaces: list[str]) -> None:
    home = f"{namespace}-home"  # the revision creates the namespace the parent lives in
    extra_namespaces.append(home)
    repo = make_repo(tmp_path / "repo")
    apps.commit_manifests(repo, docs(_namespace(home), configmap("web", namespace=home)))
    assert apps.sync(repo, home, kube_env).returncode == 0
    apps.commit_manifests(repo, docs(configmap("elsewhere", namespace=namespace)))
    for extra in ((), ("--prune-cascade",)):
        r = apps.sync(repo, home, kube_env, *extra)
        assert r.returncode == 0, r.stderr
        assert f"kept       Namespace {home}: kept: it holds this app's ApplySet parent" \
            in r.stderr
        assert not gone("namespace", home, kube_env)
    hist = json.loads(gitops("history", "-n", home, "--name", "app", "-o", "json", cwd=repo,
                             env=kube_env).stdout)
    # nothing lost, nothing re-created from scratch; the re-run with
    # --prune-cascade changes nothing at the same revision, so it records nothing
    assert len(hist) == 2 and hist[0]["revision"] != hist[1]["revision"]


CRD_GROUP = "{ns}.example.com"


def _gadget(name: str, ns: str, group: str) -> dict:
    return {"apiVersion": f"{group}/v1", "kind": "Gadget",
            "metadata": {"name": name, "namespace": ns}, "spec": {"size": 1}}


def test_crd_is_pruned_only_with_all_its_custom_resources(tmp_path: Path, git_env: dict,
                                                          kube_env: dict,
                                                          namespace: str) -> None:
    group = CRD_GROUP.format(ns=namespace)
    definition = crd("Gadget", group, {"size": {"type": "integer"}})
    mine = docs(_gadget("g1", namespace, group), _gadget("g2", namespace, group))
    repo = make_repo(tmp_path / "repo")
    apps.commit_manifests(repo, definition + "---\n" + mine)
    try:
        assert apps.sync(repo, namespace, kube_env).returncode == 0
        foreign_cr = tmp_path / "foreign.yaml"
        foreign_cr.write_text(docs(_gadget("theirs", namespace, group)))
        kubectl("apply", "-f", str(foreign_cr), env=kube_env)
        foreign = [(f"gadgets.{group}", "theirs", namespace)]

        # The CRD's file goes, its custom resources stay in git: it is kept.
        apps.commit_manifests(repo, mine)
        r = apps.sync(repo, namespace, kube_env)
        assert r.returncode == 0, r.stderr
        assert f"kept       CustomResourceDefinition gadgets.{group}" in r.stderr
        assert f"Gadget {namespace}/g1 (in the revision)" in r.stderr
        assert f"Gadget {namespace}/theirs" in r.stderr
        for name in ("g1", "g2"):
            assert get(f"gadgets.{group}", name, kube_env, namespace) is not None

        # The custom resources go too: another team's still keeps the CRD.
        apps.commit_manifests(repo, docs(configmap("stays")))
        r = apps.sync(repo, namespace, kube_env)
        assert r.returncode == 0, r.stderr
        assert f"pruned     Gadget {namespace}/g1" in r.stdout
        assert f"Gadget {namespace}/theirs" in r.stderr and f"Gadget {namespace}/g1" not in r.stderr
        assert get("crd", f"gadgets.{group}", kube_env) is not None
        assert _foreign_deleted(foreign, kube_env) == []  # FOREIGN DELETED: 0

        # Once nothing but members would go, the CRD is pruned.
        kubectl("delete", f"gadgets.{group}", "theirs", "-n", namespace, env=kube_env)
        r = apps.sync(repo, namespace, kube_env)
        assert r.returncode == 0, r.stderr
        assert f"pruned     CustomResourceDefinition gadgets.{group}" in r.stdout
    finally:
        kubectl("delete", "crd", f"gadgets.{group}", "--wait=false", "--ignore-not-found",
                env=kube_env, check=False)
