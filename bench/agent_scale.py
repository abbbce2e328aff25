#!/usr/bin/env python3
"""Benchmark: one agent, many apps (``kubectl gitops agent --config``) on a
fresh local control plane.

N apps of 10 objects each (4 ConfigMaps, 2 Secrets, a ServiceAccount, a
headless Service, a Deployment of 0 replicas, a Role; spread over 10
namespaces), one directory per app in one repository (``--repos 1``) or
spread over several. For each N:

  cold start      agent started → every app Synced at the revision (its
                  status, read with one LIST per poll): the time and the
                  agent's API requests (its ``gitops_api_requests_total``)
  RSS             the agent's resident memory once all are synced and
                  watched
  idle            requests per minute, by verb, over --idle seconds in which
                  nothing changes (from the agent's own counter)
  drift           a member ConfigMap's value changed behind git's back in
                  --drifts different apps, one at a time: the time until the
                  agent has put it back, p50 and p99 (the 1 s debounce
                  included)
  one-app commit  a commit that changes one app's directory, then the
                  webhook: the time until the new value is live; and that no
                  other app was planned again and no other parent written
                  (resourceVersions of every parent before and after)
  ls              ``kubectl gitops ls -o json`` over every namespace

Flux's published figure (flux-benchmark, Flux v2.3 on Kind, not this
machine): 1,000 Kustomizations reconciled in 4 m 15 s with 190 MiB for
kustomize-controller.

    .venv/bin/python bench/agent_scale.py --apps 100 500          # one repository
    .venv/bin/python bench/agent_scale.py --apps 100 --repos 10   # ten repositories
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from kubectl_gitops.engine.applyset import ID_LABEL  # noqa: E402
from kubectl_gitops.kube.client import Kube  # noqa: E402

SECRET = "bench-hook"
NAMESPACES = 10
APP = """\
apiVersion: v1
kind: ConfigMap
metadata: {{name: a{i}-config-0, namespace: {ns}}}
data: {{LOG_LEVEL: info, gen: "{gen}"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: a{i}-config-1, namespace: {ns}}}
data: {{feature.a: "true", threads: "{i}"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: a{i}-config-2, namespace: {ns}}}
data: {{app.properties: "x=1"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: a{i}-config-3, namespace: {ns}}}
data: {{LOG_LEVEL: info}}
---
apiVersion: v1
kind: Secret
metadata: {{name: a{i}-secret-0, namespace: {ns}}}
stringData: {{password: not-a-secret-{i}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: a{i}-secret-1, namespace: {ns}}}
stringData: {{token: t-{i}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: a{i}-sa, namespace: {ns}}}
---
apiVersion: v1
kind: Service
metadata: {{name: a{i}-web, namespace: {ns}}}
spec:
  clusterIP: None
  selector: {{app: a{i}-web}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: a{i}-web, namespace: {ns}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: a{i}-web}}}}
  template:
    metadata: {{labels: {{app: a{i}-web}}}}
    spec:
      containers: [{{name: web, image: "registry.example.com/web:1.0"}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: a{i}-reader, namespace: {ns}}}
rules: [{{apiGroups: [""], resources: [configmaps], verbs: [get]}}]
"""


def _write_app(repo: Path, i: int, ns: str, gen: int = 0) -> None:
    d = repo / "apps" / f"a{i}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "all.yaml").write_text(APP.format(i=i, ns=ns, gen=gen))


def _repos(env: dict[str, str], tmp: Path, n: int, repos: int, nss: list[str]) -> list[Path]:
    roots = [tmp / f"repo-{k}" for k in range(repos)]
    for root in roots:
        root.mkdir()
        common.git(env, root, "init", "-q", "-b", "main")
    for i in range(n):
        _write_app(roots[i % repos], i, nss[i % len(nss)])
    for root in roots:
        common.git(env, root, "add", "-A")
        common.git(env, root, "commit", "-q", "-m", "apps")
    return roots


def _config(tmp: Path, n: int, roots: list[Path], nss: list[str]) -> Path:
    cfg = tmp / "agent.yaml"
    cfg.write_text("apps:\n" + "".join(
        f"- name: a{i}\n  repo: file://{roots[i % len(roots)]}\n  ref: main\n"
        f"  path: apps/a{i}\n  namespace: {nss[i % len(nss)]}\n  selfHeal: true\n"
        f"  prune: true\n" for i in range(n)))
    return cfg


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("gitops_api_requests_total{", "gitops_git_fetches_total",
                            "gitops_plans_total{", "gitops_watches ")):
            key, value = line.rsplit(" ", 1)
            if key.startswith(("gitops_git_fetches_total", "gitops_plans_total")):
                out.setdefault(key.split("{")[0] + "_sum", 0.0)
                out[key.split("{")[0] + "_sum"] += float(value)
            out[key] = float(value)
    return out


def _requests(m: dict[str, float]) -> float:
    return sum(v for k, v in m.items() if k.startswith("gitops_api_requests_total{"))


def _parents(kube: Kube) -> dict[str, dict]:
    """Every app's parent, by name: one LIST (the way ``ls`` reads them)."""
    doc = kube.request("GET", "/api/v1/configmaps", params={"labelSelector": ID_LABEL})
    return {(o["metadata"]["namespace"] + "/" + o["metadata"]["name"]): o
            for o in doc.get("items") or []}


def _status(obj: dict) -> dict:
    ann = (obj.get("metadata") or {}).get("annotations") or {}
    return json.loads(ann.get("kubectl-gitops.io/status") or "{}")


def _wait_all(kube: Kube, n: int, shas: dict[str, str], proc: subprocess.Popen[bytes],
              log: Path, timeout: float) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            common.die(f"the agent exited: {log.read_text()[-3000:]}")
        done = 0
        for key, obj in _parents(kube).items():
            st = _status(obj)
            name = key.split("/")[1]
            if st.get("sync") == "Synced" and st.get("revision") == shas.get(name):
                done += 1
        if done >= n:
            return time.perf_counter() - start
        time.sleep(1.0)
    common.die(f"not all {n} apps synced after {timeout:g} s: {log.read_text()[-3000:]}")
    return 0.0


def _drifts(kube: Kube, n: int, nss: list[str], count: int) -> list[float]:
    cm = kube.resource_types()[("", "ConfigMap")]
    out = []
    for k in range(count):
        i = (k * 7919) % n  # apps spread over the whole set
        ns, name = nss[i % len(nss)], f"a{i}-config-3"
        kube.request("PATCH", Kube.path(cm, ns, name), params={"fieldManager": "bench-writer"},
                     body={"data": {"LOG_LEVEL": "drifted"}},
                     content_type="application/merge-patch+json")
        start = time.perf_counter()
        while (kube.get(cm, ns, name) or {}).get("data", {}).get("LOG_LEVEL") != "info":
            if time.perf_counter() - start > 120:
                common.die(f"ConfigMap {ns}/{name} not corrected after 120 s")
            time.sleep(0.02)
        out.append(time.perf_counter() - start)
    return out


def _hook(port: int) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/hooks/git", data=b"{}",
                                 headers={"X-Gitops-Secret": SECRET}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def one_size(args: argparse.Namespace, n: int) -> dict:
    with common.cluster(args.reuse) as cl, tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        env = common.environment(cl.kubeconfig, tmp)
        kube = cl.kube()
        nss = [f"scale-{os.getpid()}-{n}-{k}" for k in range(NAMESPACES)]
        common.create_namespaces(env, nss)
        roots = _repos(env, tmp, n, args.repos, nss)
        cfg = _config(tmp, n, roots, nss)
        secret = tmp / "secret"
        secret.write_text(SECRET)
        head = {str(r): subprocess.run(["git", "rev-parse", "HEAD"], cwd=r, env=env,
                                       capture_output=True, text=True).stdout.strip()
                for r in roots}
        shas = {f"a{i}": head[str(roots[i % len(roots)])] for i in range(n)}
        port = common_port()
        log = tmp / "agent.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["kubectl", "gitops", "agent", "--config", str(cfg), "--listen",
                 f"127.0.0.1:{port}", "--cache-dir", str(tmp / "cache"), "--workers",
                 str(args.workers), "--webhook-secret-file", str(secret),
                 "--lease-namespace", nss[0]], env=env, stdout=out, stderr=out)
        res: dict = {"apps": n, "repos": args.repos}
        try:
            started = time.perf_counter()
            while True:
                try:
                    _metrics(port)
                    break
                except OSError:
                    if time.perf_counter() - started > 60 or proc.poll() is not None:
                        common.die(f"the agent did not start: {log.read_text()[-2000:]}")
                    time.sleep(0.2)
            _wait_all(kube, n, shas, proc, log, args.timeout)
            res["cold"] = time.perf_counter() - started
            m = _metrics(port)
            res["cold_requests"] = _requests(m)
            time.sleep(10)  # the last statuses and Events land, the watches' LISTs are in
            res["rss"] = common.rss_mib(proc.pid)
            res["watches"] = m.get("gitops_watches", 0)
            before = _metrics(port)
            time.sleep(args.idle)
            after = _metrics(port)
            res["idle"] = {k.split('"')[1]: (after.get(k, 0) - before.get(k, 0)) * 60 / args.idle
                           for k in after if k.startswith("gitops_api_requests_total{")}
            res["idle_fetches"] = (after.get("gitops_git_fetches_total_sum", 0) -
                                   before.get("gitops_git_fetches_total_sum", 0)) * 60 / args.idle
            lat = _drifts(kube, n, nss, args.drifts)
            res["drift_p50"] = statistics.median(lat)
            res["drift_p99"] = common.percentile(lat, 99)
            time.sleep(3)
            res.update(_one_commit(env, kube, roots[0], nss, port, n))
            started = time.perf_counter()
            ls = subprocess.run(["kubectl", "gitops", "ls", "-o", "json"], env=env,
                                capture_output=True, text=True)
            res["ls"] = time.perf_counter() - started
            res["ls_apps"] = len(json.loads(ls.stdout or "[]"))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        return res


def _one_commit(env: dict[str, str], kube: Kube, root: Path, nss: list[str], port: int,
                n: int) -> dict:
    """Change app a0's directory; the time until its value is live; what else moved."""
    before_parents = {k: v["metadata"]["resourceVersion"] for k, v in _parents(kube).items()}
    before = _metrics(port)
    _write_app(root, 0, nss[0], gen=1)
    common.git(env, root, "commit", "-q", "-am", "a0 only")
    start = time.perf_counter()
    _hook(port)
    cm = kube.resource_types()[("", "ConfigMap")]
    while (kube.get(cm, nss[0], "a0-config-0") or {}).get("data", {}).get("gen") != "1":
        if time.perf_counter() - start > 120:
            common.die("a0's commit not live after 120 s")
        time.sleep(0.05)
    took = time.perf_counter() - start
    time.sleep(5)  # whatever else the commit would make the agent do
    after = _metrics(port)
    after_parents = {k: v["metadata"]["resourceVersion"] for k, v in _parents(kube).items()}
    moved = sorted(k for k in after_parents if after_parents[k] != before_parents.get(k))
    plans = after.get("gitops_plans_total_sum", 0) - before.get("gitops_plans_total_sum", 0)
    return {"commit_live": took, "commit_plans": plans, "commit_parents": moved,
            "commit_requests": _requests(after) - _requests(before)}


def common_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def report(rows: list[dict]) -> None:
    print("agent scale bench (this machine; 2 shared cores)")
    print(f"{'apps':>5} {'repos':>5} {'cold start':>11} {'requests':>9} {'RSS MiB':>8} "
          f"{'watches':>7} {'idle req/min':>12} {'drift p50/p99':>14} {'commit live':>11} "
          f"{'re-planned':>10} {'ls':>6}")
    for r in rows:
        idle = sum(v for k, v in r["idle"].items() if k != "watch")
        print(f"{r['apps']:>5} {r['repos']:>5} {r['cold']:>10.1f}s {r['cold_requests']:>9.0f} "
              f"{r['rss']:>8.0f} {r['watches']:>7.0f} {idle:>12.1f} "
              f"{r['drift_p50']:>6.2f}/{r['drift_p99']:.2f}s {r['commit_live']:>10.2f}s "
              f"{r['commit_plans']:>10.0f} {r['ls']:>5.2f}s")
    for r in rows:
        print(f"  {r['apps']} apps: idle by verb/min {json.dumps(r['idle'], sort_keys=True)}; "
              f"git fetches/min {r['idle_fetches']:.1f}; the one-app commit wrote parents "
              f"{r['commit_parents']} and made {r['commit_requests']:.0f} requests; "
              f"ls listed {r['ls_apps']}")
    print("Flux (published, flux-benchmark v2.3 on Kind, NOT this machine): 1,000 "
          "Kustomizations reconciled in 4m15s, kustomize-controller 190 MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--apps", type=int, nargs="+", default=[100, 500])
    ap.add_argument("--repos", type=int, default=1)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement")
    ap.add_argument("--drifts", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--reuse", metavar="STATE_DIR")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()
    common.say(common.machine())
    rows = []
    for n in args.apps:
        rows.append(one_size(args, n))
        common.say(f"{n} apps: {json.dumps(rows[-1])}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    report(rows)
    common.say(common.machine("end"))


if __name__ == "__main__":
    main()
