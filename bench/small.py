#!/usr/bin/env python3
"""Benchmark: small apps (N = 5, 20, 100 objects), where most apps live.

For each N, an app of N objects (ConfigMaps, Deployments, Services, as in
the other benches, Deployments paused) in one namespace of its own is
synced once by ``kubectl gitops sync --prune`` (untimed); then, tools
interleaved in a rotating order, every round times on that unchanged
revision:

  no-change  kubectl gitops sync --prune      kubectl apply --server-side -f apps
  diff       kubectl gitops diff              kubectl diff --server-side --force-conflicts -f apps

and, in both scenarios, ``kubectl get -f apps``: reading the same objects,
the least any tool must do. The table gives medians; ratio = the kubectl
command's median / ours (2.00x = we are twice as fast). The last lines give
ours / ``kubectl get`` (the issue's target at N = 5: at most 1.5x).

Every run must succeed (diffs exit 0: nothing differs) and our sync must
report N unchanged objects, else the bench fails.

    .venv/bin/python bench/small.py                    # N = 5, 20, 100; 5 rounds
    .venv/bin/python bench/small.py --sizes 5 --rounds 9
    .venv/bin/python bench/small.py --reuse /tmp/bench-cluster   # a running cluster's state dir
    .venv/bin/python bench/small.py --bin ../main/.venv/bin      # another checkout's build
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import common  # bench/, the script's directory, is first on sys.path

SYNC = "kubectl gitops sync --prune"
DIFF = "kubectl gitops diff"
APPLY = "kubectl apply --server-side"
KDIFF = "kubectl diff --server-side"
GET = "kubectl get"
SCENARIOS = {"no-change": (SYNC, APPLY, GET), "diff": (DIFF, KDIFF, GET)}


def commands(tool: str, repo: common.Repo) -> list[str]:
    apps = str(repo.apps)
    return {SYNC: ["kubectl", "gitops", "sync", "--prune"],
            DIFF: ["kubectl", "gitops", "diff"],
            APPLY: ["kubectl", "apply", "--server-side", "-f", apps],
            KDIFF: ["kubectl", "diff", "--server-side", "--force-conflicts", "-f", apps],
            GET: ["kubectl", "get", "-f", apps]}[tool]


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=lambda s: [int(n) for n in s.split(",")],
                    default=[5, 20, 100], help="comma-separated object counts")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reuse", metavar="STATE_DIR",
                    help="use (and leave running) the control plane of this state dir")
    ap.add_argument("--bin", metavar="DIR", type=Path,
                    help="time the kubectl-gitops installed in DIR (another checkout's "
                         ".venv/bin: before and after a change) instead of this one's")
    return ap.parse_args()


def main() -> int:
    args = arguments()
    if args.bin:
        common.VENV_BIN = args.bin.resolve()
    common.say(common.machine())
    tables: dict[int, common.Table] = {}
    with common.cluster(args.reuse) as cl, tempfile.TemporaryDirectory(prefix="bench-small-") as t:
        tmp = Path(t)
        tag = tmp.name[-6:].lower().replace("_", "-")
        env = common.environment(cl.kubeconfig, tmp)
        kube = cl.kube()
        repos: dict[int, common.Repo] = {}
        for n in args.sizes:
            namespaces = [f"small-{tag}-{n}"]
            common.create_namespaces(env, namespaces)
            repos[n] = common.make_repo(env, tmp / f"n{n}", n, namespaces, name=f"small-{n}",
                                        paused=True)
            common.run(commands(SYNC, repos[n]), env, cwd=repos[n].root)
            common.settle(kube, namespaces)
            tables[n] = common.Table([SYNC, APPLY, GET, DIFF, KDIFF])
        for r in range(args.rounds):
            for n in args.sizes:
                repo = repos[n]
                for scenario, tools in SCENARIOS.items():
                    for tool in common.rotate(list(tools), r):
                        t_ = common.timed(commands(tool, repo), env, cwd=repo.root)
                        if tool == SYNC and f"{n} unchanged" not in t_.stderr:
                            common.die(f"{SYNC}: expected '{n} unchanged', got:\n{t_.stderr}")
                        tables[n].add(scenario, tool, t_)
                common.say(f"round {r + 1}/{args.rounds} N={n}: " + ", ".join(
                    f"{tool} {tables[n].last(s, tool):.3f}s"
                    for s, tools in SCENARIOS.items() for tool in tools if tool != GET))
    print(f"\n{common.machine('end')}")
    print(f"{args.rounds} rounds, interleaved; one namespace per N; "
          "ratio = kubectl median / ours")
    for n in args.sizes:
        print(f"\nN = {n}")
        print(render(tables[n]))
    print()
    for n in args.sizes:
        get = tables[n].median("no-change", GET)
        print(f"N = {n}: ours / kubectl get: no-change sync "
              f"{tables[n].median('no-change', SYNC) / get:.2f}x, diff "
              f"{tables[n].median('diff', DIFF) / tables[n].median('diff', GET):.2f}x "
              f"(target at N = 5: <= 1.5x)", flush=True)
    return 0


def render(table: common.Table) -> str:
    """Each scenario with ours first: Table.render compares with its first tool."""
    out = []
    for scenario, tools in SCENARIOS.items():
        part = common.Table(list(tools))
        part.times = {k: v for k, v in table.times.items() if k[0] == scenario}
        part.cpu = {k: v for k, v in table.cpu.items() if k[0] == scenario}
        lines = part.render().splitlines()
        out += lines if not out else lines[1:]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
