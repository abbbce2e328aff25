#!/usr/bin/env python3
"""Benchmark: a Helm app against the same objects as plain YAML.

podinfo's chart (the upstream chart that tools/build-sourcetools.sh unpacks)
is served from a chart repository over HTTP on loopback (``helm package`` +
``helm repo index``); app ``helm`` declares it in ``.gitops.yaml`` with a
values file, app ``plain`` holds what ``helm template`` renders for it as a
YAML file, each synced into a namespace of its own. Reported:

  first render   the first ``kubectl gitops diff`` of the Helm app with an
                 empty cache (index and chart downloaded, helm template run),
                 next to ``helm template`` of the downloaded chart alone
  no-change      ``kubectl gitops sync --prune`` of each app, nothing changed,
                 interleaved rounds; ratio = helm / plain (the issue's target:
                 at most 1.5x)

    .venv/bin/python bench/helm.py                  # 9 rounds, a fresh cluster
    .venv/bin/python bench/helm.py --reuse /tmp/bench-cluster --rounds 15
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
from pathlib import Path

import common  # bench/, the script's directory, is first on sys.path

ROOT = Path(__file__).resolve().parent.parent
VALUES = "replicaCount: 2\nui:\n  message: benchmarked\nhpa:\n  enabled: true\n"
HELM_APP, PLAIN_APP = "helm app (podinfo)", "same objects, plain YAML"


def source_tools() -> tuple[list[str], Path]:
    """The bin directories of helm (age, crane) and the unpacked charts."""
    proc = subprocess.run(["bash", str(ROOT / "tools" / "build-sourcetools.sh")],
                          stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.split()
    if proc.returncode != 0 or len(lines) != 4:
        common.die("tools/build-sourcetools.sh failed")
    return lines[:3], Path(lines[3])


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def serve(directory: Path) -> tuple[str, http.server.ThreadingHTTPServer]:
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def git_repo(env: dict[str, str], root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    common.git(env, root, "init", "-q")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    common.git(env, root, "add", "-A")
    common.git(env, root, "commit", "-q", "-m", "app")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--reuse", metavar="STATE_DIR")
    args = ap.parse_args()
    bins, charts = source_tools()
    chart = charts / "podinfo-6.9.2"
    with common.cluster(args.reuse) as cl, tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        env = common.environment(cl.kubeconfig, tmp)
        env["PATH"] = ":".join([*bins, env["PATH"]])
        env["XDG_CACHE_HOME"] = str(tmp / "cache")
        common.say(common.machine())
        (tmp / "charts").mkdir()
        common.run(["helm", "package", str(chart), "-d", str(tmp / "charts")], env)
        url, server = serve(tmp / "charts")
        common.run(["helm", "repo", "index", str(tmp / "charts"), "--url", url], env)
        run_id = os.urandom(3).hex()  # a reused cluster keeps earlier runs' apps
        ns = {"helm": f"bench-helm-{run_id}", "plain": f"bench-plain-{run_id}"}
        common.create_namespaces(env, list(ns.values()))
        helm_repo = git_repo(env, tmp / "helm", {
            ".gitops.yaml": f"name: podinfo\nnamespace: {ns['helm']}\npath: deploy\nhelm:\n"
                            f"  repo: {url}\n  chart: podinfo\n  version: 6.9.2\n"
                            "  releaseName: web\n  valuesFiles: [deploy/values.yaml]\n",
            "deploy/values.yaml": VALUES})
        (tmp / "values.yaml").write_text(VALUES)
        rendered = subprocess.run(["helm", "template", "web", str(chart), "--namespace",
                                   ns["plain"], "--skip-tests", "-f", str(tmp / "values.yaml")],
                                  env=env, capture_output=True, text=True, check=True).stdout
        plain_repo = git_repo(env, tmp / "plain", {
            ".gitops.yaml": f"name: podinfo-plain\nnamespace: {ns['plain']}\npath: deploy\n",
            "deploy/podinfo.yaml": rendered})

        # The plain app first: discovery is cached then, as for any later run,
        # so the first diff of the Helm app pays for the chart alone.
        common.run(["kubectl", "gitops", "sync", "--prune"], env, cwd=plain_repo)
        first = common.timed(["kubectl", "gitops", "diff"], env, cwd=helm_repo, expect=(1,))
        cached = common.timed(["kubectl", "gitops", "diff"], env, cwd=helm_repo, expect=(1,))
        archive = next((tmp / "cache" / "kubectl-gitops" / "charts").rglob("*.tgz"))
        template = common.timed(["helm", "template", "web", str(archive), "--skip-tests",
                                 "-f", str(tmp / "values.yaml")], env)
        common.run(["kubectl", "gitops", "sync", "--prune"], env, cwd=helm_repo)
        common.settle(cl.kube(), list(ns.values()))

        times: dict[str, list[float]] = {HELM_APP: [], PLAIN_APP: []}
        cmd = ["kubectl", "gitops", "sync", "--prune", "-o", "json"]
        for r in range(args.rounds):
            for tool in common.rotate([HELM_APP, PLAIN_APP], r):
                repo = helm_repo if tool == HELM_APP else plain_repo
                t = common.timed(cmd, env, cwd=repo, capture=True)
                counts = json.loads(t.stdout)["counts"]
                if counts["created"] or counts["updated"] or counts["pruned"] or \
                        counts["unchanged"] != 3:
                    common.die(f"{tool}: not a no-change sync of its 3 objects (Deployment, Service, HPA): {counts}")
                times[tool].append(t.wall)
        server.shutdown()
        helm_med, plain_med = (statistics.median(times[k]) for k in (HELM_APP, PLAIN_APP))
        print(f"first render of the Helm app: kubectl gitops diff {first.wall:.3f} s with an "
              f"empty chart cache (index and chart downloaded, helm template run), "
              f"{cached.wall:.3f} s once cached; helm template alone {template.wall:.3f} s")
        print(f"{'no-change sync':<28}{'median s':>9}{'min s':>8}{'max s':>8}{'rounds':>7}")
        for tool in (HELM_APP, PLAIN_APP):
            runs = times[tool]
            print(f"{tool:<28}{statistics.median(runs):>9.3f}{min(runs):>8.3f}"
                  f"{max(runs):>8.3f}{len(runs):>7}")
        print(f"helm / plain: {helm_med / plain_med:.2f}x (target: at most 1.50x)")
        common.say(common.machine("end"))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
