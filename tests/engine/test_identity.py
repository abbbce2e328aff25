"""Issue 13, item 3 (app identity) and the salted applied hash of Secrets (item 9)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest

from kubectl_gitops.engine import app as app_mod
from kubectl_gitops.engine.applyset import (SALT_ANNOTATION, SOURCE_ANNOTATION,
                                            SOURCE_PATH_ANNOTATION,
                                            SOURCE_REPO_ANNOTATION, SOURCE_ROOT_ANNOTATION)
from kubectl_gitops.engine.plan import HASH_ANNOTATION
from kubectl_gitops.source import tree
from testing.git import commit, git, make_repo, write
from testing.kube import configmap, docs, get, gitops, kubectl


def _checkout(tmp_path: Path, team: str, text: str, remote: str | None = None) -> Path:
    """A repository checked out as ``<team>/deploy``: the directory name says nothing."""
    repo = make_repo(tmp_path / team / "deploy")
    if remote:
        git(repo, "remote", "add", "origin", remote)
    write(repo, "app.yaml", text)
    commit(repo, f"{team} manifests")
    return repo


@pytest.mark.parametrize(("url", "normal"), [
    ("git@github.com:Acme/shop.git", "github.com/Acme/shop"),
    ("https://user:tok3n@GitHub.com:8443/Acme/shop.git/", "github.com/Acme/shop"),
    ("ssh://git@github.com/Acme/shop", "github.com/Acme/shop"),
    ("file:///srv/git/shop.git", "/srv/git/shop.git"),
    ("../shop", "/work/shop"),
])
def test_remote_urls_are_normalised_without_credentials(url: str, normal: str) -> None:
    assert app_mod.normalize_url(url, "/work/repo") == normal


def test_default_name_comes_from_the_remote_and_path(tmp_path: Path, git_env: dict) -> None:
    repo = _checkout(tmp_path, "a", docs(configmap("x")), "git@example.com:acme/Shop.git")
    write(repo, "deploy/prod/x.yaml", docs(configmap("y")))
    commit(repo)
    assert app_mod.app_name(tree.resolve(repo=repo), None) == "shop"
    assert app_mod.app_name(tree.resolve(repo=repo, path=str(repo / "deploy/prod")),
                            None) == "shop-deploy-prod"
    local = _checkout(tmp_path, "b", docs(configmap("x")))
    root = git(local, "rev-list", "--max-parents=0", "HEAD")
    assert app_mod.app_name(tree.resolve(repo=local), None) == f"app-{root[:7]}"


@pytest.mark.cluster
def test_two_repos_checked_out_as_deploy_are_two_apps(tmp_path: Path, git_env: dict,
                                                      kube_env: dict, namespace: str) -> None:
    # The case: no --name, no .gitops.yaml name, both parents in one namespace.
    a = _checkout(tmp_path, "team-a", docs(configmap("a1"), configmap("a2")))
    b = _checkout(tmp_path, "team-b", docs(configmap("b1")))
    assert gitops("sync", "-n", namespace, "--prune", cwd=a, env=kube_env).returncode == 0
    r = gitops("sync", "-n", namespace, "--prune", cwd=b, env=kube_env)
    assert r.returncode == 0, r.stderr
    assert "pruned" not in r.stdout
    deleted = [n for n in ("a1", "a2") if get("configmap", n, kube_env, namespace) is None]
    assert deleted == []  # FOREIGN DELETED: 0


@pytest.mark.cluster
def test_a_sync_from_another_source_is_refused_unless_taking_over(
        tmp_path: Path, git_env: dict, kube_env: dict, namespace: str) -> None:
    # Same remote name (both repos are called "deploy"), so the same default name.
    a = _checkout(tmp_path, "a", docs(configmap("a1")), "https://git.example.com/team-a/deploy")
    b = _checkout(tmp_path, "b", docs(configmap("b1")), "git@git.example.com:team-b/deploy.git")
    assert gitops("sync", "-n", namespace, cwd=a, env=kube_env).returncode == 0
    parent = get("configmap", "deploy", kube_env, namespace)
    ann = parent["metadata"]["annotations"]
    assert (ann[SOURCE_REPO_ANNOTATION], ann[SOURCE_PATH_ANNOTATION]) == \
        ("git.example.com/team-a/deploy", ".")
    assert ann[SOURCE_ROOT_ANNOTATION] == ""  # a remote identifies the repo

    for extra in ((), ("--prune",), ("--prune", "--dry-run")):
        r = gitops("sync", "-n", namespace, *extra, cwd=b, env=kube_env)
        assert r.returncode == 2
        assert (f"ConfigMap {namespace}/deploy records source git.example.com/team-a/deploy "
                "path .; this run reads git.example.com/team-b/deploy path .") in r.stderr
        assert "--take-over" in r.stderr
    assert get("configmap", "a1", kube_env, namespace) is not None
    assert get("configmap", "b1", kube_env, namespace) is None  # nothing written
    d = gitops("diff", "-n", namespace, "--prune", cwd=b, env=kube_env)
    assert d.returncode == 2  # diff refuses where sync does
    assert "error: ConfigMap" in d.stderr and "--take-over" in d.stderr

    r = gitops("sync", "-n", namespace, "--prune", "--take-over", cwd=b, env=kube_env)
    assert r.returncode == 0, r.stderr
    assert get("configmap", "a1", kube_env, namespace) is None
    ann = get("configmap", "deploy", kube_env, namespace)["metadata"]["annotations"]
    assert ann[SOURCE_REPO_ANNOTATION] == "git.example.com/team-b/deploy"


@pytest.mark.cluster
def test_a_sub_path_sync_does_not_prune_the_rest(tmp_path: Path, git_env: dict,
                                                 kube_env: dict, namespace: str) -> None:
    repo = make_repo(tmp_path / "repo")
    write(repo, ".gitops.yaml", f"name: shop\npath: deploy\nnamespace: {namespace}\n")
    write(repo, "deploy/a/a.yaml", docs(configmap("in-a")))
    write(repo, "deploy/b/b.yaml", docs(configmap("in-b")))
    commit(repo)
    assert gitops("sync", "--prune", cwd=repo, env=kube_env).returncode == 0
    r = gitops("sync", "--prune", "deploy/a", cwd=repo, env=kube_env)
    assert r.returncode == 2
    assert "records source" in r.stderr and "path deploy;" in r.stderr \
        and "reads" in r.stderr and "path deploy/a" in r.stderr
    assert get("configmap", "in-b", kube_env, namespace) is not None  # FOREIGN DELETED: 0


@pytest.mark.cluster
def test_an_app_under_the_old_default_name_keeps_working(tmp_path: Path, git_env: dict,
                                                         kube_env: dict,
                                                         namespace: str) -> None:
    repo = _checkout(tmp_path, "x", docs(configmap("web")))
    # Synced by an older version: named after the checkout directory, no source record.
    assert gitops("sync", "-n", namespace, "--name", "deploy", cwd=repo,
                  env=kube_env).returncode == 0
    kubectl("annotate", "configmap", "deploy", "-n", namespace, f"{SOURCE_REPO_ANNOTATION}-",
            f"{SOURCE_ROOT_ANNOTATION}-", f"{SOURCE_PATH_ANNOTATION}-", env=kube_env)
    r = gitops("sync", "-n", namespace, "--prune", "-o", "json", cwd=repo, env=kube_env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["counts"]["unchanged"] == 1
    ann = get("configmap", "deploy", kube_env, namespace)["metadata"]["annotations"]
    assert ann[SOURCE_PATH_ANNOTATION] == "."  # recorded from now on


@pytest.mark.cluster
def test_secret_hash_is_keyed_per_applyset(tmp_path: Path, git_env: dict, kube_env: dict,
                                           namespace: str) -> None:
    pin = base64.b64encode(b"48213579").decode()
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pin"},
              "data": {"pin": pin}}
    repo = make_repo(tmp_path / "repo")
    write(repo, "deploy/s.yaml", docs(secret))
    commit(repo)
    other = f"{namespace}-o"
    kubectl("create", "namespace", other, env=kube_env)
    try:
        for ns in (namespace, other):
            r = gitops("sync", "deploy", "-n", ns, "--name", "app", cwd=repo, env=kube_env)
            assert r.returncode == 0, r.stderr
        hashes = []
        for ns in (namespace, other):
            live = get("secret", "pin", kube_env, ns)
            applied = live["metadata"]["annotations"][HASH_ANNOTATION]
            salt = get("configmap", "app", kube_env, ns)["metadata"]["annotations"][
                SALT_ANNOTATION]
            # What sync applied: the manifest, labelled and namespaced.
            ann = live["metadata"]["annotations"]
            obj = {**secret, "metadata": {"name": "pin", "namespace": ns, "labels": live[
                "metadata"]["labels"], "annotations": {
                    SOURCE_ANNOTATION: ann[SOURCE_ANNOTATION]}}}
            data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
            assert applied != hashlib.sha256(data).hexdigest()[:32]  # no offline guess check
            assert applied == hmac.new(salt.encode(), data, hashlib.sha256).hexdigest()[:32]
            hashes.append(applied)
        assert hashes[0] != hashes[1]
        # The no-change path still recognises it: nothing is written again.
        before = get("secret", "pin", kube_env, namespace)["metadata"]["resourceVersion"]
        r = gitops("sync", "deploy", "-n", namespace, "--name", "app", "-o", "json", cwd=repo,
                   env=kube_env)
        assert json.loads(r.stdout)["counts"]["unchanged"] == 1
        assert get("secret", "pin", kube_env, namespace)["metadata"]["resourceVersion"] == before
    finally:
        kubectl("delete", "namespace", other, "--wait=false", env=kube_env)
