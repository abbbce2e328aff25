"""The agent's parts that need no cluster: config, queue, backoff, drift
descriptions, the webhook's secret check, request counting, redaction."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kubectl_gitops.agent import config, server
from kubectl_gitops.agent.metrics import _is_collection
from kubectl_gitops.agent.mirror import redact
from kubectl_gitops.agent.workqueue import Backoff, WorkQueue
from kubectl_gitops.errors import ConfigError
from kubectl_gitops.kube.resources import ObjectId
from testing.git import commit, make_repo, write


def test_config_file(tmp_path: Path) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text("apps:\n- repo: https://example.com/team/shop.git\n  interval: 30s\n"
                 "  selfHeal: true\n- name: b\n  repo: /srv/b\n  ref: prod\n  prune: true\n"
                 "  suspend: true\n")
    a, b = config.load(f)
    assert (a.name, a.interval, a.self_heal, a.prune, a.ref) == ("shop", 30.0, True, False,
                                                                 "HEAD")
    assert (b.name, b.interval, b.prune, b.suspend, b.ref) == ("b", 60.0, True, True, "prod")
    f.write_text("apps:\n- repo: /srv/a\n  kubeConfigSecret: hub/prod-eu\n")
    assert config.load(f)[0].kubeconfig_secret == "hub/prod-eu"


@pytest.mark.parametrize("text, message", [
    ("apps: [{name: x}]\n", "apps[0]: expected a mapping with repo"),
    ("apps:\n- repo: r\n  interval: soon\n", "apps[0].interval: 'soon' is not a duration"),
    ("apps:\n- repo: r\n  selfheal: true\n", "unknown key(s) selfheal"),
    ("apps:\n- repo: r\n  prune: 'yes'\n", "prune must be true or false"),
    ("apps:\n- {repo: a/x}\n- {repo: b/x}\n", "app name(s) given twice: x"),
    ("apps: [\n", "agent.yaml:2: not valid YAML"),
    ("apps:\n- repo: r\n  kubeConfigSecret: a/b/c\n",
     "apps[0]: kubeConfigSecret must be NAME or NAMESPACE/NAME"),
])
def test_config_errors_name_the_file_and_app(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        config.load(f)
    assert message in str(e.value) and str(f) in str(e.value)


def test_durations() -> None:
    assert [config.duration(v, "x") for v in ("90", "2s", "5m", "1h", "500ms", "1m30s")] == \
        [90.0, 2.0, 300.0, 3600.0, 0.5, 90.0]
    with pytest.raises(ConfigError):
        config.duration("0s", "x")


def test_queue_collapses_a_burst_and_never_runs_a_key_twice_at_once() -> None:
    q: WorkQueue[str] = WorkQueue()
    for _ in range(50):
        q.add("a", 0.05)
    q.add("b")
    assert q.get(1) == "b"
    assert q.get(1) == "a"
    q.add("a")  # queued while running: handed out only after done()
    assert q.get(0.2) is None
    q.done("a")
    assert q.get(1) == "a"
    q.done("a")
    q.done("b")
    assert q.get(0.1) is None


def test_queue_earlier_time_wins_and_close_releases_workers() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a", 60)
    q.add("a", 0)
    assert q.get(1) == "a"
    got: list[str | None] = []
    t = threading.Thread(target=lambda: got.append(q.get()))
    t.start()
    q.close()
    t.join(5)
    assert got == [None]


def test_backoff_doubles_to_a_cap_and_forgets() -> None:
    b: Backoff[str] = Backoff(base=1.0, cap=5.0)
    assert [b.next("k") for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert b.next("other") == 1.0
    b.forget("k")
    assert b.next("k") == 1.0


def test_webhook_secret_forms() -> None:
    secret, body = b"s3cret", b'{"ref": "refs/heads/main"}'
    sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    assert server.authorized(secret, {"x-gitops-secret": "s3cret"}, body)
    assert server.authorized(secret, {"authorization": "Bearer s3cret"}, body)
    assert server.authorized(secret, {"x-hub-signature-256": sig}, body)
    assert not server.authorized(secret, {"x-hub-signature-256": sig}, body + b" ")
    assert not server.authorized(secret, {"x-gitops-secret": "wrong"}, body)
    assert not server.authorized(secret, {}, body)


def test_request_counting_tells_lists_from_gets() -> None:
    assert _is_collection("/api/v1/namespaces/a/configmaps?labelSelector=x")
    assert _is_collection("/apis/apps/v1/deployments")
    assert not _is_collection("/api/v1/namespaces/a/configmaps/b")
    assert not _is_collection("/apis/coordination.k8s.io/v1/namespaces/a/leases/l")
    assert not _is_collection("/api/v1/namespaces/a")
    assert _is_collection("/api/v1/namespaces")


def test_credentials_never_logged() -> None:
    assert redact("fatal: unable to access 'https://bob:tok3n@git.example.com/x.git/'") == \
        "fatal: unable to access 'https://***@git.example.com/x.git/'"
    assert redact("ssh://git@host/x") == "ssh://***@host/x"


def test_heal_wait_doubles(tmp_path: Path) -> None:
    from kubectl_gitops.agent.runner import Agent, AppRun, Settings

    agent = Agent.__new__(Agent)
    agent.settings = Settings(cache=tmp_path, heal_backoff=1.0, heal_backoff_cap=8.0)
    run = AppRun.__new__(AppRun)
    run.heals = {}
    oid = ObjectId("", "ConfigMap", "ns", "c")
    assert agent._heal_wait(run, oid) == 0.0
    now = time.monotonic()
    waits = []
    for n in range(1, 6):
        run.heals[oid] = (n, now)
        waits.append(round(agent._heal_wait(run, oid)))
    assert waits == [1, 2, 4, 8, 8]
    run.heals[oid] = (3, now - 5.0)  # within twice the wait (4 s): still waits
    assert agent._heal_wait(run, oid) == 0.0 and (3, now - 5.0) == run.heals[oid]
    run.heals[oid] = (3, now - 3.0)
    assert round(agent._heal_wait(run, oid)) == 1
    run.heals[oid] = (3, now - 9.0)  # quiet for more than twice the wait: starts over
    assert agent._heal_wait(run, oid) == 0.0 and oid not in run.heals


@pytest.mark.parametrize("args, line", [
    (["--config", "CFG"], "agent.yaml: apps[0]: expected a mapping with repo"),
    (["--repo", "/x", "--webhook-secret-file", "/no/such/file"],
     "/no/such/file: cannot read the webhook secret"),
    (["--repo", "/x", "--interval", "often"], "--interval: 'often' is not a duration"),
])
def test_bad_agent_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str],
                                                line: str) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "agent.yaml"
    cfg.write_text("apps: [{name: x}]\n")
    exe = str(Path(sys.executable).parent / "kubectl-gitops")
    proc = subprocess.run([exe, "agent", *[str(cfg) if a == "CFG" else a for a in args]],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and line in proc.stderr, proc.stderr


def test_one_mirror_fetch_serves_every_app_that_wants_one_since(tmp_path: Path,
                                                                 git_env: dict) -> None:
    """Apps of one URL share its mirror: of fetches wanted since one moment,
    one runs git and the others use it; a failure is shared the same way."""
    from kubectl_gitops.agent.mirror import Mirror

    origin = make_repo(tmp_path / "origin")
    write(origin, "a.yaml", "x: 1\n")
    commit(origin, "one")
    mirror = Mirror(str(origin), tmp_path / "cache")
    since = time.monotonic()
    results: list[tuple[bool, str]] = []
    threads = [threading.Thread(target=lambda: results.append(mirror.fetch(since)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [(False, ""), (False, ""), (True, "")]  # one clone
    assert mirror.fetch(since) == (False, "")
    assert mirror.fetch(time.monotonic()) == (True, "")  # wanted since later: a new fetch
    assert mirror.fetch() == (True, "")  # no since: always

    gone = Mirror(str(tmp_path / "origin") + "-gone", tmp_path / "cache")
    later = time.monotonic()
    ran, error = gone.fetch(later)
    assert ran and "git fetch" in error
    assert gone.fetch(later) == (False, error)  # the same attempt's error, not a second try


def _stalling_agent(tmp_path: Path) -> tuple[Any, Any]:
    from kubectl_gitops.agent.metrics import Metrics
    from kubectl_gitops.agent.runner import Agent, AppRun, Settings

    agent = Agent.__new__(Agent)
    agent.settings = Settings(cache=tmp_path, log_backoff=10.0, log_backoff_cap=40.0)
    agent.metrics = Metrics()
    agent.queue = WorkQueue()
    agent._stalls_lock = threading.Lock()
    agent.apps = {}
    agent.ready = threading.Event()
    agent.stopping = threading.Event()
    agent.synced_once = False
    run = AppRun(config.AppSpec(name="shop", repo="/x"), None)  # type: ignore[arg-type]
    agent.apps["shop"] = run
    return agent, run


def test_a_stall_is_logged_with_backoff_and_cleared(tmp_path: Path, caplog: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from kubectl_gitops.agent import runner

    agent, run = _stalling_agent(tmp_path)
    agent.ready.set()
    assert agent.is_ready()
    clock = [100.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock[0])
    caplog.set_level("INFO", logger="kubectl-gitops.agent")
    for _ in range(200):  # every second for 200 s
        agent._stall(run, "lease", "LeaseFailed", "cannot take the Lease shop/x: forbidden")
        clock[0] += 1.0
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    # At once, then 10 s, 20 s, 40 s, 40 s... later: 0, 10, 30, 70, 110, 150, 190.
    assert len(warnings) == 7, [r.getMessage() for r in warnings]
    assert "app shop: cannot take the Lease shop/x: forbidden (LeaseFailed)" == \
        warnings[0].getMessage()
    assert "times since the first" in warnings[1].getMessage()
    assert not agent.is_ready()  # stalled before any app ever synced
    assert agent.metrics.stalled.labels("shop", "LeaseFailed")._value.get() == 1
    assert agent.metrics.errors.labels("shop", "LeaseFailed")._value.get() == 200

    agent._stall(run, "lease", "LeaseFailed", "cannot take the Lease shop/x: timed out")
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 8  # new: at once
    assert agent._stalled(run).message.endswith("timed out")
    agent._stall(run, "fetch", "FetchFailed", "fetching ...")
    assert agent._stalled(run).reason == "LeaseFailed"  # the Lease first
    agent._unstall(run, "lease")
    assert agent._stalled(run).reason == "FetchFailed"
    assert agent.metrics.stalled.labels("shop", "LeaseFailed")._value.get() == 0
    agent._unstall(run, "fetch")
    assert agent._stalled(run) is None and agent.is_ready()
    assert "works again" in caplog.records[-1].getMessage()


def test_stalled_condition_carries_the_reason() -> None:
    from kubectl_gitops.agent import state

    st = {"sync": "Synced", "health": "Healthy", "revision": "abc", "stalled": "LeaseFailed",
          "lastError": "cannot take the Lease a/b: forbidden"}
    conds = {c["type"]: c for c in state.conditions(st, [])}
    assert (conds["Stalled"]["status"], conds["Stalled"]["reason"]) == ("True", "LeaseFailed")
    assert conds["Ready"]["status"] == "False"
    assert "forbidden" in conds["Stalled"]["message"]
    ok = state.conditions({**st, "stalled": "", "lastError": ""}, [])
    assert {c["type"]: c["status"] for c in ok} == \
        {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
