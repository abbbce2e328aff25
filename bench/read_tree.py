#!/usr/bin/env python3
"""Benchmark: read and parse a committed tree of N manifests at HEAD.

Generates a repository of N manifests (mixed kinds, multi-document files,
several directories), commits it, then times ``tree.resolve`` +
``desired.load`` (offline mapper, in-process) over several rounds and prints
the median wall time, the median CPU time (this process and its git
children: steadier on a shared machine), objects/second and the cost per
object for each N, so that linearity can be read off the output.

    .venv/bin/python bench/read_tree.py                 # N = 1,000 and 10,000
    .venv/bin/python bench/read_tree.py -n 500 -n 20000 --rounds 7
    .venv/bin/python bench/read_tree.py -n 10000 --profile   # cProfile top 25
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kubectl_gitops.engine import desired
from kubectl_gitops.source import git, tree

# --- one template per kind; {n} makes names unique --------------------------

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-{n}
  labels:
    app.kubernetes.io/name: web-{n}
    app.kubernetes.io/part-of: shop
spec:
  replicas: 2
  selector:
    matchLabels:
      app.kubernetes.io/name: web-{n}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: web-{n}
    spec:
      containers:
        - name: web
          image: registry.example.com/web:1.{n}
          ports:
            - containerPort: 8080
              name: http
          env:
            - name: LOG_LEVEL
              value: info
          resources:
            requests: {{cpu: 100m, memory: 128Mi}}
            limits: {{memory: 256Mi}}
          readinessProbe:
            httpGet: {{path: /healthz, port: http}}
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: web-{n}
spec:
  selector:
    app.kubernetes.io/name: web-{n}
  ports:
    - name: http
      port: 80
      targetPort: http
"""
CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: config-{n}
data:
  app.properties: |
    feature.a=true
    feature.b=false
    threads={n}
  LOG_LEVEL: info
"""
SECRET = """\
apiVersion: v1
kind: Secret
metadata:
  name: secret-{n}
type: Opaque
stringData:
  password: not-a-real-password-{n}
"""
SERVICE_ACCOUNT = """\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: sa-{n}
"""
ROLE = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: reader-{n}
rules:
  - apiGroups: [""]
    resources: [configmaps, secrets]
    verbs: [get, list, watch]
"""
CLUSTER_ROLE = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: cluster-reader-{n}
rules:
  - apiGroups: [apps]
    resources: [deployments]
    verbs: [get, list]
"""
CRONJOB = """\
apiVersion: batch/v1
kind: CronJob
metadata:
  name: cleanup-{n}
spec:
  schedule: "*/15 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
            - name: cleanup
              image: registry.example.com/cleanup:2
              args: ["--older-than", "24h"]
"""
JSON_INGRESS = """\
{{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
 "metadata": {{"name": "web-{n}", "annotations": {{"example.com/tier": "edge"}}}},
 "spec": {{"rules": [{{"host": "web-{n}.example.com", "http": {{"paths": [
   {{"path": "/", "pathType": "Prefix",
    "backend": {{"service": {{"name": "web-{n}", "port": {{"number": 80}}}}}}}}]}}}}]}}}}
"""
YAML_KINDS = [DEPLOYMENT, SERVICE, CONFIGMAP, SECRET, SERVICE_ACCOUNT, ROLE, CLUSTER_ROLE,
              CRONJOB]


def layout(n_objects: int, seed: int = 3) -> Iterator[tuple[str, str, int]]:
    """``(relpath, text, objects in it)`` for files holding ``n_objects`` in all."""
    rnd = random.Random(seed)
    made = 0
    f = 0
    while made < n_objects:
        team, app = f % 7, f // 7 % 40
        directory = f"teams/team-{team}/app-{app:02d}" + ("/extra" if f % 5 == 0 else "")
        if rnd.random() < 0.1:
            yield f"{directory}/ingress-{made}.json", JSON_INGRESS.format(n=made), 1
            made += 1
        else:
            docs = min(rnd.choice((1, 1, 2, 3, 4, 6)), n_objects - made)
            parts = [rnd.choice(YAML_KINDS).format(n=made + i) for i in range(docs)]
            suffix = ".yml" if f % 4 == 0 else ".yaml"
            yield f"{directory}/objects-{made}{suffix}", "---\n".join(parts), docs
            made += docs
        f += 1


def make_repo(root: Path, n_objects: int) -> int:
    """Write, add and commit the tree; return the number of files."""
    files = 0
    for rel, text, _ in layout(n_objects):
        full = root / rel
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(text)
        files += 1
    (root / ".gitops.yaml").write_text("name: bench\nnamespace: bench\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["commit", "-q", "-m", f"{n_objects} manifests"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    return files


def read_once(root: Path) -> int:
    git.repo.cache_clear()  # a fresh run opens the repository anew
    src = tree.resolve(repo=root)
    return len(desired.load(src))


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the git calls)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn: Callable[[], int], rounds: int) -> tuple[list[float], list[float], int]:
    """Wall and CPU seconds of each round. On a shared machine the wall time
    includes waiting for a core; the CPU time does not."""
    walls, cpus, count = [], [], 0
    for _ in range(rounds):
        c0, t0 = cpu_seconds(), time.perf_counter()
        count = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu_seconds() - c0)
    return walls, cpus, count


def isolate_git(tmp: Path) -> None:
    cfg = tmp / "gitconfig"
    cfg.write_text("[user]\n\tname = Bench\n\temail = bench@example.com\n")
    os.environ.update(GIT_CONFIG_GLOBAL=str(cfg), GIT_CONFIG_NOSYSTEM="1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--objects", type=int, action="append",
                    help="manifests in the tree (repeatable; default 1000 and 10000)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="cProfile one round of each N")
    args = ap.parse_args()
    sizes = args.objects or [1000, 10000]
    import yaml

    print(f"python {sys.version.split()[0]}, libyaml loader: {hasattr(yaml, 'CSafeLoader')}, "
          f"cpus: {os.cpu_count()}, rounds: {args.rounds} (median)")
    print(f"{'N':>7} {'files':>6} {'median s':>9} {'min s':>7} {'cpu s':>7} {'objects/s':>10} "
          f"{'us/object':>10}")
    with tempfile.TemporaryDirectory(prefix="bench-read-tree-") as tmp:
        isolate_git(Path(tmp))
        for n in sizes:
            root = Path(tmp) / f"repo-{n}"
            root.mkdir()
            files = make_repo(root, n)
            if args.profile:
                prof = cProfile.Profile()
                prof.runcall(read_once, root)
                pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
            walls, cpus, count = timed(lambda r=root: read_once(r), args.rounds)
            assert count == n, f"read {count} objects, expected {n}"
            med = statistics.median(walls)
            print(f"{n:>7} {files:>6} {med:>9.3f} {min(walls):>7.3f} "
                  f"{statistics.median(cpus):>7.3f} {n / med:>10,.0f} {med / n * 1e6:>10.1f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
