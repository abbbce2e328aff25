#!/usr/bin/env python3
"""Benchmark: ``kubectl gitops diff`` against ``kubectl diff --server-side``.

N objects (ConfigMaps, Deployments, Services in 5 namespaces; the Namespaces
are made beforehand) are synced to a fresh local control plane by
``kubectl gitops sync``; then a revision changing a third of them is
committed and diffed, in interleaved rounds, by:

  kubectl gitops diff                         (through kubectl's plugin discovery)
  kubectl diff --server-side --force-conflicts -f apps                  (default concurrency, 1)
  kubectl diff --server-side --force-conflicts --concurrency 16 -f apps
  kapp deploy --diff-run, the Flux ssa harness's diff  (bench/peers.py, where built)

The peers diff their own copy of the app (own namespaces, synced by the
peer itself, the same commit made on top): they report differences only
against objects they applied. The Deployments are paused (see
common.render), so that up to three copies settle quickly.

``--force-conflicts``: the live fields belong to the field manager
``kubectl-gitops``, so kubectl's own manager needs it for its dry-runs to
predict the same objects; ours and the kubectl variants then report the
same changed objects (checked before timing). Output goes to /dev/null (kapp's is read for its
count); each run must exit 1 (kapp: 3), differences, and the peers must
count the changed objects, else the bench fails. The table gives medians
and each tool's median divided by ours (3.00x = we are 3 times faster).

    .venv/bin/python bench/diff.py                     # N = 500, 5 rounds
    .venv/bin/python bench/diff.py -n 200 --rounds 3
    .venv/bin/python bench/diff.py --reuse /tmp/bench-cluster   # a running cluster's state dir
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import common  # bench/, the script's directory, is first on sys.path
import peers

OURS = "kubectl gitops diff"
KUBECTL = "kubectl diff"
KUBECTL_16 = "kubectl diff --concurrency 16"


def commands(repo: common.Repo) -> dict[str, list[str]]:
    kubectl = ["kubectl", "diff", "--server-side", "--force-conflicts"]
    return {OURS: ["kubectl", "gitops", "diff"],
            KUBECTL: [*kubectl, "-f", str(repo.apps)],
            KUBECTL_16: [*kubectl, "--concurrency", "16", "-f", str(repo.apps)]}


def changed_objects(argv: list[str], env: dict[str, str], cwd: Path, ours: bool) -> int:
    """How many objects a tool reports as different (untimed sanity check)."""
    proc = subprocess.run(argv + (["-o", "json"] if ours else []), env=env, cwd=cwd,
                          capture_output=True, text=True)
    if proc.returncode != 1:
        common.die(f"`{' '.join(argv)}` exited {proc.returncode}, expected 1 (differences):\n"
                   f"{proc.stderr.strip()[-3000:]}")
    if ours:
        return sum(i["action"] != "unchanged" for i in json.loads(proc.stdout)["items"])
    return sum(line.startswith("diff -u") for line in proc.stdout.splitlines())


def synced(env: dict[str, str], tmp: Path, prefix: str, n: int, tool: str,
           found: dict[str, Path]) -> common.Repo:
    """A copy of the unchanged revision in its own namespaces, synced by ours
    (tool "ours") or by the peer whose diff is ``tool`` (untimed)."""
    namespaces = common.namespace_set(prefix)
    common.create_namespaces(env, namespaces)
    repo = common.make_repo(env, tmp / prefix, n, namespaces, paused=True)
    common.say(f"{tool}: syncing the unchanged revision: {n} objects in "
               f"{len(namespaces)} namespaces")
    if tool == "ours":
        common.run(["kubectl", "gitops", "sync"], env, cwd=repo.root)
    else:
        sync = {peers.KAPP_DIFF: peers.KAPP, peers.FLUX_DIFF: peers.FLUX}[tool]
        peers.run(sync, found, repo, env, peers.Expect(n, created=n))
    return repo


def main() -> int:
    args = common.arguments(__doc__, rounds=5)
    common.say(common.machine())
    found = peers.available(not args.no_peers)
    with common.cluster(args.reuse) as cl, tempfile.TemporaryDirectory(prefix="bench-diff-") as t:
        tmp = Path(t)
        env = common.environment(cl.kubeconfig, tmp)
        tag = tmp.name[-6:].lower().replace('_', '-')
        changed = common.changed_indices(args.objects)
        repo = synced(env, tmp, f"diff-{tag}", args.objects, "ours", found)
        peer_repos = {tool: synced(env, tmp, f"diff-{tag}-{tool.split()[0]}", args.objects,
                                   tool, found)
                      for tool in peers.tools(found, diff=True)}
        namespaces = repo.namespaces
        common.settle(cl.kube(), [ns for r in (repo, *peer_repos.values())
                                  for ns in r.namespaces])
        for r in (repo, *peer_repos.values()):
            common.commit_change(env, r, changed)
        argvs = commands(repo)
        for tool, argv in argvs.items():
            count = changed_objects(argv, env, repo.root, tool == OURS)
            if count != len(changed):
                common.die(f"{tool} reports {count} changed objects, expected {len(changed)}")
        pending = peers.Expect(args.objects, changed=len(changed))
        common.say(f"ours and kubectl report the {len(changed)} changed objects; timing "
                   f"{args.rounds} rounds")
        tools = [*argvs, *peer_repos]
        table = common.Table(tools)
        for r in range(args.rounds):
            for tool in common.rotate(tools, r):
                table.add("diff", tool, peers.run(tool, found, peer_repos[tool], env, pending)
                          if tool in peer_repos else
                          common.timed(argvs[tool], env, cwd=repo.root, expect=(1,)))
            common.say(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{tool} {table.last('diff', tool):.2f}s" for tool in tools))
    print(f"\n{common.machine('end')}")
    print(f"N = {args.objects} objects ({len(changed)} changed, committed), "
          f"{len(namespaces)} namespaces, {args.rounds} rounds, interleaved; "
          f"ratio = tool's median / ours")
    print(table.render(), flush=True)
    ours = table.median("diff", OURS)
    print(f"target >= 3x faster than kubectl diff (default concurrency): "
          f"{table.median('diff', KUBECTL) / ours:.2f}x; "
          f"target not slower than kubectl diff --concurrency 16: "
          f"{table.median('diff', KUBECTL_16) / ours:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
