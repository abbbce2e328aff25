"""The parts of a many-app agent that need no cluster: the work queue's
fairness and priorities, how replicas divide apps, and the fingerprint that
spares an app a new plan when a commit did not touch it."""

from __future__ import annotations

import collections
import threading
from pathlib import Path

from kubectl_gitops.agent import config
from kubectl_gitops.agent.mirror import Mirror
from kubectl_gitops.agent.replicas import owner
from kubectl_gitops.agent.workqueue import WorkQueue
from kubectl_gitops.source import tree
from testing.git import commit, make_repo, write


def test_queue_one_key_of_a_group_at_a_time_and_others_go_past_it() -> None:
    q: WorkQueue[tuple[str, str]] = WorkQueue(group=lambda k: k[1])
    q.add(("app", "slow"))
    q.add(("drift", "slow"))
    q.add(("app", "other"))
    first = q.get(timeout=1)
    assert first == ("app", "slow")
    # The slow app's second key waits for its first; the other app's goes past.
    assert q.get(timeout=1) == ("app", "other")
    assert q.get(timeout=0.2) is None
    q.done(("app", "other"))
    q.done(first)
    assert q.get(timeout=1) == ("drift", "slow")


def test_queue_due_keys_by_priority_then_age() -> None:
    prio = {"drift": 0, "status": 1, "app": 2}
    q: WorkQueue[tuple[str, str]] = WorkQueue(group=lambda k: k, priority=lambda k: prio[k[0]])
    for name in ("a", "b", "c"):
        q.add(("app", name))
    q.add(("status", "b"))
    q.add(("drift", "c"))
    got = [q.get(timeout=1) for _ in range(5)]
    assert got == [("drift", "c"), ("status", "b"), ("app", "a"), ("app", "b"), ("app", "c")]


def test_queue_a_slow_group_holds_one_worker_only() -> None:
    """Four workers, one app whose keys take long: the others' keys all run."""
    q: WorkQueue[tuple[str, int]] = WorkQueue(group=lambda k: k[0])
    release = threading.Event()
    done: list[tuple[str, int]] = []

    def work() -> None:
        while (key := q.get(timeout=2)) is not None:
            if key[0] == "slow":
                release.wait(5)
            done.append(key)
            q.done(key)

    for i in range(3):
        q.add(("slow", i))
    for i in range(20):
        q.add((f"app{i}", 0))
    workers = [threading.Thread(target=work) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        deadline = threading.Event()
        for _ in range(50):
            if len([k for k in done if k[0] != "slow"]) == 20:
                break
            deadline.wait(0.1)
        assert len([k for k in done if k[0] != "slow"]) == 20
        assert not [k for k in done if k[0] == "slow"]
    finally:
        release.set()
        for w in workers:
            w.join()
    assert len([k for k in done if k[0] == "slow"]) == 3


def test_replicas_divide_apps_evenly_and_a_departure_moves_only_its_share() -> None:
    apps = [f"ns/app{i}" for i in range(3000)]
    three = ["agent a", "agent b", "agent c"]
    owners = {app: owner(three, app) for app in apps}
    counts = collections.Counter(owners.values())
    assert set(counts) == set(three)
    assert all(800 <= n <= 1200 for n in counts.values()), counts  # roughly a third each
    two = {app: owner(["agent a", "agent c"], app) for app in apps}
    moved = [app for app in apps if two[app] != owners[app]]
    assert moved and all(owners[app] == "agent b" for app in moved)  # only b's apps move
    assert owners == {app: owner(list(reversed(three)), app) for app in apps}  # order-free


def _fingerprints(tmp_path: Path, origin: Path, paths: list[str]) -> dict[str, str]:
    from kubectl_gitops.agent.runner import Agent, AppRun

    agent = Agent.__new__(Agent)
    agent._outside = {}
    mirror = Mirror(f"file://{origin}", tmp_path / "cache")
    mirror.fetch()
    out = {}
    for path in paths:
        run = AppRun(config.AppSpec(name=path, repo=str(origin), ref="main", path=path), mirror)
        src = tree.resolve(repo=mirror.dir, ref="main", path=path)
        out[path] = agent._fingerprint(run, src)
    return out


def test_a_commit_changes_the_fingerprint_of_the_paths_it_touches_only(
        tmp_path: Path, git_env: dict) -> None:
    origin = make_repo(tmp_path / "origin")
    for name in ("a", "b"):
        write(origin, f"apps/{name}/cm.yaml", f"kind: ConfigMap # {name}\n")
    write(origin, "bases/web/kustomization.yaml", "resources: [cm.yaml]\n")
    write(origin, "bases/web/cm.yaml", "kind: ConfigMap\n")
    write(origin, "apps/k/kustomization.yaml", "resources: [../../bases/web]\n")
    commit(origin, "first")
    paths = ["apps/a", "apps/b", "apps/k"]
    first = _fingerprints(tmp_path / "1", origin, paths)
    assert len(set(first.values())) == 3 and all(first.values())

    write(origin, "apps/a/cm.yaml", "kind: ConfigMap # a, changed\n")
    commit(origin, "a only")
    second = _fingerprints(tmp_path / "2", origin, paths)
    assert second["apps/a"] != first["apps/a"]
    assert second["apps/b"] == first["apps/b"]
    # A kustomization that reaches outside its path: any commit may change it.
    assert second["apps/k"] != first["apps/k"]

    write(origin, ".gitops.yaml", "exclude: ['*.txt']\n")
    commit(origin, "settings for every app")
    third = _fingerprints(tmp_path / "3", origin, paths)
    assert third["apps/b"] != second["apps/b"]
