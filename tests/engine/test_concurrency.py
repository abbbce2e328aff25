"""Issue 13, item 6 and the property test of its "Done when".

Both drive the engine in-process (``app.load``, ``plan.build``,
``sync.run``) against the real control plane: the same code the CLI runs,
without a process start per sync.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubectl_gitops.engine import app as app_mod
from kubectl_gitops.engine import applyset, model, plan, sync
from kubectl_gitops.engine.prune import AUTOMATIC
from kubectl_gitops.errors import ClusterError, GitOpsError
from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.kubeconfig import Overrides
from kubectl_gitops.kube.resources import ObjectId, ResourceType
from kubectl_gitops.source import tree
from testing.git import commit, git, make_repo, write
from testing.kube import configmap, docs, kubectl

pytestmark = pytest.mark.cluster

KINDS = [ResourceType("", "ConfigMap", True, "configmaps", "v1"),
         ResourceType("", "Secret", True, "secrets", "v1"),
         ResourceType("", "ServiceAccount", True, "serviceaccounts", "v1")]
NAMESPACE = ResourceType("", "Namespace", False, "namespaces", "v1")


def _sync(kube: Kube, repo: Path, ns: str, name: str, *, ref: str | None = None,
          working_tree: bool = False) -> tuple[model.Plan, sync.Result]:
    """One ``kubectl gitops sync --prune``, in-process."""
    src = tree.resolve(repo=repo, path=str(repo / "deploy"), ref=ref,
                       working_tree=working_tree)
    app = app_mod.load(src, kube, name=name, namespace=ns)
    the_plan = plan.build(kube, app.manifests, app.parent, app.parent_live, prune=True)
    return the_plan, sync.run(app, the_plan, sync.Options(prune=True), lambda _line: None)


def _parent(kube: Kube, ns: str, name: str) -> applyset.Parent:
    return applyset.parent_from_live(name, ns, kube.get(applyset.PARENT_TYPE, ns, name))


def _uncovered(kube: Kube, parent: applyset.Parent, *,
               snap: dict[str, tuple[ObjectId, dict[str, Any]]] | None = None) -> list[str]:
    """Members (by label) that the parent's annotations do not cover: no
    later prune could find them. From ``snap`` when given, else listed."""
    if snap is None:
        snap = {}
        for rtype in [*KINDS, NAMESPACE]:
            for obj in kube.list(rtype, "", metadata_only=True,
                                 label_selector=f"{applyset.PART_OF_LABEL}={parent.id}"):
                meta = obj["metadata"]
                oid = ObjectId("", rtype.kind, meta.get("namespace", ""), meta["name"])
                snap[meta["uid"]] = (oid, meta)
    out = []
    for oid, meta in snap.values():
        if (meta.get("labels") or {}).get(applyset.PART_OF_LABEL) != parent.id or \
                meta.get("deletionTimestamp"):
            continue  # not a member, or pruned already (a Namespace terminates a while)
        if oid.group_kind not in parent.group_kinds or \
                (oid.namespace and oid.namespace not in parent.namespaces):
            out.append(str(oid))
    return out


def _secret(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {"k": name}}


def _service_account(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}


def test_two_concurrent_syncs_of_one_app(tmp_path: Path, git_env: dict, kube_env: dict,
                                         namespace: str) -> None:
    repo = make_repo(tmp_path / "repo")
    refs = {}
    for side, extra in (("a", _secret("only-a")), ("b", _service_account("only-b"))):
        write(repo, "deploy/all.yaml", docs(configmap("common", {"side": side}), extra))
        refs[side] = commit(repo, side)
    rounds = 20
    for r in range(rounds):
        for side in "ab":
            git(repo, "tag", f"{side}-{r}", refs[side])
    kubes = {side: Kube(Overrides(kubeconfig=kube_env["KUBECONFIG"])) for side in "ab"}
    failures: list[str] = []
    kept: list[str] = []  # the refs the history held after the last round
    parent_history: list[dict] = []
    for r in range(rounds):
        start = threading.Barrier(2)

        def one(side: str, r: int = r, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                _, result = _sync(kubes[side], repo, namespace, "app", ref=f"{side}-{r}")
                failures.extend(result.failures)
            except GitOpsError as e:
                failures.append(f"{side}-{r}: {e}")

        threads = [threading.Thread(target=one, args=(side,)) for side in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == [], f"round {r}"
        parent = _parent(kubes["a"], namespace, "app")
        got = [h["ref"] for h in parent.history]
        # Each sync that wrote recorded; a sync that found the cluster already
        # at its revision (the other side not yet started) wrote nothing and
        # recorded nothing: it ran, as a read, before the other.
        new = [ref for ref in got if ref.endswith(f"-{r}")]
        assert new and set(new) <= {f"a-{r}", f"b-{r}"} and len(set(new)) == len(new), \
            f"round {r}: {got}"
        assert got[:len(new)] == new, f"round {r}: {got}"
        assert got[len(new):] == kept[:10 - len(new)], f"round {r}: every older record kept"
        if len(new) == 1 and kept:  # the other side was a read: the cluster was at its revision
            skipped = "b" if new[0].startswith("a") else "a"
            assert parent_history[0]["revision"] == refs[skipped], f"round {r}: {got}"
        kept, parent_history = got, parent.history
        assert _uncovered(kubes["a"], parent) == [], f"round {r}"
    for kube in kubes.values():
        kube.close()


# --- the property test ---------------------------------------------------------

ITERATIONS = int(os.environ.get("KUBECTL_GITOPS_PROPERTY_ITERATIONS", "200"))
SEED = int(os.environ.get("KUBECTL_GITOPS_PROPERTY_SEED", "20261128"))


class World:
    """Two apps, three namespaces, random revisions and random foreign objects."""

    def __init__(self, tmp_path: Path, kube: Kube, base: str, rng: random.Random) -> None:
        self.kube, self.rng = kube, rng
        self.ns = [base, f"{base}-p1", f"{base}-p2"]  # p2 is a member Namespace of app one
        self.repos = {name: make_repo(tmp_path / name) for name in ("one", "two")}
        self.home = {"one": self.ns[0], "two": self.ns[1]}
        self.serial = 0
        self.foreign: list[tuple[ResourceType, str, str]] = []

    def universe(self, app: str) -> list[tuple[dict[str, Any], str]]:
        """Every object an app's revisions may hold, with its namespace ("" for none)."""
        b, p1, p2 = self.ns
        keep = {"kubectl-gitops.io/prune": "false"}
        if app == "one":
            return [({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": p2}}, ""),
                    (configmap("c0"), b), (configmap("c1"), p1), (configmap("c2"), p2),
                    (configmap("c3", annotations=keep), p1), (_secret("s0"), b),
                    (_secret("s1"), p2), (_service_account("a0"), p1)]
        return [(configmap("d0"), b), (configmap("d1"), p1), (_secret("t0"), p1),
                (configmap("d2"), p2), (_service_account("b0"), b)]

    def revision(self, app: str) -> str:
        """A random subset of the app's universe. App one declares Namespace p2
        whenever it puts objects there, in half of its revisions; app two
        rarely has an object in p2 (which then keeps it)."""
        p2 = self.ns[2]
        one_in_p2 = self.rng.random() < 0.5
        picked = []
        for obj, ns in self.universe(app):
            in_p2 = ns == p2 or obj["metadata"]["name"] == p2
            if app == "one" and in_p2 and not one_in_p2:
                continue
            chance = 0.15 if app == "two" and in_p2 else \
                1.0 if obj["kind"] == "Namespace" else 0.6
            if self.rng.random() < chance:
                meta = {**obj["metadata"], **({"namespace": ns} if ns else {})}
                picked.append({**obj, "metadata": meta})
        return docs(*picked) if picked else ""

    def snapshot(self) -> dict[str, tuple[ObjectId, dict[str, Any]]]:
        """uid -> (identity, metadata) of every object the test watches."""
        out: dict[str, tuple[ObjectId, dict[str, Any]]] = {}
        queries = [(rtype, ns) for ns in self.ns for rtype in KINDS] + [(NAMESPACE, "")]
        for (rtype, ns), objs in zip(queries, self.kube.map(
                lambda q: self.kube.list(q[0], q[1], metadata_only=True), queries)):
            for obj in objs:
                meta = obj["metadata"]
                if rtype is NAMESPACE and meta["name"] not in self.ns:
                    continue
                out[meta["uid"]] = (ObjectId("", rtype.kind, ns, meta["name"]), meta)
        return out

    def add_foreign(self) -> None:
        """An object no app owns, in a random one of the namespaces."""
        self.serial += 1
        ns = self.rng.choice(self.ns)
        rtype = self.rng.choice(KINDS[:2])
        try:
            self.kube.create(rtype, {"apiVersion": "v1", "kind": rtype.kind,
                                     "metadata": {"name": f"f-{self.serial}", "namespace": ns}})
            self.foreign.append((rtype, ns, f"f-{self.serial}"))
        except ClusterError:
            pass  # the namespace is being deleted, or not there (yet)

    def remove_foreign(self) -> None:
        """Its owner deletes one (so that namespaces get free again)."""
        if self.foreign:
            rtype, ns, name = self.foreign.pop(self.rng.randrange(len(self.foreign)))
            self.kube.delete(rtype, ns, name)


def _protected(snap: dict[str, tuple[ObjectId, dict[str, Any]]], set_id: str) \
        -> dict[str, str]:
    """What a sync of the ApplySet ``set_id`` must not delete: every object
    that is not its member (another app's members and parent, unlabelled
    objects), its members marked prune: "false", but not what Kubernetes
    puts into every namespace."""
    out = {}
    for uid, (oid, meta) in snap.items():
        if (oid.group, oid.kind, oid.name) in AUTOMATIC or meta.get("deletionTimestamp"):
            continue  # Kubernetes' own, or on its way out already
        labels = meta.get("labels") or {}
        ann = meta.get("annotations") or {}
        if labels.get(applyset.PART_OF_LABEL) != set_id or \
                ann.get(applyset.PRUNE_ANNOTATION) == "false":
            out[uid] = str(oid)
    return out


@pytest.fixture
def property_namespaces(namespace: str, kube_env: dict) -> Iterator[str]:
    kubectl("create", "namespace", f"{namespace}-p1", env=kube_env)
    yield namespace
    for suffix in ("-p1", "-p2"):
        kubectl("delete", "namespace", namespace + suffix, "--wait=false", "--ignore-not-found",
                env=kube_env, check=False)


@pytest.mark.slow
def test_prune_never_deletes_a_non_member(tmp_path: Path, git_env: dict, kube_env: dict,
                                          property_namespaces: str) -> None:
    rng = random.Random(SEED)
    kube = Kube(Overrides(kubeconfig=kube_env["KUBECONFIG"]))
    world = World(tmp_path, kube, property_namespaces, rng)
    outcomes = {"synced": 0, "failed": 0, "refused": 0, "namespace pruned": 0,
                "namespace kept": 0}
    # Both sides of the Namespace rule depend on timing too (how long a pruned
    # namespace takes to terminate decides which later syncs are refused):
    # past ITERATIONS, go on (up to twice as many) until both were met.
    met = lambda: outcomes["namespace pruned"] and outcomes["namespace kept"]  # noqa: E731
    ran = 0
    for i in range(2 * ITERATIONS):
        if i >= ITERATIONS and (met() or ITERATIONS < 100):
            break
        ran += 1
        where = f"iteration {i} (KUBECTL_GITOPS_PROPERTY_SEED={SEED})"
        if rng.random() < 0.5:
            world.add_foreign()
        if rng.random() < 0.3:
            world.remove_foreign()
        name = rng.choice(["one", "two"])
        repo = world.repos[name]
        write(repo, "deploy/all.yaml", world.revision(name))
        before = world.snapshot()
        set_id = applyset.applyset_id(name, world.home[name])
        try:
            the_plan, result = _sync(kube, repo, world.home[name], name, working_tree=True)
            outcomes["synced" if result.ok else "failed"] += 1
            outcomes["namespace pruned"] += sum(i.id.kind == "Namespace" for i in result.pruned)
            outcomes["namespace kept"] += sum(i.id.kind == "Namespace" for i in the_plan.items
                                              if i.kept)
        except GitOpsError:
            outcomes["refused"] += 1  # e.g. objects in a namespace that is terminating
        after = world.snapshot()
        lost = [label for uid, label in _protected(before, set_id).items()
                if uid not in after or after[uid][1].get("deletionTimestamp")]
        assert lost == [], f"{where}: deleted non-members {lost}"
        uncovered = _uncovered(kube, _parent(kube, world.home[name], name), snap=after)
        assert uncovered == [], f"{where}: members outside {name}'s parent: {uncovered}"
    print(f"property test, seed {SEED}, {ran} iterations: {outcomes}")
    assert outcomes["synced"] > ITERATIONS // 2  # the test really syncs
    if ITERATIONS >= 100:  # and really meets both sides of the Namespace rule
        assert met(), outcomes
    kube.close()


def test_a_second_sync_waits_then_names_the_holder(tmp_path: Path, git_env: dict,
                                                   kube_env: dict, namespace: str) -> None:
    from kubectl_gitops.kube.lease import Lease, lease_name
    from testing.kube import gitops

    repo = make_repo(tmp_path / "repo")
    write(repo, "deploy/all.yaml", docs(configmap("web")))
    commit(repo)
    kube = Kube(Overrides(kubeconfig=kube_env["KUBECONFIG"]))
    holder = Lease(kube, namespace, lease_name("app"), holder="agent replica-1", duration=60)
    with holder.hold(timeout=5):
        r = gitops("sync", "deploy", "-n", namespace, "--name", "app", "--lock-timeout", "1s",
                   cwd=repo, env=kube_env)
        assert r.returncode == 2
        assert r.stderr.startswith(f"error: Lease {namespace}/kubectl-gitops.app is held by "
                                   "agent replica-1 since 20"), r.stderr
        assert "gave up after 1 s" in r.stderr
        assert kube.get(applyset.PARENT_TYPE, namespace, "app") is None  # nothing written
    # Released: the same sync goes through, and lets go again.
    r = gitops("sync", "deploy", "-n", namespace, "--name", "app", cwd=repo, env=kube_env)
    assert r.returncode == 0, r.stderr
    from kubectl_gitops.kube.lease import LEASE_TYPE
    live = kube.get(LEASE_TYPE, namespace, lease_name("app"))
    assert live is not None and not live["spec"].get("holderIdentity")
    kube.close()


def test_a_caller_holding_the_lease_passes_it_in(tmp_path: Path, git_env: dict,
                                                 kube_env: dict, namespace: str) -> None:
    """The agent's contract: sync uses the Lease it is given, neither taking nor
    releasing it, and stops before writing once that Lease is lost."""
    from kubectl_gitops.kube.lease import LEASE_TYPE, Lease, LeaseLost, lease_name

    repo = make_repo(tmp_path / "repo")
    write(repo, "deploy/all.yaml", docs(configmap("web")))
    commit(repo)
    kube = Kube(Overrides(kubeconfig=kube_env["KUBECONFIG"]))
    mine = Lease(kube, namespace, lease_name("app"), holder="agent replica-1", duration=60)
    mine.acquire(timeout=5)
    src = tree.resolve(repo=repo, path=str(repo / "deploy"))

    def run() -> sync.Result:
        app = app_mod.load(src, kube, name="app", namespace=namespace)
        the_plan = plan.build(kube, app.manifests, app.parent, app.parent_live, prune=True)
        return sync.run(app, the_plan, sync.Options(prune=True), lambda _line: None, lease=mine)

    assert run().ok
    live = kube.get(LEASE_TYPE, namespace, lease_name("app"))
    assert live["spec"]["holderIdentity"] == "agent replica-1"  # still held, not released
    # Another writer takes it (its holder expired, say): the next renewal notices.
    live["spec"]["holderIdentity"] = "agent replica-2"
    kube.request("PUT", Kube.path(LEASE_TYPE, namespace, lease_name("app")), body=live)
    assert not mine.renew()
    write(repo, "deploy/all.yaml", docs(configmap("web"), configmap("more")))
    commit(repo)
    src = tree.resolve(repo=repo, path=str(repo / "deploy"))
    with pytest.raises(LeaseLost):
        run()
    assert kube.get(KINDS[0], namespace, "more") is None
    kube.close()
