"""`kubectl gitops agent` against the real control plane, run as a subprocess
with a kubeconfig, pulling from a real git remote over file://.

Times in these tests are bounds on how long to wait for something to become
true (the contract: a commit is synced within the interval + 5 s, a webhook
within 5 s), never measurements."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from testing.agent import SECRET, AgentProc, events, history, status, wait_for
from testing.git import commit, make_repo, write
from testing.kube import configmap, deployment, docs, get, gitops, kubectl


@pytest.fixture
def env(git_env: dict, kube_env: dict) -> dict:
    return {**kube_env, **{k: v for k, v in git_env.items() if k.startswith("GIT_")}}


def _origin(tmp_path: Path, text: str) -> tuple[Path, str]:
    repo = make_repo(tmp_path / "origin")
    write(repo, "deploy/all.yaml", text)
    return repo, commit(repo, "first")


def _agent(tmp_path: Path, env: dict, ns: str, origin: Path, *extra: str,
           tag: str = "a") -> AgentProc:
    a = AgentProc(tmp_path, env, "--repo", f"file://{origin}", "--ref", "main",
                  "--path", "deploy", "--name", "app", "-n", ns, *extra, tag=tag)
    a.wait_ready()
    return a


def _synced(ns: str, env: dict, sha: str, bound: float, what: str) -> dict:
    return wait_for(lambda: (s := status("app", ns, env)).get("revision") == sha
                    and s.get("sync") == "Synced" and s, bound, what)


def _data(ns: str, env: dict, name: str = "settings") -> dict:
    return (get("configmap", name, env, ns) or {}).get("data") or {}


def _stopped(a: AgentProc) -> None:
    if a.killed:  # a test that failed between kill() and restart()
        return
    assert a.stop() == 0, a.text()[-2000:]
    assert "stopped" in a.text()


def _settings(color: str, team: str = "a") -> dict:
    return configmap("settings", {"color": color}, labels={"team": team})


def test_pull_sync_report_only_drift_and_invalid_commit(tmp_path: Path, env: dict,
                                                        fresh_namespace: str) -> None:
    ns = fresh_namespace
    origin, sha1 = _origin(tmp_path, docs(_settings("blue"), deployment("web", 1)))
    a = _agent(tmp_path, env, ns, origin, "--interval", "1s")
    try:
        _synced(ns, env, sha1, 30, "first sync")
        assert _data(ns, env) == {"color": "blue"}

        write(origin, "deploy/all.yaml", docs(_settings("green"), deployment("web", 1)))
        sha2 = commit(origin, "green")
        _synced(ns, env, sha2, 1 + 5, "a commit synced within the interval + 5 s")
        assert _data(ns, env) == {"color": "green"}
        assert any(sha2[:12] in e["message"] for e in events(ns, env, "Synced"))
        records = len(history("app", ns, env))
        assert records == 2

        # Ticks that find the same revision write nothing: not the parent, no record.
        def after_fetches(n: int) -> None:
            start = a.metric("gitops_git_fetches_total")
            wait_for(lambda: a.metric("gitops_git_fetches_total") >= start + n, 15,
                     f"{n} more fetches")

        after_fetches(2)
        rv = get("configmap", "app", env, ns)["metadata"]["resourceVersion"]
        after_fetches(3)
        assert get("configmap", "app", env, ns)["metadata"]["resourceVersion"] == rv

        # Drift without self-heal: detected, in status and as an Event; nothing written.
        kubectl("patch", "configmap", "settings", "-n", ns, "-p", '{"data":{"color":"red"}}',
                env=env)
        st = wait_for(lambda: (s := status("app", ns, env))["driftCount"] == 1 and s, 10,
                      "drift in status")
        assert st["sync"] == "OutOfSync"
        assert "ConfigMap" in st["drift"][0] and ".data.color" in st["drift"][0]
        ev = wait_for(lambda: events(ns, env, "DriftDetected"), 10, "drift Event")
        assert "kubectl-patch" in ev[0]["message"] and ev[0]["type"] == "Warning"
        assert _data(ns, env) == {"color": "red"}
        assert len(history("app", ns, env)) == records

        assert a.http("/healthz")[0] == 200
        assert a.metric("gitops_drift_detected_total", app="app") == 1
        assert a.metric("gitops_drift_corrected_total", app="app") == 0
        assert a.metric("gitops_objects_managed", app="app") == 2
        assert a.metric("gitops_last_successful_sync_timestamp_seconds", app="app") > 0
        assert a.metric("gitops_reconcile_total", app="app", kind="app", result="ok") >= 2
        assert a.metric("gitops_reconcile_duration_seconds_count", app="app") >= 2
        assert a.metric("gitops_api_requests_total", verb="watch") >= 1
        out = gitops("status", "app", "-n", ns, "-o", "json", cwd=tmp_path, env=env)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert (doc["managedBy"], doc["sync"], doc["driftCount"], doc["revision"]) == \
            ("agent", "OutOfSync", 1, sha2)

        # An invalid commit: not applied, status names file:line, the old revision stays.
        bad = deployment("broken", 1)
        bad["spec"]["replica"] = 2  # a typo the schema does not know
        write(origin, "deploy/all.yaml", docs(_settings("purple"), deployment("web", 1)))
        write(origin, "deploy/broken.yaml", docs(bad))
        sha3 = commit(origin, "broken")
        st = wait_for(lambda: "deploy/broken.yaml:" in (s := status("app", ns, env))
                      .get("lastError", "") and s, 10, "invalid revision in status")
        assert sha3[:12] in st["lastError"] and st["revision"] == sha2
        assert get("deployment", "broken", env, ns) is None
        assert _data(ns, env) == {"color": "red"}
        assert events(ns, env, "InvalidRevision")

        listed = gitops("ls", "-n", ns, "-o", "json", cwd=tmp_path, env=env)
        assert [x["name"] for x in json.loads(listed.stdout)] == ["app"]
        table = gitops("ls", "-n", ns, cwd=tmp_path, env=env).stdout
        assert "app" in table and "OutOfSync" in table
    finally:
        _stopped(a)


def _corrected(ns: str, env: dict, reason_part: str, pred: object) -> None:
    wait_for(lambda: pred() and any(reason_part in e["message"]  # type: ignore[operator]
                                    for e in events(ns, env, "DriftCorrected")),
             15, f"corrected: {reason_part}")


def test_webhook_self_heal_backoff_and_suspend(tmp_path: Path, env: dict,
                                               fresh_namespace: str) -> None:
    ns = fresh_namespace
    flip = configmap("flip", {"color": "green"})
    origin, sha1 = _origin(tmp_path, docs(_settings("blue"), deployment("web", 1), flip))
    a = _agent(tmp_path, env, ns, origin, "--interval", "1h", "--self-heal",
               "--heal-backoff", "1s")
    try:
        _synced(ns, env, sha1, 30, "first sync")
        write(origin, "deploy/all.yaml", docs(_settings("green"), deployment("web", 1), flip))
        sha2 = commit(origin, "green")
        assert a.http("/hooks/git", data=b"{}")[0] == 401
        assert a.http("/hooks/git", data=b"{}", headers={"X-Gitops-Secret": SECRET})[0] == 202
        _synced(ns, env, sha2, 5, "synced within 5 s of the webhook")

        kubectl("scale", "deployment", "web", "-n", ns, "--replicas=3", env=env)
        _corrected(ns, env, "Deployment", lambda: get("deployment", "web", env, ns)
                   ["spec"]["replicas"] == 1)
        kubectl("patch", "configmap", "settings", "-n", ns, "-p", '{"data":{"color":"red"}}',
                env=env)
        _corrected(ns, env, "kubectl-patch", lambda: _data(ns, env) == {"color": "green"})
        kubectl("label", "--overwrite", "configmap", "settings", "-n", ns, "team=b", env=env)
        _corrected(ns, env, "kubectl-label", lambda: (get("configmap", "settings", env, ns)
                                                      ["metadata"]["labels"]["team"] == "a"))
        kubectl("delete", "configmap", "settings", "-n", ns, env=env)
        _corrected(ns, env, "deleted", lambda: _data(ns, env) == {"color": "green"})
        detected = " | ".join(e["message"] for e in events(ns, env, "DriftDetected"))
        for part in (".spec.replicas", "kubectl-patch", "kubectl-label", "deleted"):
            assert part in detected
        # From a clone: the source the agent reads (the origin itself, without
        # a remote, is another source, which diff refuses as sync does).
        diff = gitops("diff", "deploy", "--name", "app", "-n", ns,
                      cwd=_clone(tmp_path, origin), env=env)
        assert diff.returncode == 0, diff.stdout + diff.stderr
        assert wait_for(lambda: status("app", ns, env)["driftCount"] == 0, 10, "no drift")

        # A second writer flipping a field cannot make the agent spin: corrections
        # of that object follow the backoff (1 s, doubling), not the writer.
        def flips_corrected() -> int:
            return len([e for e in events(ns, env, "DriftCorrected")
                        if "ConfigMap" in e["message"] and "/flip:" in e["message"]])

        flips, end = 0, time.monotonic() + 7
        while time.monotonic() < end:
            color = "red" if flips % 2 else "yellow"
            kubectl("patch", "configmap", "flip", "-n", ns, "-p",
                    json.dumps({"data": {"color": color}}), env=env)
            flips += 1
            time.sleep(0.1)
        wait_for(lambda: _data(ns, env, "flip") == {"color": "green"}, 30,
                 "corrected after the flips")
        corrections = flips_corrected()
        # 1 s doubling over ~7 s of flipping: t=0, 1, 3, 7, and the last one after.
        assert 2 <= corrections <= 5 < flips, (corrections, flips)

        # suspend: drift is reported, not corrected; resume corrects it.
        assert gitops("suspend", "app", "-n", ns, cwd=tmp_path, env=env).returncode == 0
        wait_for(lambda: status("app", ns, env).get("suspended"), 10, "suspended in status")
        detected = len(events(ns, env, "DriftDetected"))
        kubectl("scale", "deployment", "web", "-n", ns, "--replicas=2", env=env)
        wait_for(lambda: len(events(ns, env, "DriftDetected")) > detected, 10, "reported")
        assert get("deployment", "web", env, ns)["spec"]["replicas"] == 2
        assert gitops("resume", "app", "-n", ns, cwd=tmp_path, env=env).returncode == 0
        wait_for(lambda: get("deployment", "web", env, ns)["spec"]["replicas"] == 1, 10,
                 "corrected after resume")
    finally:
        _stopped(a)


def test_unreachable_remote_keeps_the_revision_and_never_prunes(tmp_path: Path, env: dict,
                                                                fresh_namespace: str) -> None:
    ns = fresh_namespace
    origin, sha1 = _origin(tmp_path, docs(configmap("a"), configmap("b")))
    a = _agent(tmp_path, env, ns, origin, "--interval", "1s", "--prune")
    try:
        _synced(ns, env, sha1, 30, "first sync")
        gone = origin.rename(tmp_path / "gone")
        st = wait_for(lambda: (s := status("app", ns, env)).get("health") == "Degraded" and s,
                      10, "degraded")
        assert "fetching" in st["lastError"] and st["revision"] == sha1
        assert events(ns, env, "FetchFailed")
        assert a.metric("gitops_git_fetch_errors_total", app="app") >= 1
        assert get("configmap", "b", env, ns) is not None

        gone.rename(origin)
        write(origin, "deploy/all.yaml", docs(configmap("a")))
        sha2 = commit(origin, "drop b")
        st = _synced(ns, env, sha2, 10, "recovered")
        assert st["lastError"] == "" and st["health"] == "Healthy"
        assert get("configmap", "b", env, ns) is None  # pruned, now that git says so
    finally:
        _stopped(a)


def _leader(ns: str, env: dict) -> str:
    """Who leads the app: the agent its status names."""
    return str(status("app", ns, env).get("agent") or "")


def test_two_agents_one_writer_and_takeover_after_a_kill_mid_sync(
        tmp_path: Path, env: dict, fresh_namespace: str) -> None:
    """Two replicas of one agent: one leads the app, the other writes
    nothing to it; the leader killed mid-sync, the other takes the app
    within the Lease duration and converges; the revision is recorded
    once at most (never synced twice)."""
    ns = fresh_namespace
    cms = [configmap(f"c{i:02}", {"v": "1"}) for i in range(60)]
    origin, sha1 = _origin(tmp_path, docs(*cms))
    args = ("--interval", "1s", "--self-heal", "--lease-duration", "4",
            "--replica-group", "two")
    one = _agent(tmp_path, env, ns, origin, *args, tag="one")
    two = _agent(tmp_path, env, ns, origin, *args, tag="two")
    leader = follower = one
    try:
        _synced(ns, env, sha1, 30, "first sync")
        # Once both see each other, one of them leads the app.
        wait_for(lambda: one.metric("gitops_apps_led") + two.metric("gitops_apps_led") == 1,
                 15, "one leader")
        holder = wait_for(lambda: (h := _leader(ns, env)) and
                          (one if f"pid={one.proc.pid} " in h else two).metric(
                              "gitops_apps_led") == 1 and h, 15, "the leader's status")
        leader, follower = (one, two) if f"pid={one.proc.pid} " in holder else (two, one)
        patches = follower.metric("gitops_api_requests_total", verb="patch")
        time.sleep(2)  # the follower stays out: no apply, no status (PATCH), no delete
        assert follower.metric("gitops_api_requests_total", verb="patch") == patches
        assert follower.metric("gitops_api_requests_total", verb="delete") == 0

        mark = len(leader.text())
        write(origin, "deploy/all.yaml", docs(*[configmap(f"c{i:02}", {"v": "2"})
                                                for i in range(60)]))
        sha2 = commit(origin, "v2")
        wait_for(lambda: "configured" in leader.text()[mark:], 15, "the leader syncing")
        leader.kill()  # SIGKILL, mid-sync or (a fast machine) just after it
        wait_for(lambda: f"pid={follower.proc.pid} " in _leader(ns, env), 4 + 10,
                 "the other agent leading the app (the Lease duration, and a look)")
        _synced(ns, env, sha2, 20, "the other agent took over and converged")
        live = json.loads(kubectl("get", "configmaps", "-n", ns, "-o", "json", env=env).stdout)
        values = {o["metadata"]["name"]: o.get("data") for o in live["items"]}
        assert all(values[f"c{i:02}"] == {"v": "2"} for i in range(60))
        # From a clone: the source the agent reads (the origin itself, without
        # a remote, is another source, which diff refuses as sync does).
        diff = gitops("diff", "deploy", "--name", "app", "-n", ns,
                      cwd=_clone(tmp_path, origin), env=env)
        assert diff.returncode == 0, diff.stdout + diff.stderr
        records = history("app", ns, env)
        assert len([r for r in records if r.get("revision") == sha2]) <= 1, records
        assert len([r for r in records if r.get("revision") == sha1]) == 1, records
    finally:
        _stopped(follower)
        _stopped(leader)


def test_agent_manifests_pass_a_server_dry_run(tmp_path: Path, env: dict,
                                               namespace: str) -> None:
    import yaml

    for mode in ("--namespaced", "--cluster-wide"):
        out = gitops("agent", "manifests", "-n", namespace, mode, "--repo",
                     "https://git.example.com/x.git", "--self-heal", cwd=tmp_path, env=env)
        assert out.returncode == 0, out.stderr
        objs = list(yaml.safe_load_all(out.stdout))
        kinds = {o["kind"] for o in objs}
        assert {"ServiceAccount", "Deployment", "ConfigMap"} <= kinds
        dep = next(o for o in objs if o["kind"] == "Deployment")
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert dep["spec"]["replicas"] == 2 and pod["securityContext"]["runAsNonRoot"]
        assert c["securityContext"]["readOnlyRootFilesystem"] and c["livenessProbe"]
        assert c["readinessProbe"] and c["resources"]["requests"]
        if mode == "--namespaced":
            assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
        proc = subprocess.run(["kubectl", "apply", "--dry-run=server", "-f", "-"],
                              input=out.stdout, env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr

    # Applied for real, the namespaced RBAC grants writes in its namespace only.
    out = gitops("agent", "manifests", "-n", namespace, "--namespaced", cwd=tmp_path, env=env)
    rbac = [o for o in yaml.safe_load_all(out.stdout)
            if o["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    subprocess.run(
        ["kubectl", "apply", "-f", "-"], input=yaml.safe_dump_all(rbac), env=env, check=True,
        capture_output=True, text=True, timeout=60)
    who = f"system:serviceaccount:{namespace}:kubectl-gitops-agent"
    can = [kubectl("auth", "can-i", *q, "--as", who, env=env, check=False).stdout.strip()
           for q in (["create", "deployments", "-n", namespace],
                     ["create", "deployments", "-n", "default"],
                     ["create", "clusterroles"])]
    assert can == ["yes", "no", "no"]


def test_status_of_an_app_synced_only_by_the_cli(tmp_path: Path, env: dict,
                                                 fresh_namespace: str) -> None:
    repo, sha = _origin(tmp_path, docs(configmap("a"), deployment("web", 1)))
    sync = gitops("sync", "deploy", "-n", fresh_namespace, "--name", "cli-app",
                  cwd=repo, env=env)
    assert sync.returncode == 0, sync.stderr
    out = gitops("status", "cli-app", "-o", "json", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["managedBy"], doc["revision"], doc["lastResult"], doc["members"]) == \
        ("cli", sha, "succeeded", 2)
    # No kubelet runs here: the Deployment never becomes available.
    assert doc["health"] == "Progressing" and "Deployment" in doc["unhealthy"][0]
    text = gitops("status", "cli-app", "-n", fresh_namespace, cwd=tmp_path, env=env).stdout
    assert "Managed by:  cli" in text and sha in text
    missing = gitops("status", "nope", "-n", fresh_namespace, cwd=tmp_path, env=env)
    assert missing.returncode == 2 and "no application nope" in missing.stderr


def test_config_file_reload_and_json_logs(tmp_path: Path, env: dict,
                                          fresh_namespace: str) -> None:
    ns = fresh_namespace
    one = make_repo(tmp_path / "one")
    write(one, ".gitops.yaml", f"name: shop\npath: deploy\nnamespace: {ns}\n")
    write(one, "deploy/all.yaml", docs(configmap("a")))
    sha1 = commit(one, "one")
    two, sha2 = _origin(tmp_path, docs(configmap("b")))
    cfg = tmp_path / "agent.yaml"
    apps = (f"apps:\n- repo: {one}\n  interval: 1s\n"  # a local path, no name
            f"- name: two\n  repo: file://{two}\n  ref: main\n  path: deploy\n"
            f"  namespace: {ns}\n  interval: 1s\n  suspend: SUSPEND\n")
    cfg.write_text(apps.replace("SUSPEND", "true"))
    a = AgentProc(tmp_path, env, "--config", str(cfg), "--log-format", "json")
    a.wait_ready()
    try:
        wait_for(lambda: status("shop", ns, env).get("revision") == sha1, 30,
                 "the app named by .gitops.yaml")
        wait_for(lambda: a.metric("gitops_git_fetches_total", app="two") >= 3, 15, "fetches")
        assert get("configmap", "b", env, ns) is None  # suspended: fetched, never synced
        cfg.write_text(apps.replace("SUSPEND", "false"))
        a.proc.send_signal(1)  # SIGHUP (the file's change would do too)
        wait_for(lambda: status("two", ns, env).get("revision") == sha2, 30, "reloaded")
        assert get("configmap", "b", env, ns) is not None
    finally:
        _stopped(a)
    logs = [json.loads(line) for line in a.text().splitlines() if line.strip()]
    assert {"time", "level", "msg"} <= set(logs[0])
    assert any("reloaded" in entry["msg"] for entry in logs)


# --- the agent as a driver of the engine, on an empty cluster -------------------------

def _namespace_doc(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"team": "shop"}}}


def _stalled_count(a: AgentProc, reason: str) -> float:
    return a.metric("gitops_app_stalled", reason=reason)


def test_bootstrap_an_app_that_creates_its_own_namespace(tmp_path: Path, env: dict,
                                                          fresh_namespace: str) -> None:
    """The new user's first try: the revision's first file is the app's own
    Namespace, which does not exist. An invalid first revision writes
    nothing (not even the namespace) and keeps /readyz not ready; the fixed
    one syncs within the interval + 5 s, the Lease in the app's namespace."""
    ns = fresh_namespace
    bad = deployment("web", 1)
    bad["spec"]["replica"] = 2  # a typo the schema does not know
    origin, _ = _origin(tmp_path, docs(_namespace_doc(ns), configmap("settings"), bad))
    a = AgentProc(tmp_path, env, "--repo", f"file://{origin}", "--ref", "main", "--path",
                  "deploy", "--name", "shop", "-n", ns, "--prune", "--self-heal",
                  "--interval", "2s")
    try:
        wait_for(lambda: "InvalidRevision" in a.text(), 30, "the invalid revision reported")
        assert "WARNING" in a.text() and "app shop:" in a.text()
        assert "deploy/all.yaml:" in a.text()  # file:line
        assert a.http("/readyz")[0] == 503
        assert _stalled_count(a, "InvalidRevision") == 1
        assert get("namespace", ns, env) is None  # nothing written for an invalid revision

        write(origin, "deploy/all.yaml", docs(_namespace_doc(ns), configmap("settings"),
                                              deployment("web", 1)))
        sha = commit(origin, "fixed")
        st = wait_for(lambda: (s := status("shop", ns, env)).get("revision") == sha and s,
                      2 + 5, "synced within the interval + 5 s")
        assert st["sync"] == "Synced" and st["stalled"] == "" and st["lastError"] == ""
        assert get("namespace", ns, env)["metadata"]["labels"]["team"] == "shop"
        assert f"pid={a.proc.pid} " in st["agent"]
        lease = get("lease", "kubectl-gitops.shop", env, ns)  # taken for the write only
        assert not lease["spec"].get("holderIdentity"), lease
        assert int(lease["spec"].get("leaseTransitions") or 0) == 0
        assert a.http("/readyz")[0] == 200
        assert _stalled_count(a, "InvalidRevision") == 0
        listed = json.loads(gitops("ls", "-n", ns, "-o", "json", cwd=tmp_path, env=env).stdout)
        assert [(x["name"], x["managedBy"], x["revision"]) for x in listed] == \
            [("shop", "agent", sha)]
    finally:
        _stopped(a)


def test_three_apps_one_repo_three_new_namespaces(tmp_path: Path, env: dict,
                                                  fresh_namespace: str) -> None:
    """--config with three apps of one repository, each in a namespace of its
    own that does not exist: all sync within the interval + 5 s, from one
    mirror."""
    nss = [f"{fresh_namespace}-{i}" for i in range(3)]
    origin = make_repo(tmp_path / "origin")
    for i, ns in enumerate(nss):
        write(origin, f"apps/{i}/all.yaml", docs(configmap(f"c{i}")))
    sha = commit(origin, "three apps")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("apps:\n" + "".join(
        f"- name: app{i}\n  repo: file://{origin}\n  ref: main\n  path: apps/{i}\n"
        f"  namespace: {ns}\n  interval: 2s\n" for i, ns in enumerate(nss)))
    a = AgentProc(tmp_path, env, "--config", str(cfg))
    try:
        a.wait_ready()
        for i, ns in enumerate(nss):
            wait_for(lambda: status(f"app{i}", ns, env).get("revision") == sha, 2 + 5,
                     f"app{i} synced within the interval + 5 s")
            assert get("configmap", f"c{i}", env, ns) is not None
        mirrors = [p.name for p in (tmp_path / "cache-a").iterdir()]
        assert len(mirrors) == 1 and mirrors[0].endswith(".git"), mirrors
        assert a.metric("gitops_git_fetch_errors_total") == 0
    finally:
        _stopped(a)
        for ns in nss:
            kubectl("delete", "namespace", ns, "--wait=false", env=env, check=False)


def test_webhooks_in_a_row_one_fetch_each_for_three_apps_of_one_url(
        tmp_path: Path, env: dict, fresh_namespace: str) -> None:
    ns = fresh_namespace
    origin = make_repo(tmp_path / "origin")
    for i in range(3):
        write(origin, f"apps/{i}/all.yaml", docs(configmap(f"c{i}", {"gen": "0"})))
    sha = commit(origin, "three apps")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("apps:\n" + "".join(
        f"- name: app{i}\n  repo: file://{origin}\n  ref: main\n  path: apps/{i}\n"
        f"  namespace: {ns}\n  interval: 1h\n" for i in range(3)))
    a = AgentProc(tmp_path, env, "--config", str(cfg))

    def all_at(rev: str) -> bool:
        return all(status(f"app{i}", ns, env).get("revision") == rev for i in range(3))

    def plans(i: int) -> float:
        return a.metric("gitops_plans_total", app=f"app{i}")

    def hook() -> None:
        assert a.http("/hooks/git", data=b"{}", headers={"X-Gitops-Secret": SECRET})[0] == 202

    try:
        a.wait_ready()
        wait_for(lambda: all_at(sha), 30, "the first sync of all three")
        fetches = a.metric("gitops_git_fetches_total")
        assert fetches == 1  # one clone served all three apps
        for n in range(1, 11):  # a push and its webhook, ten times
            write(origin, "apps/0/all.yaml", docs(configmap("c0", {"gen": str(n)})))
            sha = commit(origin, f"push {n}")
            hook()
            wait_for(lambda: status("app0", ns, env).get("revision") == sha, 10,
                     f"push {n} synced")
        assert a.metric("gitops_git_fetches_total") == fetches + 10  # one per trigger
        fetches += 10
        # The pushes touched apps/0 only: the others were not planned again,
        # and their status still names the revision that last changed them.
        assert plans(0) == 11 and plans(1) == plans(2) == 1
        assert status("app1", ns, env)["revision"] == status("app2", ns, env)["revision"] \
            != sha
        last0 = sha

        write(origin, "apps/1/all.yaml", docs(configmap("c1", {"gen": "burst"})))
        sha = commit(origin, "burst")
        for _ in range(10):  # ten at once: never more fetches than triggers
            hook()
        wait_for(lambda: status("app1", ns, env).get("revision") == sha, 10, "the burst synced")
        assert 1 <= a.metric("gitops_git_fetches_total") - fetches <= 10
        assert plans(1) == 2 and plans(0) == 11 and plans(2) == 1
        assert status("app0", ns, env)["revision"] == last0
        assert (get("configmap", "c1", env, ns) or {}).get("data") == {"gen": "burst"}
        assert a.metric("gitops_git_fetch_errors_total") == 0
        assert not events(ns, env, "FetchFailed")
        assert "cannot lock ref" not in a.text() and "File exists" not in a.text()
        assert all(status(f"app{i}", ns, env)["health"] == "Healthy" for i in range(3))
    finally:
        _stopped(a)


def _rbac(user: str, *, leases: bool) -> str:
    """What the agent needs for an app of ConfigMaps; ``leases`` or not."""
    rules = [{"apiGroups": [""], "resources": ["namespaces", "configmaps", "events"],
              "verbs": ["*"]}]
    if leases:
        rules.append({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                      "verbs": ["get", "create", "update"]})
    return docs({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                 "metadata": {"name": user}, "rules": rules},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                 "metadata": {"name": user},
                 "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                               "name": user}],
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                             "name": user}})


def _clone(tmp_path: Path, origin: Path) -> Path:
    """A clone of ``origin``: the CLI then reads the source the agent's mirror
    reads (one remote URL), so the two hand the app over without --take-over."""
    work = tmp_path / "work"
    if not work.exists():
        subprocess.run(["git", "clone", "--quiet", f"file://{origin}", str(work)], check=True,
                       capture_output=True, timeout=60)
    else:
        subprocess.run(["git", "pull", "--quiet"], cwd=work, check=True, capture_output=True,
                       timeout=60)
    return work


def _kubectl_apply(text: str, env: dict) -> None:
    subprocess.run(["kubectl", "apply", "-f", "-"], input=text, env=env, check=True,
                   capture_output=True, text=True, timeout=60)


def test_an_agent_without_lease_rights_says_so(tmp_path: Path, env: dict,
                                               fresh_namespace: str) -> None:
    """RBAC without ``leases``: a WARNING within one interval, /readyz not
    ready, the metric; once a parent exists (a CLI sync), the reason in
    status and ls and an Event; granted the right, the agent takes over."""
    ns = fresh_namespace
    user = f"agent-{ns}"[:63]
    _kubectl_apply(_rbac(user, leases=False), env)
    origin, sha = _origin(tmp_path, docs(configmap("settings")))
    a = AgentProc(tmp_path, env, "--repo", f"file://{origin}", "--ref", "main", "--path",
                  "deploy", "--name", "app", "-n", ns, "--interval", "2s",
                  "--lease-duration", "3", "--as", user)
    try:
        wait_for(lambda: "LeaseFailed" in a.text(), 2 + 5, "a WARNING within one interval")
        line = next(ln for ln in a.text().splitlines() if "LeaseFailed" in ln)
        assert "WARNING" in line and "app app:" in line and "forbidden" in line
        assert a.http("/readyz")[0] == 503
        assert _stalled_count(a, "LeaseFailed") == 1
        assert a.metric("gitops_errors_total", reason="LeaseFailed") >= 1

        # Repeats of the same failure are logged with backoff, not every tick.
        wait_for(lambda: a.metric("gitops_errors_total", reason="LeaseFailed") >= 4, 20,
                 "more tries")
        assert a.text().count("LeaseFailed") == 1

        sync = gitops("sync", "deploy", "-n", ns, "--name", "app", cwd=_clone(tmp_path, origin),
                      env=env)
        assert sync.returncode == 0, sync.stderr
        st = wait_for(lambda: (s := status("app", ns, env)).get("stalled") == "LeaseFailed"
                      and s, 10, "the reason in status")
        assert "forbidden" in st["lastError"]
        stalled = [c for c in st["conditions"] if c["type"] == "Stalled"]
        assert stalled == [{**stalled[0], "status": "True", "reason": "LeaseFailed"}]
        listed = json.loads(gitops("ls", "-n", ns, "-o", "json", cwd=tmp_path,
                                   env=env).stdout)
        assert listed[0]["stalled"] == "LeaseFailed"
        assert "LeaseFailed" in gitops("ls", "-n", ns, cwd=tmp_path, env=env).stdout
        ev = wait_for(lambda: events(ns, env, "LeaseFailed"), 10, "an Event on the parent")
        assert ev[0]["type"] == "Warning" and "forbidden" in ev[0]["message"]
        assert a.http("/readyz")[0] == 503

        _kubectl_apply(_rbac(user, leases=True), env)
        wait_for(lambda: (s := status("app", ns, env)).get("stalled") == "" and
                 s.get("revision") == sha, 15, "the agent takes over once it may")
        assert a.http("/readyz")[0] == 200
        assert _stalled_count(a, "LeaseFailed") == 0
        assert "works again" in a.text()
    finally:
        _stopped(a)
        kubectl("delete", "clusterrole,clusterrolebinding", user, env=env, check=False)


_IGNORE_REPLICAS = ("ignore:\n- group: apps\n  kind: Deployment\n"
                    "  jsonPointers: [/spec/replicas]\n")


def _web(ns: str, env: dict) -> dict:
    obj = get("deployment", "web", env, ns) or {}
    meta = obj.get("metadata") or {}
    return {"replicas": obj.get("spec", {}).get("replicas"),
            "generation": meta.get("generation"),
            "hash": (meta.get("annotations") or {}).get("kubectl-gitops.io/applied-hash")}


def test_ignore_rules_hold_in_the_agent_and_cli_and_agent_hand_over_unchanged(
        tmp_path: Path, env: dict, fresh_namespace: str) -> None:
    ns = fresh_namespace
    origin = make_repo(tmp_path / "origin")
    write(origin, ".gitops.yaml", _IGNORE_REPLICAS)
    write(origin, "deploy/all.yaml", docs(_settings("blue"), deployment("web", 2)))
    sha = commit(origin, "first")
    args = ("--interval", "1s", "--self-heal", "--prune")
    a = _agent(tmp_path, env, ns, origin, *args)
    try:
        _synced(ns, env, sha, 30, "first sync")
        kubectl("scale", "deployment", "web", "-n", ns, "--replicas=3", env=env)
        # A drift the agent corrects, after the scale: the scale was looked at first.
        kubectl("patch", "configmap", "settings", "-n", ns, "-p", '{"data":{"color":"red"}}',
                env=env)
        _corrected(ns, env, "kubectl-patch", lambda: _data(ns, env) == {"color": "blue"})
        assert _web(ns, env)["replicas"] == 3  # left alone, as kubectl gitops sync does
        assert not [e for e in events(ns, env, "DriftDetected") if "Deployment" in e["message"]]
    finally:
        _stopped(a)
    before = _web(ns, env)
    records = len(history("app", ns, env))

    sync = gitops("sync", "deploy", "--name", "app", "-n", ns, cwd=_clone(tmp_path, origin),
                  env=env)
    assert sync.returncode == 0, sync.stderr
    assert "0 created, 0 updated" in sync.stderr
    assert _web(ns, env) == before  # the CLI takes it back without a write

    b = _agent(tmp_path, env, ns, origin, *args, tag="b")
    try:
        wait_for(lambda: f"pid={b.proc.pid} " in (status("app", ns, env).get("agent") or ""),
                 30, "the agent took the app back")
        assert _web(ns, env) == before  # same hash, no write: replicas still 3
        assert len(history("app", ns, env)) == records
    finally:
        _stopped(b)


def test_health_is_never_healthy_below_the_wanted_replicas(tmp_path: Path, env: dict,
                                                            fresh_namespace: str) -> None:
    """No kubelet runs here: a Deployment of 3 never has a ready replica. Read
    from the first status on, after the first sync and after a takeover
    (where the agent starts from a LIST of the members), status and ls never
    say Healthy."""
    ns = fresh_namespace
    origin, sha = _origin(tmp_path, docs(configmap("settings"), deployment("web", 3)))
    seen: list[str] = []

    def watch_health(until: Callable[[dict], bool], bound: float) -> dict:
        def look() -> dict | None:
            st = status("app", ns, env)
            if st:
                seen.append(st["health"])
            return st if st and until(st) else None
        return wait_for(look, bound, "status")

    a = _agent(tmp_path, env, ns, origin, "--interval", "1s")
    try:
        watch_health(lambda s: s.get("revision") == sha, 30)
        for _ in range(20):  # the LIST and the watch events come in meanwhile
            watch_health(lambda s: True, 5)
    finally:
        _stopped(a)
    kubectl("annotate", "configmap", "app", "-n", ns, "kubectl-gitops.io/status-", env=env)
    b = _agent(tmp_path, env, ns, origin, "--interval", "1s", tag="b")
    try:
        watch_health(lambda s: f"pid={b.proc.pid} " in s.get("agent", ""), 30)
        for _ in range(20):
            watch_health(lambda s: True, 5)
    finally:
        _stopped(b)
    assert seen and "Healthy" not in seen, seen
    assert set(seen) == {"Progressing"}
    listed = json.loads(gitops("ls", "-n", ns, "-o", "json", cwd=tmp_path, env=env).stdout)
    assert listed[0]["health"] == "Progressing"
