"""Issue 22, "Done when": a property test over random interleavings of two
apps, hand-made objects and an agent. Its invariant: no object outside the
app's set is ever deleted.

App "one" is synced in-process with stale plans: each is made, then the
cluster changes under it (the agent syncs app "two", which shares names with
one; someone makes objects by hand, some owned by one's members; someone
marks a member ``prune: "false"`` or strips its ``part-of`` label), then the
plan is carried out. App "two" is a real agent process (``--prune
--self-heal``) pulling from a git remote, running throughout.

A watch on the namespace sees every version of every ConfigMap. The checks:
each DELETE of app one's sync that the server accepted names (by its
resourceVersion precondition) a version that was one's member, not marked
``prune: "false"``; every object that disappeared was, in its last version,
a member of app one or two (nothing hand-made, nothing unlabelled: no
cascade either); and each hand-made object is still there unless the test
deleted it itself.
"""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from kubectl_gitops.engine import app as app_mod
from kubectl_gitops.engine import applyset, sync
from kubectl_gitops.errors import ClusterError, GitOpsError
from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.kubeconfig import Overrides
from kubectl_gitops.kube.resources import ResourceType
from kubectl_gitops.source import tree
from testing.agent import AgentProc, wait_for
from testing.git import commit, make_repo, write
from testing.kube import configmap, docs

pytestmark = pytest.mark.cluster

ITERATIONS = int(os.environ.get("KUBECTL_GITOPS_PROPERTY_ITERATIONS", "200"))
SEED = int(os.environ.get("KUBECTL_GITOPS_PROPERTY_SEED", "20261203"))
CM = ResourceType("", "ConfigMap", True, "configmaps", "v1")
ONE = [f"o{n}" for n in range(5)]
TWO = [f"t{n}" for n in range(4)]
SHARED = [f"s{n}" for n in range(3)]


class Versions:
    """Every version of every ConfigMap in the namespace, from a watch."""

    def __init__(self, kube: Kube, ns: str) -> None:
        self.kube, self.ns = kube, ns
        self.by_rv: dict[str, dict[str, Any]] = {}
        self.last: dict[str, dict[str, Any]] = {}  # uid -> last version seen
        self.deleted: dict[str, dict[str, Any]] = {}  # uid -> its last version
        self.names: set[str] = set()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        listed = kube.request("GET", Kube.path(CM, ns))
        self.rv = listed["metadata"]["resourceVersion"]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                for event in self.kube.watch(CM, self.ns, resource_version=self.rv, timeout=5):
                    self._seen(event)
            except ClusterError:
                continue

    def _seen(self, event: dict[str, Any]) -> None:
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        self.rv = meta.get("resourceVersion", self.rv)
        if event.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
            return
        with self.lock:
            uid = meta["uid"]
            if event["type"] == "DELETED":
                self.deleted[uid] = self.last.get(uid, meta)
            else:
                self.by_rv[meta["resourceVersion"]] = meta
                self.last[uid] = meta
            self.names.add(meta["name"])

    def until_seen(self, name: str) -> None:
        wait_for(lambda: name in self.names, 30, f"the watch sees {name}")


def _revision(rng: random.Random, names: list[str]) -> str:
    picked = [configmap(n, {"v": str(rng.randrange(3))}) for n in names if rng.random() < 0.6]
    return docs(*picked) if picked else ""


@pytest.mark.slow
def test_interleavings_never_delete_outside_the_set(tmp_path: Path, git_env: dict,
                                                    kube_env: dict, namespace: str) -> None:
    rng = random.Random(SEED)
    ns = namespace
    env = {**kube_env, **{k: v for k, v in git_env.items() if k.startswith("GIT_")}}
    origin = make_repo(tmp_path / "origin")
    write(origin, "deploy/all.yaml", docs(configmap("t0")))
    commit(origin, "first")
    agent = AgentProc(tmp_path, env, "--repo", f"file://{origin}", "--ref", "main", "--path",
                      "deploy", "--name", "two", "-n", ns, "--interval", "1s", "--prune",
                      "--self-heal")
    repo = make_repo(tmp_path / "one")
    write(repo, "deploy/all.yaml", docs(configmap("o0")))
    commit(repo)
    tester = Kube(Overrides(kubeconfig=kube_env["KUBECONFIG"]))
    mine = Kube(Overrides(kubeconfig=kube_env["KUBECONFIG"]))  # app one's: its deletes recorded
    accepted: list[tuple[str, str | None, str | None]] = []  # (name, uid, resourceVersion)
    delete = mine.delete

    def recorded(rtype: ResourceType, namespace: str, name: str, **kw: Any) -> None:
        delete(rtype, namespace, name, **kw)
        accepted.append((name, kw.get("uid"), kw.get("resource_version")))

    mine.delete = recorded  # type: ignore[method-assign]
    versions = Versions(tester, ns)
    one_id, two_id = applyset.applyset_id("one", ns), applyset.applyset_id("two", ns)
    hand: dict[str, str] = {}  # uid -> name, of the objects made by hand
    removed: set[str] = set()  # hand-made uids the test deleted itself
    outcomes = {"synced": 0, "failed": 0, "refused": 0, "pruned": 0, "kept late": 0,
                "owned by hand": 0}
    try:
        agent.wait_ready()
        for i in range(ITERATIONS):
            write(repo, "deploy/all.yaml", _revision(rng, ONE + SHARED))
            src = tree.resolve(repo=repo, path=str(repo / "deploy"), working_tree=True)
            opts = sync.Options(prune=True, adopt=True)
            try:
                app = app_mod.load(src, mine, name="one", namespace=ns)
                planned = sync.make_plan(app, opts)
            except GitOpsError:
                outcomes["refused"] += 1
                continue
            members = [o for o in tester.list(CM, ns, label_selector=(
                f"{applyset.PART_OF_LABEL}={one_id}"))]
            for _ in range(rng.randrange(4)):  # the cluster changes under the plan
                what = rng.random()
                if what < 0.25:  # the agent gets a new revision of app two
                    write(origin, "deploy/all.yaml", _revision(rng, TWO + SHARED))
                    commit(origin, f"two {i}")
                elif what < 0.55:  # an object made by hand, maybe tied to a member of one
                    meta: dict[str, Any] = {"name": f"h{i}-{rng.randrange(10**6)}",
                                            "namespace": ns}
                    if members and rng.random() < 0.6:
                        owner = rng.choice(members)["metadata"]
                        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap",
                                                    "name": owner["name"], "uid": owner["uid"]}]
                        outcomes["owned by hand"] += 1
                    made = tester.create(CM, {"apiVersion": "v1", "kind": "ConfigMap",
                                              "metadata": meta, "data": {"k": "v"}})
                    hand[made["metadata"]["uid"]] = meta["name"]
                elif what < 0.8 and members:  # a member marked to keep (or not), unlabelled
                    chosen = rng.choice(members)["metadata"]
                    target = chosen["name"]
                    marked = (chosen.get("annotations") or {}).get(applyset.PRUNE_ANNOTATION)
                    patch = ({"metadata": {"annotations": {
                        applyset.PRUNE_ANNOTATION: None if marked else "false"}}}
                        if rng.random() < 0.6 else
                        {"metadata": {"labels": {applyset.PART_OF_LABEL: None}}})
                    try:
                        tester.request("PATCH", Kube.path(CM, ns, target), body=patch,
                                       content_type="application/merge-patch+json")
                    except ClusterError:
                        pass  # pruned since it was listed
                elif hand:  # its maker deletes one
                    uid = rng.choice(sorted(set(hand) - removed) or [""])
                    if uid:
                        removed.add(uid)
                        tester.delete(CM, ns, hand[uid], uid=uid)
            lines: list[str] = []
            try:
                result = sync.run(app, planned, opts, lines.append)
                outcomes["synced" if result.ok else "failed"] += 1
                outcomes["pruned"] += len(result.pruned)
                outcomes["kept late"] += sum(line.startswith("kept") for line in lines)
            except GitOpsError:
                outcomes["refused"] += 1
        end = tester.create(CM, {"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": "zz-end", "namespace": ns}})
        versions.until_seen(end["metadata"]["name"])
    finally:
        versions.stop.set()
        agent.stop()
        tester.close()
        mine.close()
    where = f"(KUBECTL_GITOPS_PROPERTY_SEED={SEED})"
    print(f"interleavings, seed {SEED}, {ITERATIONS} iterations: {outcomes}, "
          f"{len(accepted)} deletes by one, {len(versions.deleted)} objects gone")
    with versions.lock:
        for name, uid, rv in accepted:
            seen = versions.by_rv.get(rv or "")
            assert seen is not None, f"one deleted {name} without a version seen {where}"
            labels, ann = seen.get("labels") or {}, seen.get("annotations") or {}
            assert seen["uid"] == uid and labels.get(applyset.PART_OF_LABEL) == one_id, \
                f"one deleted {name} at {rv}, not its member then: {labels} {where}"
            assert ann.get(applyset.PRUNE_ANNOTATION) != "false", f"{name} {where}"
        for uid, meta in versions.deleted.items():
            owner = (meta.get("labels") or {}).get(applyset.PART_OF_LABEL)
            assert uid in removed or owner in (one_id, two_id), \
                f"{meta['name']} was deleted, and was no app's member {where}"
        lost = sorted(name for uid, name in hand.items()
                      if uid not in removed and uid in versions.deleted)
        assert lost == [], f"hand-made objects deleted: {lost} {where}"
    assert outcomes["synced"] > ITERATIONS // 2  # the test really syncs
    assert outcomes["pruned"] > 0 and outcomes["owned by hand"] > 0
    if ITERATIONS >= 100:  # and really meets the races it is about
        assert outcomes["kept late"] > 0, outcomes
