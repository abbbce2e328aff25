"""Many apps in one agent, against the real control plane: shared watches,
replicas that divide the apps and take over a killed one's, and an idle cost
that does not grow with the number of apps (requests counted by the agent
itself, never timed)."""

from __future__ import annotations

import collections
import json
import subprocess
import time
from pathlib import Path

import pytest

from testing.agent import AgentProc, history, status, wait_for
from testing.git import commit, make_repo, write
from testing.kube import configmap, docs, get, kubectl


@pytest.fixture
def env(git_env: dict, kube_env: dict) -> dict:
    return {**kube_env, **{k: v for k, v in git_env.items() if k.startswith("GIT_")}}


def _apps(tmp_path: Path, ns: str, n: int, *, extra: str = "", objects: int = 1,
          name: str = "agent.yaml") -> tuple[Path, Path, str]:
    """An origin with ``apps/<i>`` for ``n`` apps (ConfigMaps, and a Secret
    each) and an agent.yaml naming them, all in namespace ``ns``."""
    origin = make_repo(tmp_path / f"origin-{name}")
    for i in range(n):
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"s{i}"},
                  "stringData": {"k": "v"}}
        write(origin, f"apps/{i}/all.yaml",
              docs(*[configmap(f"c{i}-{k}", {"v": "1"}) for k in range(objects)], secret))
    sha = commit(origin, f"{n} apps")
    cfg = tmp_path / name
    cfg.write_text("apps:\n" + "".join(
        f"- name: app{i}\n  repo: file://{origin}\n  ref: main\n  path: apps/{i}\n"
        f"  namespace: {ns}\n  selfHeal: true\n{extra}" for i in range(n)))
    return origin, cfg, sha


def _all_synced(ns: str, env: dict, n: int, sha: str) -> bool:
    out = json.loads(kubectl("get", "configmaps", "-n", ns, "-l",
                             "applyset.kubernetes.io/id", "-o", "json", env=env).stdout)
    done = [o for o in out["items"] if json.loads(
        (o["metadata"].get("annotations") or {}).get("kubectl-gitops.io/status") or "{}"
    ).get("revision") == sha]
    return len(done) == n


def _leaders(ns: str, env: dict, n: int) -> dict[str, str]:
    """app -> the pid of the agent its status names."""
    out = {}
    for i in range(n):
        agent = status(f"app{i}", ns, env).get("agent") or ""
        out[f"app{i}"] = agent.partition("pid=")[2].split(" ")[0]
    return out


def _requests(a: AgentProc, *verbs: str) -> float:
    return sum(a.metric("gitops_api_requests_total", verb=v) for v in verbs)


def _stopped(*agents: AgentProc) -> None:
    for a in agents:
        if not a.killed:
            assert a.stop() == 0, a.text()[-2000:]


def test_one_watch_per_type_for_several_apps_and_drift_in_one_corrected(
        tmp_path: Path, env: dict, fresh_namespace: str) -> None:
    ns = fresh_namespace
    _, cfg, sha = _apps(tmp_path, ns, 4, extra="  interval: 2s\n")
    a = AgentProc(tmp_path, env, "--config", str(cfg))
    try:
        a.wait_ready()
        wait_for(lambda: _all_synced(ns, env, 4, sha), 60, "all four apps synced")
        # ConfigMap and Secret members, and the parents: three watches for four
        # apps (one per type and app per namespace would be twelve).
        assert a.metric("gitops_watches") == 3
        assert a.metric("gitops_api_requests_total", verb="watch") == 3
        records = {i: len(history(f"app{i}", ns, env)) for i in range(4)}
        kubectl("patch", "configmap", "c2-0", "-n", ns, "-p", '{"data":{"v":"drifted"}}',
                env=env)
        wait_for(lambda: (get("configmap", "c2-0", env, ns) or {}).get("data") == {"v": "1"},
                 15, "the drift in app2 corrected")
        assert a.metric("gitops_drift_corrected_total", app="app2") == 1
        assert sum(a.metric("gitops_drift_corrected_total", app=f"app{i}")
                   for i in (0, 1, 3)) == 0
        # A record for the correction in app2, nothing written to the others.
        assert {i: len(history(f"app{i}", ns, env)) for i in range(4)} == \
            {**records, 2: records[2] + 1}
        assert a.metric("gitops_api_requests_total", verb="watch") == 3  # none re-opened
    finally:
        _stopped(a)


def _settled(a: AgentProc) -> bool:
    """Nothing but the replicas' heartbeat (a PUT and a LIST a tick) for 2 s."""
    before = _requests(a, "get", "patch", "post", "delete")
    time.sleep(2)
    return _requests(a, "get", "patch", "post", "delete") == before


def test_idle_requests_do_not_grow_with_the_number_of_apps(
        tmp_path: Path, env: dict, fresh_namespace: str, namespace: str) -> None:
    """Two agents side by side over one window, re-checking every 2 s: one
    with 1 app, one with 20; the requests each made in the window (watches
    aside) are counted, and the second made no more than the first."""
    _, one_cfg, one_sha = _apps(tmp_path, namespace, 1, extra="  interval: 2s\n",
                                name="one.yaml")
    _, many_cfg, many_sha = _apps(tmp_path, fresh_namespace, 20, extra="  interval: 2s\n",
                                  name="many.yaml")
    args = ("--lease-duration", "3")
    one = AgentProc(tmp_path, env, "--config", str(one_cfg), *args, tag="one")
    many = AgentProc(tmp_path, env, "--config", str(many_cfg), *args, tag="many")
    try:
        one.wait_ready()
        many.wait_ready()
        wait_for(lambda: _all_synced(namespace, env, 1, one_sha), 60, "the one app synced")
        wait_for(lambda: _all_synced(fresh_namespace, env, 20, many_sha), 120,
                 "the twenty apps synced")
        wait_for(lambda: _settled(many) and _settled(one), 60, "both idle")
        verbs = ("get", "list", "patch", "post", "put", "delete")
        plans = many.metric("gitops_plans_total")
        before = (_requests(one, *verbs), _requests(many, *verbs))
        checks = many.metric("gitops_reconcile_total", kind="app")
        time.sleep(6)  # a window of re-checks: three per app, sixty in all
        after = (_requests(one, *verbs), _requests(many, *verbs))
        assert many.metric("gitops_reconcile_total", kind="app") - checks >= 20
        idle_one, idle_many = after[0] - before[0], after[1] - before[1]
        assert idle_one > 0  # the heartbeat is counted
        # Two heartbeats (a PUT and a LIST each) of slack, for where the window
        # falls in each agent's period; sixty re-checks costing a request each
        # would be sixty more.
        assert idle_many <= idle_one + 4, (idle_one, idle_many)
        assert many.metric("gitops_plans_total") == plans  # re-checks plan nothing
    finally:
        _stopped(one, many)


@pytest.mark.slow
def test_three_replicas_divide_the_apps_and_take_over_a_killed_ones(
        tmp_path: Path, env: dict, fresh_namespace: str) -> None:
    ns, n = fresh_namespace, 24
    _, cfg, sha = _apps(tmp_path, ns, n, extra="  interval: 2s\n")
    args = ("--config", str(cfg), "--lease-duration", "4")
    agents = [AgentProc(tmp_path, env, *args, tag=f"r{k}") for k in range(3)]
    try:
        for a in agents:
            a.wait_ready()
        wait_for(lambda: _all_synced(ns, env, n, sha), 120, "all apps synced")

        def divided() -> dict[str, int] | None:
            led = {str(a.proc.pid): a.metric("gitops_apps_led") for a in agents}
            by_status = collections.Counter(_leaders(ns, env, n).values())
            return dict(by_status) if sum(led.values()) == n and all(led.values()) and \
                all(by_status.get(pid) == count for pid, count in led.items()) else None

        shares = wait_for(divided, 30, "each replica leading a share, as its status says")
        assert len(shares) == 3 and sum(shares.values()) == n

        victim = max(agents, key=lambda a: shares[str(a.proc.pid)])
        moved = [app for app, pid in _leaders(ns, env, n).items() if pid == str(victim.proc.pid)]
        victim.kill()  # SIGKILL: no goodbye, its Lease just stops being renewed
        rest = {str(a.proc.pid) for a in agents if a is not victim}
        wait_for(lambda: all(pid in rest for pid in _leaders(ns, env, n).values()), 4 + 10,
                 "its apps led by the others (the Lease duration, and a look)")

        # Nothing synced twice: one record per app (the first sync; the
        # replicas that looked at it after found it done), one manager.
        live = json.loads(kubectl("get", "configmaps", "-n", ns, "--show-managed-fields",
                                  "-o", "json", env=env).stdout)
        managers = {o["metadata"]["name"]: [(f["manager"], f["operation"])
                                            for f in o["metadata"]["managedFields"]]
                    for o in live["items"]}
        for i in range(n):
            assert [r["revision"] for r in history(f"app{i}", ns, env)] == [sha], i
            assert managers[f"c{i}-0"] == [("kubectl-gitops", "Apply")], managers[f"c{i}-0"]

        app = moved[0]
        kubectl("patch", "configmap", f"c{app.removeprefix('app')}-0", "-n", ns, "-p",
                '{"data":{"v":"drifted"}}', env=env)
        wait_for(lambda: (get("configmap", f"c{app.removeprefix('app')}-0", env, ns) or {})
                 .get("data") == {"v": "1"}, 15, "a drift in a moved app corrected")
        assert len(history(app, ns, env)) == 2  # the correction, once
    finally:
        _stopped(*agents)


def test_a_namespaced_agent_watches_per_namespace(tmp_path: Path, env: dict,
                                                  namespace: str) -> None:
    """An agent with rights in one namespace only (``agent manifests
    --namespaced``) may not watch cluster-wide: it watches that namespace,
    and drift there is still corrected."""
    ns = namespace
    user = f"agent-{ns}"[:63]
    rbac = docs({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                 "metadata": {"name": "agent", "namespace": ns},
                 "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": "agent", "namespace": ns},
                 "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                               "name": user}],
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                             "name": "agent"}})
    subprocess.run(["kubectl", "apply", "-f", "-"], input=rbac, env=env, check=True,
                   capture_output=True, text=True, timeout=60)
    _, cfg, sha = _apps(tmp_path, ns, 2, extra="  interval: 2s\n")
    a = AgentProc(tmp_path, env, "--config", str(cfg), "-n", ns, "--as", user)
    try:
        a.wait_ready()
        wait_for(lambda: _all_synced(ns, env, 2, sha), 60, "both apps synced")
        wait_for(lambda: "per namespace" in a.text(), 10, "the watches moved to the namespace")
        kubectl("patch", "configmap", "c1-0", "-n", ns, "-p", '{"data":{"v":"drifted"}}',
                env=env)
        wait_for(lambda: (get("configmap", "c1-0", env, ns) or {}).get("data") == {"v": "1"},
                 15, "the drift corrected")
        assert a.metric("gitops_app_stalled", reason="WatchFailed") == 0
        assert status("app1", ns, env)["health"] == "Healthy"
    finally:
        _stopped(a)


def test_a_fetch_fans_out_to_every_app_of_the_url(tmp_path: Path, env: dict,
                                                   fresh_namespace: str) -> None:
    """app0 is fetched every 2 s, app1 every hour: a commit for app1 is
    fetched by app0's interval and app1 looks at once (one fetch serves both)."""
    ns = fresh_namespace
    origin, cfg, sha = _apps(tmp_path, ns, 2, extra="  interval: 1h\n")
    cfg.write_text(cfg.read_text().replace("interval: 1h", "interval: 2s", 1))
    a = AgentProc(tmp_path, env, "--config", str(cfg))
    try:
        a.wait_ready()
        wait_for(lambda: _all_synced(ns, env, 2, sha), 60, "both apps synced")
        write(origin, "apps/1/all.yaml", docs(configmap("c1-0", {"v": "2"})))
        new = commit(origin, "app1 only")
        wait_for(lambda: status("app1", ns, env).get("revision") == new, 2 + 5,
                 "app1 synced within app0's interval + 5 s")
        assert status("app0", ns, env)["revision"] == sha  # not touched
        assert a.metric("gitops_plans_total", app="app0") == 1
    finally:
        _stopped(a)


def test_replicas_see_each_other_leave_and_forget_long_dead_ones(
        kube_env: dict, namespace: str) -> None:
    from kubectl_gitops.agent.replicas import GROUP_LABEL, Replicas
    from kubectl_gitops.kube.client import Kube
    from kubectl_gitops.kube.kubeconfig import Overrides

    kube = Kube(Overrides(kubeconfig=kube_env["KUBECONFIG"]))
    a, b = (Replicas(kube, namespace, "g", who, duration=5) for who in ("agent a", "agent b"))
    other = Replicas(kube, namespace, "h", "agent c", duration=5)  # another group
    for r in (a, b, other, a):
        r.tick()
    assert a.alive == ["agent a", "agent b"] and not a.error
    assert other.alive == ["agent c"]
    dead = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "dead", "labels": {GROUP_LABEL: "g"}},
            "spec": {"holderIdentity": "agent d", "leaseDurationSeconds": 5,
                     "renewTime": "2020-01-01T00:00:00.000000Z"}}
    kube.request("POST", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
                 body=dead)
    assert not a.tick()  # expired: not alive, and gone after ten durations
    assert a.alive == ["agent a", "agent b"]
    leases = kube.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases")
    assert sorted(i["metadata"]["name"] for i in leases["items"]) == \
        sorted([a.name, b.name, other.name])
    b.leave()
    assert a.tick() and a.alive == ["agent a"]
    assert a.mine("ns/x") and a.mine("ns/y")
