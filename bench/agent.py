#!/usr/bin/env python3
"""Benchmark: the agent (``kubectl gitops agent``) on a fresh local control plane.

Three figures, each against what Argo CD documents as its defaults:

  drift-to-correction  a member ConfigMap's value changed behind git's back
                       (one object at a time, each a different object, so
                       every correction is a first one: no backoff), timed
                       from the write returning until the agent has put the
                       value back; p50 and p99 over --drifts changes in an
                       app of -n objects. Argo CD: self-heal runs on the
                       app's next refresh and is retried after
                       ``selfHealTimeoutSeconds`` (default 5 s).
  idle API load        requests per minute to the API server, by verb, over
                       --idle seconds in which nothing changes (from the
                       agent's own request counter): the target is the
                       watches, the Lease renewals and one fetch per
                       interval, and no LISTs. Argo CD: one git poll per
                       ``timeout.reconciliation`` (default 180 s).
  RSS                  the agent's resident memory once it has synced an
                       app of --rss-objects members and watches them.

    .venv/bin/python bench/agent.py                         # 500 objects, 50 drifts, 2,000 for RSS
    .venv/bin/python bench/agent.py -n 100 --drifts 20 --idle 60 --rss-objects 400   # small
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from kubectl_gitops.engine.applyset import PARENT_TYPE  # noqa: E402
from kubectl_gitops.kube.client import Kube  # noqa: E402
from kubectl_gitops.kube.resources import ResourceType  # noqa: E402

CM = ResourceType("", "ConfigMap", True, plural="configmaps", version="v1")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _agent(env: dict[str, str], repo: common.Repo, tmp: Path, tag: str,
           interval: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _port()
    log = open(tmp / f"agent-{tag}.log", "wb")  # noqa: SIM115 - lives as long as the agent
    proc = subprocess.Popen(["kubectl", "gitops", "agent", "--repo", f"file://{repo.root}",
                             "--ref", "main", "--interval", interval, "--self-heal", "--prune",
                             "--listen", f"127.0.0.1:{port}", "--cache-dir",
                             str(tmp / f"cache-{tag}")], env=env, stdout=log, stderr=log)
    return proc, port


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("gitops_api_requests_total{", "gitops_git_fetches_total{")):
            key, value = line.rsplit(" ", 1)
            out[key] = out.get(key, 0.0) + float(value)
    return out


def _wait_synced(kube: Kube, ns: str, name: str, proc: subprocess.Popen[bytes],
                 log: Path, timeout: float = 600) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            common.die(f"the agent exited: {log.read_text()[-2000:]}")
        parent = kube.get(PARENT_TYPE, ns, name) or {}
        st = json.loads(((parent.get("metadata") or {}).get("annotations") or {})
                        .get("kubectl-gitops.io/status") or "{}")
        if st.get("sync") == "Synced" and st.get("revision"):
            return time.perf_counter() - start
        time.sleep(0.5)
    common.die(f"not synced after {timeout:g} s: {log.read_text()[-2000:]}")
    return 0.0


def _drifts(kube: Kube, repo: common.Repo, count: int) -> list[float]:
    names = [(repo.namespaces[(n // 3) % len(repo.namespaces)], f"config-{n}")
             for n in range(0, repo.n_objects, 3)][:count]
    if len(names) < count:
        common.die(f"-n {repo.n_objects} holds only {len(names)} ConfigMaps")
    out = []
    for ns, name in names:
        kube.request("PATCH", Kube.path(CM, ns, name), params={"fieldManager": "bench-writer"},
                     body={"data": {"LOG_LEVEL": "drifted"}},
                     content_type="application/merge-patch+json")
        start = time.perf_counter()
        while (kube.get(CM, ns, name) or {}).get("data", {}).get("LOG_LEVEL") != "info":
            if time.perf_counter() - start > 120:
                common.die(f"ConfigMap {ns}/{name} not corrected after 120 s")
            time.sleep(0.02)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--objects", type=int, default=500)
    ap.add_argument("--drifts", type=int, default=50)
    ap.add_argument("--idle", type=float, default=180.0, help="seconds of idle measurement")
    ap.add_argument("--interval", default="1m", help="the agent's fetch interval")
    ap.add_argument("--rss-objects", type=int, default=2000)
    ap.add_argument("--reuse", metavar="STATE_DIR")
    args = ap.parse_args()
    common.say(common.machine())
    with common.cluster(args.reuse) as cl, tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        env = common.environment(cl.kubeconfig, tmp)
        kube = cl.kube()
        nss = common.namespace_set(f"agent-{os.getpid()}")
        common.create_namespaces(env, nss)
        repo = common.make_repo(env, tmp / "repo", args.objects, nss, name="bench-agent",
                                paused=True)
        proc, port = _agent(env, repo, tmp, "main", args.interval)
        try:
            took = _wait_synced(kube, nss[0], "bench-agent", proc, tmp / "agent-main.log")
            common.say(f"first sync of {args.objects} objects by the agent: {took:.1f} s")
            common.settle(kube, nss)
            lat = _drifts(kube, repo, args.drifts)
            time.sleep(5)  # the last correction's history record, Event and status land
            before = _metrics(port)
            time.sleep(args.idle)
            after = _metrics(port)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        rss = _rss_run(env, tmp, kube, args.rss_objects)
    _report(args, lat, before, after, rss)


def _rss_run(env: dict[str, str], tmp: Path, kube: Kube, n: int) -> float:
    nss = common.namespace_set(f"agent-rss-{os.getpid()}")
    common.create_namespaces(env, nss)
    repo = common.make_repo(env, tmp / "repo-rss", n, nss, name="bench-rss", paused=True)
    proc, _ = _agent(env, repo, tmp, "rss", "1m")
    try:
        _wait_synced(kube, nss[0], "bench-rss", proc, tmp / "agent-rss.log")
        time.sleep(5)  # the watches' first LISTs are in
        return common.rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def _report(args: argparse.Namespace, lat: list[float], before: dict[str, float],
            after: dict[str, float], rss: float) -> None:
    minutes = args.idle / 60
    print(f"agent bench: {args.objects} objects, {args.drifts} drifts, idle {args.idle:g} s, "
          f"interval {args.interval}")
    p99 = common.percentile(lat, 99)
    print(f"drift-to-correction  p50 {statistics.median(lat):.2f} s  p99 {p99:.2f} s"
          f"  max {max(lat):.2f} s   (Argo CD: self-heal retried after 5 s, "
          "selfHealTimeoutSeconds)")
    print("idle API load, requests per minute by verb:")
    for key in sorted(set(before) | set(after)):
        delta = after.get(key, 0.0) - before.get(key, 0.0)
        print(f"  {key:<55} {delta / minutes:8.1f}/min")
    print("  (Argo CD: one git poll per 180 s, timeout.reconciliation)")
    print(f"agent RSS with {args.rss_objects} members: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
