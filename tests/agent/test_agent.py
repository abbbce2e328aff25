"""`kubectl gitops agent` against the real control plane, run as a subprocess
with a kubeconfig, pulling from a real git remote over file://.

Times in these tests are bounds on how long to wait for something to become
true (the contract: a commit is synced within the interval + 5 s, a webhook
within 5 s), never measurements."""

from __future__ import annotations

import json
import subprocess
import time
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
    assert a.stop() == 0, a.text()[-2000:]
    assert "stopped" in a.text()


def _settings(color: str, team: str = "a") -> dict:
    return configmap("settings", {"color": color}, labels={"team": team})


def test_pull_sync_report_only_drift_and_invalid_commit(tmp_path: Path, env: dict,
                                                        namespace: str) -> None:
    ns = namespace
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
                                               namespace: str) -> None:
    ns = namespace
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
        diff = gitops("diff", "deploy", "--repo", str(origin), "--name", "app", "-n", ns,
                      cwd=origin, env=env)
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
                                                                namespace: str) -> None:
    ns = namespace
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


def _holder(ns: str, env: dict) -> str:
    lease = get("lease", "kubectl-gitops.app", env, ns) or {}
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def test_two_agents_one_writer_and_takeover_after_a_kill_mid_sync(
        tmp_path: Path, env: dict, namespace: str) -> None:
    ns = namespace
    cms = [configmap(f"c{i:02}", {"v": "1"}) for i in range(60)]
    origin, sha1 = _origin(tmp_path, docs(*cms))
    args = ("--interval", "1s", "--self-heal", "--lease-duration", "4")
    one = _agent(tmp_path, env, ns, origin, *args, tag="one")
    two = _agent(tmp_path, env, ns, origin, *args, tag="two")
    try:
        _synced(ns, env, sha1, 30, "first sync")
        holder = wait_for(lambda: _holder(ns, env), 10, "a leader")
        leader, follower = (one, two) if f"pid={one.proc.pid} " in holder else (two, one)
        assert f"pid={leader.proc.pid} " in holder
        # Writes only (a POST may be a lost race to create the Lease).
        for verb in ("patch", "put", "delete"):
            assert follower.metric("gitops_api_requests_total", verb=verb) == 0, verb

        mark = len(leader.text())
        write(origin, "deploy/all.yaml", docs(*[configmap(f"c{i:02}", {"v": "2"})
                                                for i in range(60)]))
        sha2 = commit(origin, "v2")
        wait_for(lambda: "configured" in leader.text()[mark:], 15, "the leader syncing")
        leader.kill()  # SIGKILL mid-sync
        _synced(ns, env, sha2, 20, "the other agent took over and converged")
        assert f"pid={follower.proc.pid} " in _holder(ns, env)
        live = json.loads(kubectl("get", "configmaps", "-n", ns, "-o", "json", env=env).stdout)
        values = {o["metadata"]["name"]: o.get("data") for o in live["items"]}
        assert all(values[f"c{i:02}"] == {"v": "2"} for i in range(60))
        diff = gitops("diff", "deploy", "--repo", str(origin), "--name", "app", "-n", ns,
                      cwd=origin, env=env)
        assert diff.returncode == 0, diff.stdout + diff.stderr

        leader.restart()  # back as a follower: the Lease is held
        leader.wait_ready()
        time.sleep(2)
        assert leader.metric("gitops_api_requests_total", verb="patch") == 0
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
                                                 namespace: str) -> None:
    repo, sha = _origin(tmp_path, docs(configmap("a"), deployment("web", 1)))
    sync = gitops("sync", "deploy", "-n", namespace, "--name", "cli-app", cwd=repo, env=env)
    assert sync.returncode == 0, sync.stderr
    out = gitops("status", "cli-app", "-o", "json", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["managedBy"], doc["revision"], doc["lastResult"], doc["members"]) == \
        ("cli", sha, "succeeded", 2)
    # No kubelet runs here: the Deployment never becomes available.
    assert doc["health"] == "Progressing" and "Deployment" in doc["unhealthy"][0]
    text = gitops("status", "cli-app", "-n", namespace, cwd=tmp_path, env=env).stdout
    assert "Managed by:  cli" in text and sha in text
    missing = gitops("status", "nope", "-n", namespace, cwd=tmp_path, env=env)
    assert missing.returncode == 2 and "no application nope" in missing.stderr


def test_config_file_reload_and_json_logs(tmp_path: Path, env: dict, namespace: str) -> None:
    ns = namespace
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
