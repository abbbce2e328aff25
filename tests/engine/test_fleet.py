"""A fleet on three real control planes (``three_clusters``: contexts
``staging``, ``prod-eu``, ``prod-us``): ``sync --fleet`` converges each in
its own cluster, an unreachable target is one failed row, waves stop at an
unhealthy target, and ``diff --fleet -o markdown`` reports per target."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from testing.fleet import Fleet
from testing.git import commit, git, make_repo, write
from testing.kube import configmap, docs, gitops, kubectl

CONTEXTS = ("staging", "prod-eu", "prod-us")


def _config(ns: str, **extra: Any) -> str:
    """staging in wave 0; every prod-* context in wave 1, from a pattern."""
    return yaml.safe_dump({"name": "shop", "namespace": ns, **extra, "targets": [
        {"name": "staging", "context": "staging", "path": "overlays/staging",
         "labels": {"env": "staging"}, "wave": 0},
        {"contextPattern": "prod-*", "path": "overlays/{{name}}", "labels": {"env": "prod"},
         "wave": 1}]}, sort_keys=False)


def _overlay(repo: Path, target: str, *, state: str = "ok", password: str = "") -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
              "stringData": {"password": password or f"s3cret-{target}"}}
    write(repo, f"overlays/{target}/all.yaml",
          docs(configmap("settings", {"region": target, "state": state}), secret))


@pytest.fixture
def repo(tmp_path: Path, git_env: dict[str, str], fresh_namespace: str) -> Path:
    r = make_repo(tmp_path / "repo")
    write(r, ".gitops.yaml", _config(fresh_namespace))
    for t in CONTEXTS:
        _overlay(r, t)
    commit(r, "three overlays")
    return r


@pytest.fixture
def env(three_clusters: Fleet, kube_env: dict[str, str], git_env: dict[str, str]) \
        -> dict[str, str]:
    return three_clusters.env({**kube_env, **{k: v for k, v in git_env.items()
                                              if k.startswith("GIT_")}})


def _get(env: dict[str, str], context: str, kind: str, name: str, ns: str) \
        -> dict[str, Any] | None:
    proc = kubectl("--context", context, "get", kind, name, "-n", ns, "-o", "json",
                   env=env, check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        return json.loads(proc.stdout)  # type: ignore[no-any-return]
    except ValueError:
        raise AssertionError(proc.stdout + proc.stderr) from None


def _rows(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["target"]: t for t in doc["targets"]}


def test_sync_fleet_converges_three_clusters_and_a_second_run_writes_nothing(
        repo: Path, env: dict[str, str], fresh_namespace: str) -> None:
    ns = fresh_namespace
    sha = git(repo, "rev-parse", "HEAD")
    r = gitops("sync", "--fleet", cwd=repo, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    table = r.stdout.splitlines()
    assert table[-4].split()[:3] == ["TARGET", "CLUSTER", "REVISION"]
    assert table[0] == "wave 0: staging"
    assert table.index("wave 1: prod-eu, prod-us") > table.index(
        f"staging: created    ConfigMap {ns}/settings")  # wave 1 after wave 0
    for ctx in CONTEXTS:
        assert f"{ctx}: created    ConfigMap {ns}/settings" in table
        row = next(line.split() for line in table if line.startswith(ctx + " "))
        assert row[:8] == [ctx, ctx, sha[:7], "2", "0", "0", "0", "Healthy"], row
        assert row[8] == "succeeded"
        live = _get(env, ctx, "configmap", "settings", ns)
        assert live and live["data"]["region"] == ctx  # its own overlay, in its own cluster
    assert "s3cret" not in r.stdout + r.stderr
    parents = {ctx: _get(env, ctx, "configmap", "shop", ns) for ctx in CONTEXTS}

    again = gitops("sync", "--fleet", "-o", "json", cwd=repo, env=env)
    assert again.returncode == 0, again.stderr
    doc = _json(again)
    assert doc["exitStatus"] == 0 and doc["revision"] == sha
    for ctx, row in _rows(doc).items():
        assert row["counts"] == {"created": 0, "updated": 0, "pruned": 0, "unchanged": 2,
                                 "failed": 0}, ctx
        assert row["result"] == "succeeded" and row["context"] == ctx
        assert row["health"] == "Healthy"  # from what the plan read: nothing written
        live = _get(env, ctx, "configmap", "shop", ns)
        assert live and parents[ctx]
        # Nothing written: not even the parent (no second history record).
        assert live["metadata"]["resourceVersion"] == \
            parents[ctx]["metadata"]["resourceVersion"]
        history = _json(gitops("history", "--context", ctx, "--name", "shop", "-n", ns,
                               "-o", "json", cwd=repo, env=env))
        assert [h["revision"] for h in history] == [sha], ctx
    status = _json(gitops("status", "--fleet", "-o", "json", cwd=repo, env=env))
    assert {t["target"]: t["result"] for t in status["targets"]} == {
        ctx: "at revision" for ctx in CONTEXTS}


def test_an_unreachable_target_fails_alone_and_a_rerun_converges_it(
        repo: Path, env: dict[str, str], fresh_namespace: str,
        three_clusters: Fleet) -> None:
    ns = fresh_namespace
    assert gitops("sync", "--fleet", cwd=repo, env=env).returncode == 0
    for t in CONTEXTS:
        _overlay(repo, t, state="v2")
    sha = commit(repo, "v2 everywhere")
    plane = three_clusters.planes["prod-us"]
    plane.stop_apiserver()
    try:
        r = gitops("sync", "--fleet", "-o", "json", cwd=repo, env=env)
        assert r.returncode == 2, r.stdout + r.stderr
        rows = _rows(_json(r))
        assert rows["prod-us"]["result"] == "failed"
        assert rows["prod-us"]["error"] == \
            f"cannot reach the cluster at {plane.server}: Connection refused"
        for ctx in ("staging", "prod-eu"):
            assert rows[ctx]["result"] == "succeeded", rows[ctx]
            assert rows[ctx]["counts"]["updated"] == 1
        text = gitops("sync", "--fleet", cwd=repo, env=env)
        assert text.returncode == 2
        assert text.stderr.splitlines() == [
            f"error: prod-us: cannot reach the cluster at {plane.server}: Connection refused"]
        # The fleet's status: every app on every target; the unreachable one is a row.
        ls = gitops("ls", "--all-contexts", "-n", ns, cwd=repo, env=env)
        assert ls.returncode == 2, ls.stderr
        lines = {line.split()[0]: line for line in ls.stdout.splitlines()[1:]}
        assert lines["prod-us"].endswith(
            f"cannot reach the cluster at {plane.server}: Connection refused")
        doc = _json(gitops("ls", "--fleet", "-n", ns, "-o", "json", cwd=repo, env=env))
        apps = {t["target"]: [(a["name"], a["revision"]) for a in t["apps"]] for t in doc}
        assert apps == {"staging": [("shop", sha)], "prod-eu": [("shop", sha)], "prod-us": []}
    finally:
        plane.start_apiserver()
    again = gitops("sync", "--fleet", "-o", "json", cwd=repo, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    rows = _rows(_json(again))
    assert rows["prod-us"]["counts"]["updated"] == 1  # the one left behind
    assert rows["staging"]["counts"]["updated"] == 0  # already there: nothing written
    live = _get(env, "prod-us", "configmap", "settings", ns)
    assert live and live["data"]["state"] == "v2"
    history = _json(gitops("history", "--context", "prod-us", "--name", "shop", "-n", ns,
                           "-o", "json", cwd=repo, env=env))
    assert history[0]["revision"] == sha


def test_a_wave_that_never_becomes_healthy_stops_the_rollout(
        repo: Path, env: dict[str, str], fresh_namespace: str) -> None:
    """staging (wave 0) holds a ConfigMap its health check calls failed: the
    prod wave is not touched, and the message names the target and object."""
    ns = fresh_namespace
    write(repo, ".gitops.yaml", _config(ns, healthCheckExprs=[{
        "apiVersion": "v1", "kind": "ConfigMap", "failed": "data.state == 'broken'",
        "current": "data.state != 'broken'"}]))
    _overlay(repo, "staging", state="broken")
    commit(repo, "staging breaks")
    r = gitops("sync", "--fleet", "--timeout", "60s", cwd=repo, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.splitlines()
    why = f"ConfigMap {ns}/settings: Degraded: failed: data.state == 'broken'"
    assert err[0] == f"error: staging: {why}"
    assert err[1:] == [f"skipped: {ctx}: wave 0 failed at target staging: {why}"
                       for ctx in ("prod-eu", "prod-us")]
    for ctx in ("prod-eu", "prod-us"):
        assert _get(env, ctx, "namespace", ns, ns) is None  # untouched: not even the namespace

    # Fixed in git, a re-run goes on from where the rollout stopped.
    _overlay(repo, "staging", state="fixed")
    sha = commit(repo, "staging fixed")
    r = gitops("sync", "--fleet", "-o", "json", cwd=repo, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = _rows(_json(r))
    assert rows["staging"]["counts"]["updated"] == 1
    for ctx in ("prod-eu", "prod-us"):
        assert rows[ctx]["counts"]["created"] == 2 and rows[ctx]["revision"] == sha

    # The opposite policy rolls on, and the exit status still says a target failed.
    _overlay(repo, "staging", state="broken")
    for ctx in ("prod-eu", "prod-us"):
        _overlay(repo, ctx, state="v2")
    commit(repo, "staging breaks again")
    r = gitops("sync", "--fleet", "--continue-on-error", "-o", "json", cwd=repo, env=env)
    assert r.returncode == 2
    rows = _rows(_json(r))
    assert {t: row["result"] for t, row in rows.items()} == {
        "staging": "failed", "prod-eu": "succeeded", "prod-us": "succeeded"}
    assert rows["prod-eu"]["counts"]["updated"] == 1


def test_diff_fleet_markdown_shows_the_one_target_a_branch_changes(
        repo: Path, env: dict[str, str], fresh_namespace: str) -> None:
    assert gitops("sync", "--fleet", cwd=repo, env=env).returncode == 0
    git(repo, "checkout", "-q", "-b", "eu-bump")
    _overlay(repo, "prod-eu", state="v3", password="n3w-s3cret")
    commit(repo, "prod-eu: v3 and a new password")
    git(repo, "checkout", "-q", "main")

    r = gitops("diff", "--fleet", "--ref", "eu-bump", "-o", "markdown", cwd=repo, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    md = r.stdout
    assert "| prod-eu | prod-eu | 0 | 2 | 0 | 0 | changes |" in md
    for ctx in ("staging", "prod-us"):
        assert f"| {ctx} | {ctx} | 0 | 0 | 0 | 2 | no changes |" in md
    assert md.count("<details>") == 1 and "<b>prod-eu</b>: 0 to create, 2 to update" in md
    assert "-  state: ok\n+  state: v3\n" in md
    assert "*** (after)" in md
    assert "s3cret" not in md

    # Without --fleet or --target, one cluster gets the whole repository: said first.
    r = gitops("diff", "--context", "prod-eu", cwd=repo, env=env)
    assert r.stderr.startswith("note: .gitops.yaml declares targets: and no path:")

    # Only the prod targets, as a table; nothing differs on main.
    r = gitops("diff", "-l", "env=prod", "-o", "table", cwd=repo, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines()[1:]] == ["prod-eu", "prod-us"]
