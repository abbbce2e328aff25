"""Issue 22: prune acts on the cluster as it is when it deletes, not as the
plan saw it. The races are driven deterministically: a plan is made, the
cluster changes (another app adopts, a dependent appears, the Lease is held
while that happens), then the plan is carried out.

In-process (``app.load``, ``sync.make_plan``, ``sync.run``): the code the CLI runs.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubectl_gitops.engine import app as app_mod
from kubectl_gitops.engine import applyset, sync
from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.kubeconfig import Overrides
from kubectl_gitops.kube.resources import ResourceType
from kubectl_gitops.source import tree
from testing.git import commit, git, make_repo, write
from testing.kube import configmap, docs, get, gitops, kubectl

pytestmark = pytest.mark.cluster

CM = ResourceType("", "ConfigMap", True, "configmaps", "v1")


def _repo(tmp_path: Path, name: str, *objs: dict[str, Any], remote: str = "") -> Path:
    repo = make_repo(tmp_path / name)
    if remote:
        git(repo, "remote", "add", "origin", remote)
    write(repo, "deploy/all.yaml", docs(*objs))
    commit(repo)
    return repo


def _load(kube: Kube, repo: Path, ns: str, name: str) -> app_mod.App:
    src = tree.resolve(repo=repo, path=str(repo / "deploy"))
    return app_mod.load(src, kube, name=name, namespace=ns)


def _sync(kube: Kube, repo: Path, ns: str, name: str, lines: list[str] | None = None,
          **opts: Any) -> sync.Result:
    app = _load(kube, repo, ns, name)
    options = sync.Options(prune=True, **opts)
    return sync.run(app, sync.make_plan(app, options), options,
                    (lines if lines is not None else []).append)


def _planned(kube: Kube, repo: Path, ns: str, name: str, *objs: dict[str, Any]) \
        -> tuple[app_mod.App, sync.Options, Any]:
    """Commit a new revision of ``objs`` and plan its sync (not carried out yet)."""
    write(repo, "deploy/all.yaml", docs(*objs))
    commit(repo)
    app = _load(kube, repo, ns, name)
    opts = sync.Options(prune=True)
    return app, opts, sync.make_plan(app, opts)


@pytest.fixture
def kube(kube_env: dict) -> Any:
    k = Kube(Overrides(kubeconfig=kube_env["KUBECONFIG"]))
    yield k
    k.close()


def test_a_stale_plan_keeps_what_another_app_adopted(tmp_path: Path, git_env: dict,
                                                     kube: Kube, namespace: str) -> None:
    a = _repo(tmp_path, "a", configmap("keep"), configmap("shared"))
    assert _sync(kube, a, namespace, "app-a").ok
    app, opts, stale = _planned(kube, a, namespace, "app-a", configmap("keep"))  # drops "shared"
    assert [str(i.id) for i in stale.of("prune")] == [f"ConfigMap {namespace}/shared"]
    # Between A's plan and its delete, app B takes "shared" over.
    b = _repo(tmp_path, "b", configmap("shared", {"k": "b"}))
    assert _sync(kube, b, namespace, "app-b", adopt=True).ok
    lines: list[str] = []
    result = sync.run(app, stale, opts, lines.append)
    assert result.ok and result.pruned == []
    live = kube.get(CM, namespace, "shared")
    assert live is not None  # FOREIGN DELETED: 0
    assert live["metadata"]["labels"][applyset.PART_OF_LABEL] == applyset.applyset_id(
        "app-b", namespace)
    assert (f"kept       ConfigMap {namespace}/shared: kept: now a member of ApplySet "
            f"{applyset.applyset_id('app-b', namespace)} since the plan") in lines


def test_a_sync_that_waited_for_the_lease_plans_again(tmp_path: Path, git_env: dict,
                                                      kube: Kube, namespace: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from kubectl_gitops.kube import lease as lease_mod

    a = _repo(tmp_path, "a", *(configmap(f"c{n}") for n in range(4)), configmap("shared"))
    assert _sync(kube, a, namespace, "app-a").ok
    app, opts, planned = _planned(kube, a, namespace, "app-a",
                                  *(configmap(f"c{n}", {"k": "2"}) for n in range(4)))
    assert len(planned.of("prune")) == 1 and len(planned.of("update")) == 4
    holder = lease_mod.Lease(kube, namespace, lease_mod.lease_name("app-a"),
                             holder="agent replica-1", duration=60)
    holder.acquire(timeout=5)
    refused = threading.Event()  # A asked for its Lease and was told to wait
    try_acquire = lease_mod.Lease.try_acquire

    def observed(self: lease_mod.Lease) -> bool:
        won = try_acquire(self)
        if not won:
            refused.set()
        return won

    monkeypatch.setattr(lease_mod.Lease, "try_acquire", observed)
    out: list[Any] = []
    lines: list[str] = []
    waiting = threading.Thread(target=lambda: out.append(sync.run(app, planned, opts,
                                                                  lines.append)))
    waiting.start()
    try:
        assert refused.wait(timeout=30)
        # While A waits for its Lease, B adopts "shared" (A's plan still prunes it).
        b = _repo(tmp_path, "b", configmap("shared", {"k": "b"}))
        assert _sync(kube, b, namespace, "app-b", adopt=True).ok
    finally:
        holder.release()
    waiting.join(timeout=60)
    assert out, "the sync did not finish"
    result = out[0]
    assert result.ok, result.failures
    assert result.pruned == []
    assert kube.get(CM, namespace, "shared") is not None  # FOREIGN DELETED: 0
    # Planned again once the Lease was held ("shared" is no candidate any
    # more, not one kept at the last moment); each object counted once.
    assert "shared" not in [i.id.name for i in planned.items]
    assert result.counts() == {"created": 0, "updated": 4, "pruned": 0, "unchanged": 0,
                               "failed": 0}


def test_counts_after_a_replan_count_each_object_once(tmp_path: Path, git_env: dict,
                                                      kube: Kube, namespace: str) -> None:
    a = _repo(tmp_path, "a", *(configmap(f"c{n}") for n in range(3)))
    assert _sync(kube, a, namespace, "app").ok
    app, opts, stale = _planned(kube, a, namespace, "app",
                                *(configmap(f"c{n}", {"k": "2"}) for n in range(3)))
    # Another sync of the same revision runs in between: the parent moves on,
    # the stale plan's writes land and its record needs a re-plan.
    assert _sync(kube, a, namespace, "app").ok
    result = sync.run(app, stale, opts, lambda _line: None)
    assert result.ok, result.failures
    counts = result.counts()
    assert counts["updated"] + counts["unchanged"] == 3, counts


def test_a_dependent_made_after_the_plan_keeps_its_owner(tmp_path: Path, git_env: dict,
                                                         kube: Kube, kube_env: dict,
                                                         namespace: str) -> None:
    a = _repo(tmp_path, "a", configmap("keep"), configmap("owner"))
    assert _sync(kube, a, namespace, "app").ok
    app, opts, stale = _planned(kube, a, namespace, "app", configmap("keep"))
    assert [i.id.name for i in stale.of("prune")] == ["owner"]
    # Someone ties their own ConfigMap to "owner" after the plan was made.
    owner = kube.get(CM, namespace, "owner")
    assert owner is not None
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
           "uid": owner["metadata"]["uid"]}
    theirs = configmap("theirs")
    theirs["metadata"] = {"name": "theirs", "namespace": namespace, "ownerReferences": [ref]}
    path = tmp_path / "theirs.yaml"
    path.write_text(docs(theirs))
    kubectl("create", "-f", str(path), env=kube_env)
    lines: list[str] = []
    result = sync.run(app, stale, opts, lines.append)
    assert result.ok and result.pruned == []
    assert kube.get(CM, namespace, "owner") is not None
    assert kube.get(CM, namespace, "theirs") is not None  # FOREIGN DELETED: 0
    assert any(line.startswith(f"kept       ConfigMap {namespace}/owner: kept: deleting it "
                               f"would also delete ConfigMap {namespace}/theirs")
               for line in lines), lines
    # The parent still covers it: a later sync, once "theirs" is gone, prunes it.
    kubectl("delete", "configmap", "theirs", "-n", namespace, env=kube_env)
    again: list[str] = []
    assert _sync(kube, a, namespace, "app", again).ok
    assert f"pruned     ConfigMap {namespace}/owner" in again


def test_a_reused_name_neither_adopts_nor_prunes_another_sources_members(
        tmp_path: Path, git_env: dict, kube: Kube, kube_env: dict, namespace: str) -> None:
    a = _repo(tmp_path, "a", configmap("a1"), configmap("a2"),
              remote="https://git.example.com/team-a/deploy")
    assert _sync(kube, a, namespace, "app").ok
    member = kube.get(CM, namespace, "a1")
    assert member is not None
    assert member["metadata"]["annotations"][applyset.SOURCE_ANNOTATION] == \
        "git.example.com/team-a/deploy#deploy"
    # The parent is deleted by hand; another repository syncs under the same name.
    kubectl("delete", "configmap", "app", "-n", namespace, env=kube_env)
    b = _repo(tmp_path, "b", configmap("b1"), remote="https://git.example.com/team-b/deploy")
    assert _sync(kube, b, namespace, "app").ok
    lines: list[str] = []
    result = _sync(kube, b, namespace, "app", lines)
    assert result.ok and result.pruned == []
    for name in ("a1", "a2"):
        assert kube.get(CM, namespace, name) is not None  # FOREIGN DELETED: 0
    # Through the CLI: diff and sync name the source; diff --prune lists it kept.
    r = gitops("diff", "deploy", "-n", namespace, "--name", "app", "--prune", cwd=b,
               env=kube_env)
    assert r.returncode == 0, r.stderr
    assert (f"kept ConfigMap {namespace}/a1: kept: written from another source "
            "(git.example.com/team-a/deploy path deploy; this run reads "
            "git.example.com/team-b/deploy path deploy)") in r.stderr
    # Claiming one of them in B's revision is refused, by diff and sync alike.
    write(b, "deploy/all.yaml", docs(configmap("b1"), configmap("a1", {"k": "b"})))
    commit(b)
    for cmd in ("diff", "sync"):
        r = gitops(cmd, "deploy", "-n", namespace, "--name", "app", "--prune", cwd=b,
                   env=kube_env)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert f"error: ConfigMap {namespace}/a1: a member of this app's ApplySet written " \
            "from another source" in r.stderr, r.stderr
    assert get("configmap", "a1", kube_env, namespace)["data"] == {"k": "v"}
    # --take-over hands the app to B: it adopts a1 and prunes a2.
    r = gitops("sync", "deploy", "-n", namespace, "--name", "app", "--prune", "--take-over",
               cwd=b, env=kube_env)
    assert r.returncode == 0, r.stderr
    assert f"pruned     ConfigMap {namespace}/a2" in r.stdout
    taken = get("configmap", "a1", kube_env, namespace)
    assert taken["metadata"]["annotations"][applyset.SOURCE_ANNOTATION] == \
        "git.example.com/team-b/deploy#deploy"


def test_a_member_being_deleted_is_waited_for_and_created_again(
        tmp_path: Path, git_env: dict, kube: Kube, kube_env: dict, namespace: str) -> None:
    a = _repo(tmp_path, "a", configmap("web"), configmap("held"))
    assert _sync(kube, a, namespace, "app").ok
    for name in ("web", "held"):  # someone deletes them; a finalizer holds each
        kubectl("patch", "configmap", name, "-n", namespace, "--type=merge", "-p",
                '{"metadata":{"finalizers":["example.com/hold"]}}', env=kube_env)
        kubectl("delete", "configmap", name, "-n", namespace, "--wait=false", env=kube_env)
    before = kube.get(CM, namespace, "web")
    assert before is not None and before["metadata"].get("deletionTimestamp")
    # diff says so (never "unchanged"); sync fails within --timeout while it is held.
    d = gitops("diff", "deploy", "-n", namespace, "--name", "app", cwd=a, env=kube_env)
    assert d.returncode == 1, d.stdout + d.stderr
    assert (f"# ConfigMap {namespace}/web: being deleted (finalizers: example.com/hold); sync "
            "waits for it to go, then creates it again") in d.stdout
    kubectl("patch", "configmap", "held", "-n", namespace, "--type=merge", "-p",
            '{"metadata":{"finalizers":null}}', env=kube_env)
    r = gitops("sync", "deploy", "-n", namespace, "--name", "app", "--timeout", "3s", cwd=a,
               env=kube_env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert (f"failed     ConfigMap {namespace}/web: still being deleted when the --timeout ran "
            "out (finalizers: example.com/hold); not created again") in r.stdout
    assert f"created    ConfigMap {namespace}/held" in r.stdout  # its finalizer was gone
    # Its finalizer removed while sync waits: created again, a new object.
    lines: list[str] = []

    def report(line: str) -> None:
        lines.append(line)
        if line.startswith("waiting    "):
            kubectl("patch", "configmap", "web", "-n", namespace, "--type=merge", "-p",
                    '{"metadata":{"finalizers":null}}', env=kube_env)

    app = _load(kube, a, namespace, "app")
    opts = sync.Options(prune=True)
    result = sync.run(app, sync.make_plan(app, opts), opts, report)
    assert result.ok, result.failures
    assert [str(i.id) for i in result.created] == [f"ConfigMap {namespace}/web"], lines
    after = kube.get(CM, namespace, "web")
    assert after is not None and not after["metadata"].get("deletionTimestamp")
    assert after["metadata"]["uid"] != before["metadata"]["uid"]


def test_garbage_in_the_parents_annotations_is_named(tmp_path: Path, git_env: dict,
                                                     kube: Kube, kube_env: dict,
                                                     namespace: str) -> None:
    a = _repo(tmp_path, "a", configmap("web"))
    assert _sync(kube, a, namespace, "app").ok
    kubectl("annotate", "configmap", "app", "-n", namespace, "--overwrite",
            f"{applyset.NAMESPACES_ANNOTATION}=ok-ns,Not A/Namespace", env=kube_env)
    for cmd in ("diff", "sync"):
        r = gitops(cmd, "deploy", "-n", namespace, "--name", "app", "--prune", cwd=a,
                   env=kube_env)
        assert r.returncode == 2
        assert r.stderr.strip().splitlines() == [
            f"error: ConfigMap {namespace}/app: annotation "
            f"{applyset.NAMESPACES_ANNOTATION} holds 'Not A/Namespace', not a comma-separated "
            "list of namespace names; fix it by hand (it lists where the app's members are)"]


def test_a_server_gone_mid_plan_is_one_error(tmp_path: Path, git_env: dict, kube: Kube,
                                             kube_env: dict, namespace: str) -> None:
    """The guard's listings fail with the server: one error for the run, not
    a line per candidate ("kept ... connection refused")."""
    from kubectl_gitops.engine import prune
    from kubectl_gitops.errors import ClusterError
    from testing.net import silent_listener

    a = _repo(tmp_path, "a", *(configmap(f"c{n}") for n in range(30)))
    assert _sync(kube, a, namespace, "app").ok
    app, _, planned = _planned(kube, a, namespace, "app", configmap("c0"))
    assert len(planned.of("prune")) == 29
    served = kube.resource_types()
    # The same cluster, its server gone: a port where nothing listens.
    config = yaml.safe_load(Path(kube_env["KUBECONFIG"]).read_text())
    with silent_listener() as port:
        pass  # closed again: connections are refused
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    dead_config = tmp_path / "dead.kubeconfig"
    dead_config.write_text(yaml.safe_dump(config))
    dead = Kube(Overrides(kubeconfig=str(dead_config)))
    try:
        with pytest.raises(ClusterError) as e:
            prune.guard(dead, planned.items, app.parent, served, cascade=False)
    finally:
        dead.close()
    assert "127.0.0.1" in str(e.value) and "\n" not in str(e.value)
    assert [i for i in planned.items if i.kept] == []  # nothing "kept" for it


def test_a_change_between_the_check_and_the_delete_keeps_it(tmp_path: Path, git_env: dict,
                                                            kube: Kube, kube_env: dict,
                                                            namespace: str) -> None:
    """The DELETE carries the uid and resourceVersion of the check's read: a
    change in between makes the server refuse it. Namespaced candidates are
    deleted before cluster-scoped ones, so the ClusterRole is changed
    (deterministically) right after the ConfigMap was pruned."""
    role = f"{namespace}-reader"
    cluster_role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": role},
                    "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                               "verbs": ["get"]}]}
    a = _repo(tmp_path, "a", configmap("keep"), configmap("gone"), cluster_role)
    try:
        assert _sync(kube, a, namespace, "app").ok
        app, opts, planned = _planned(kube, a, namespace, "app", configmap("keep"))
        assert sorted(i.id.name for i in planned.of("prune")) == ["gone", role]
        lines: list[str] = []

        def report(line: str) -> None:
            lines.append(line)
            if line == f"pruned     ConfigMap {namespace}/gone":
                kubectl("label", "clusterrole", role, "team=late", env=kube_env)

        result = sync.run(app, planned, opts, report)
        assert result.ok and [str(i.id) for i in result.pruned] == [
            f"ConfigMap {namespace}/gone"]
        assert f"kept       ClusterRole {role}: kept: it changed between the check and the " \
            "delete (the server refused the preconditions); sync again to prune it" in lines
        assert get("clusterrole", role, kube_env) is not None
        # Still covered by the parent: the next sync prunes it.
        assert [i.id.name for i in _sync_result(kube, a, namespace).pruned] == [role]
    finally:
        kubectl("delete", "clusterrole", role, "--ignore-not-found", env=kube_env)


def _sync_result(kube: Kube, repo: Path, ns: str) -> sync.Result:
    result = _sync(kube, repo, ns, "app")
    assert result.ok, result.failures
    return result
