#!/usr/bin/env python3
"""Benchmark: ``kubectl gitops sync --prune`` against ``kubectl apply --server-side``.

N objects (ConfigMaps, Deployments, Services in 5 namespaces) on a fresh
local control plane. Each round gives every tool its own fresh set of 5
Namespaces (made beforehand, untimed; not among the N objects) and times,
tools interleaved in a rotating order:

  first      the first sync into the empty namespaces
  no-change  the same revision again
  change     after a commit that changes a third of the objects

for

  kubectl gitops sync --prune          (through kubectl's plugin discovery)
  kubectl apply --server-side -f apps
  KUBECTL_APPLYSET=true kubectl apply --server-side --prune
      --applyset=applysets.bench.kubectl-gitops.io/NAME -f apps
  kapp deploy, the Flux ssa harness   (bench/peers.py, where they build)

on the same files (only the namespace names differ between tools).

kubectl's ApplySet: with a namespaced parent (``--applyset=configmap/NAME
-n NS``) kubectl refuses every object outside NS ("the namespace from the
provided object ... does not match"), and without -n it refuses the parent
("namespace is required to use namespace-scoped ApplySet"). To hold objects
in 5 namespaces its parent must be cluster-scoped: a custom resource whose
CRD is labelled ``applyset.kubernetes.io/is-parent-type``. kubectl will not
create such a parent, so the bench makes the CRD once and, per round, the
parent with the ID label and the annotations kubectl requires (untimed).

A fourth row, ``floor``, times only the N applies of the first sync, 16
at a time from this process with nothing read or checked before (``floor``
below, into its own namespaces): the API server's own
limit on this machine. kubectl apply's median divided by it bounds what
any first sync could reach here.

The Deployments are paused (see common.render): same API work for the
tools, little for the controller-manager. Between timed runs the bench
still waits (untimed) until the controllers have observed every Deployment,
so one tool's after-effects do not land in the next one's time. Every run
must exit 0, and ours and the peers must report what the phase did. The
table gives medians and each tool's median divided by ours (2.00x = we are
twice as fast).

    .venv/bin/python bench/sync.py                     # N = 500, 3 rounds
    .venv/bin/python bench/sync.py -n 200 --rounds 5
    .venv/bin/python bench/sync.py --reuse /tmp/bench-cluster   # a running cluster's state dir
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # bench/, the script's directory, is first on sys.path
import peers
import yaml

from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.kubeconfig import Overrides

OURS = "kubectl gitops sync --prune"
APPLY = "kubectl apply"
APPLYSET = "kubectl apply --applyset"
TOOLS = (OURS, APPLY, APPLYSET)
FLOOR = "floor: the applies alone"
SHORT = {OURS: "gitops", APPLY: "apply", APPLYSET: "applyset", FLOOR: "floor",
         peers.KAPP: "kapp", peers.FLUX: "flux"}
PHASES = ("first", "no-change", "change")

PARENT_GROUP = "bench.kubectl-gitops.io"
PARENT_RESOURCE = f"applysets.{PARENT_GROUP}"
PARENT_CRD = f"""\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {PARENT_RESOURCE}
  labels:
    applyset.kubernetes.io/is-parent-type: "true"
spec:
  group: {PARENT_GROUP}
  names: {{kind: ApplySet, plural: applysets, singular: applyset, listKind: ApplySetList}}
  scope: Cluster
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"""


def parent_manifest(name: str) -> str:
    """A cluster-scoped ApplySet parent as kubectl expects to find one: the ID
    label of KEP-3659 (name.namespace.kind.group), tooling and (empty)
    contains-group-kinds annotations."""
    digest = hashlib.sha256(f"{name}..ApplySet.{PARENT_GROUP}".encode()).digest()
    set_id = f"applyset-{base64.urlsafe_b64encode(digest).decode().rstrip('=')}-v1"
    return (f"apiVersion: {PARENT_GROUP}/v1\nkind: ApplySet\nmetadata:\n  name: {name}\n"
            f"  labels:\n    applyset.kubernetes.io/id: {set_id}\n"
            f"  annotations:\n    applyset.kubernetes.io/tooling: kubectl/v1\n"
            f"    applyset.kubernetes.io/contains-group-kinds: \"\"\n")


def kubectl_apply(env: dict[str, str], text: str) -> None:
    proc = subprocess.run(["kubectl", "apply", "--server-side", "-f", "-"], env=env, input=text,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        common.die(f"kubectl apply: {proc.stderr.strip()}")


def commands(tool: str, repo: common.Repo, parent: str) -> list[str]:
    if tool == OURS:
        return ["kubectl", "gitops", "sync", "--prune"]
    if tool == APPLY:
        return ["kubectl", "apply", "--server-side", "-f", str(repo.apps)]
    return ["kubectl", "apply", "--server-side", "--prune",
            f"--applyset={PARENT_RESOURCE}/{parent}", "-f", str(repo.apps)]


def floor(repo: common.Repo, kubeconfig: Path) -> common.Timing:
    """The repo's objects applied (server-side, field manager kubectl-gitops)
    16 at a time over keep-alive connections, and nothing else: no start-up,
    no git, no reading of live objects, no dry-run, no ApplySet parent. Only
    the applies are timed; no sync can take less on the same cluster."""
    objs = [doc for path in sorted(repo.apps.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]
    kube = Kube(Overrides(kubeconfig=str(kubeconfig)), concurrency=16)
    types = kube.resource_types()
    work = [(types[(o["apiVersion"].rpartition("/")[0], o["kind"])], o) for o in objs]
    start = time.perf_counter()
    list(kube.map(lambda w: kube.apply(w[0], w[1]), work))
    wall = time.perf_counter() - start
    kube.close()
    return common.Timing(wall, 0.0, "")


def measure(tool: str, repo: common.Repo, env: dict[str, str], found: dict[str, Path],
            parent: str, phase: str, expect: peers.Expect) -> common.Timing:
    """One timed run; ours and the peers must report what the phase did."""
    if tool in (peers.KAPP, peers.FLUX):
        return peers.run(tool, found, repo, env, expect)
    t = common.timed(commands(tool, repo, parent),
                     {**env, "KUBECTL_APPLYSET": "true"} if tool == APPLYSET else env,
                     cwd=repo.root)
    if tool == OURS:
        peers.ours_reported(f"{OURS} ({phase})", t.stderr, expect)
    return t


def main() -> int:
    args = common.arguments(__doc__, rounds=3)
    common.say(common.machine())
    found = peers.available(not args.no_peers)
    tools = [*TOOLS, *peers.tools(found, diff=False)]
    changed = common.changed_indices(args.objects)
    expects = {"first": peers.Expect(args.objects, created=args.objects),
               "no-change": peers.Expect(args.objects),
               "change": peers.Expect(args.objects, changed=len(changed))}
    table = common.Table([*tools, FLOOR])
    with common.cluster(args.reuse) as cl, tempfile.TemporaryDirectory(prefix="bench-sync-") as t:
        tmp = Path(t)
        tag = tmp.name[-6:].lower().replace("_", "-")
        env = common.environment(cl.kubeconfig, tmp)
        kube = cl.kube()
        kubectl_apply(env, PARENT_CRD)
        common.kubectl(env, "wait", "--for=condition=Established", "--timeout=60s",
                       f"crd/{PARENT_RESOURCE}")
        for r in range(args.rounds):
            order = common.rotate(tools, r)
            repos: dict[str, common.Repo] = {}
            parent = f"bench-{tag}-r{r}"
            for tool in (*tools, FLOOR):
                namespaces = common.namespace_set(f"s{tag}-r{r}-{SHORT[tool]}")
                common.create_namespaces(env, namespaces)
                repos[tool] = common.make_repo(env, tmp / f"r{r}-{SHORT[tool]}", args.objects,
                                               namespaces, paused=True)
            kubectl_apply(env, parent_manifest(parent))
            for phase in PHASES:
                for tool in order:
                    repo = repos[tool]
                    if phase == "change" and not repo.changed:
                        common.commit_change(env, repo, changed)
                    table.add(phase, tool,
                              measure(tool, repo, env, found, parent, phase, expects[phase]))
                    common.settle(kube, repo.namespaces)
                if phase == "first":
                    table.add(phase, FLOOR, floor(repos[FLOOR], cl.kubeconfig))
                    common.settle(kube, repos[FLOOR].namespaces)
                common.say(f"round {r + 1}/{args.rounds} {phase}: " + ", ".join(
                    f"{tool} {table.last(phase, tool):.2f}s" for tool in tools))
    print(f"\n{common.machine('end')}")
    print(f"N = {args.objects} objects ({len(changed)} changed in 'change'), 5 namespaces "
          f"per tool and round, {args.rounds} rounds, interleaved; "
          f"ratio = tool's median / ours", flush=True)
    print(table.render())
    apply = {p: table.median(p, APPLY) / table.median(p, OURS) for p in PHASES}
    print(f"target >= 2x faster than kubectl apply on the first sync: {apply['first']:.2f}x; "
          f">= 5x on the no-change sync: {apply['no-change']:.2f}x", flush=True)
    bound = table.median("first", APPLY) / table.median("first", FLOOR)
    print(f"floor: the {args.objects} applies alone take "
          f"{table.median('first', FLOOR):.2f}s, so no first sync on this cluster can be more "
          f"than {bound:.2f}x faster than kubectl apply", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
