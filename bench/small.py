#!/usr/bin/env python3
"""Benchmark: small apps (N = 5, 20, 100 objects), where most apps live.

For each N, an app of N objects (ConfigMaps, Deployments, Services, as in
the other benches, Deployments paused) is synced once (untimed) by each
tool into a namespace of its own: ours, kubectl, and the peers of
bench/peers.py (kapp, the Flux ssa harness) where they build. Then, tools
interleaved in a rotating order, every round times:

  no-change    ours: sync --prune; kubectl apply --server-side -f apps;
               kapp deploy; flux ssa sync
  diff         ours: diff; kubectl diff --server-side -f apps;
               kapp deploy --diff-run; flux ssa diff (nothing pending)
  diff-change  the same diffs after a commit that changes a third of the objects
  change       the same syncs of that commit (a third changed)

(the next round changes the same third back), and, in no-change and diff,
``kubectl get -f apps`` on our namespace: reading the same objects, the
least any tool must do; and, in no-change, the floor of any Python kubectl
plugin (bench/pyfloor.py: the interpreter, TLS, HTTP and YAML imports, the
kubeconfig, one git call, the manifests parsed, the same reads). The table gives medians; ratio = the tool's median /
ours (2.00x = we are twice as fast). The last lines give ours / ``kubectl
get`` (the issue's target at N = 5: at most 1.5x).

Every run must succeed and report what the scenario implies (ours and the
peers: N unchanged, or the third changed; diffs: exit 1 exactly when
something differs), else the bench fails.

    .venv/bin/python bench/small.py                    # N = 5, 20, 100; 5 rounds
    .venv/bin/python bench/small.py --sizes 5 --rounds 9 --no-peers
    .venv/bin/python bench/small.py --reuse /tmp/bench-cluster   # a running cluster's state dir
    .venv/bin/python bench/small.py --bin ../main/.venv/bin      # another checkout's build
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import common  # bench/, the script's directory, is first on sys.path
import peers

SYNC = "kubectl gitops sync --prune"
DIFF = "kubectl gitops diff"
APPLY = "kubectl apply --server-side"
KDIFF = "kubectl diff --server-side"
GET = "kubectl get"
FLOOR = "python plugin floor"  # bench/pyfloor.py
# Which copy of the app (namespace) each tool works on.
COPY = {SYNC: "ours", DIFF: "ours", GET: "ours", FLOOR: "ours", APPLY: "kubectl", KDIFF: "kubectl",
        peers.KAPP: "kapp", peers.KAPP_DIFF: "kapp", peers.FLUX: "flux",
        peers.FLUX_DIFF: "flux"}


def scenarios(found: dict[str, Path]) -> dict[str, list[str]]:
    """Scenario -> its tools, ours first (the ratios' base), in time order."""
    syncs = [SYNC, APPLY, *peers.tools(found, diff=False)]
    diffs = [DIFF, KDIFF, *peers.tools(found, diff=True)]
    return {"no-change": [*syncs, GET, FLOOR], "diff": [*diffs, GET], "diff-change": diffs,
            "change": syncs}


def commands(tool: str, repo: common.Repo) -> list[str]:
    apps = str(repo.apps)
    return {SYNC: ["kubectl", "gitops", "sync", "--prune"],
            DIFF: ["kubectl", "gitops", "diff"],
            APPLY: ["kubectl", "apply", "--server-side", "-f", apps],
            KDIFF: ["kubectl", "diff", "--server-side", "--force-conflicts", "-f", apps],
            GET: ["kubectl", "get", "-f", apps],
            FLOOR: ["kubectl", "pyfloor", apps, f"small-{repo.n_objects}"]}[tool]


def install_floor(env: dict[str, str], tmp: Path) -> None:
    """``kubectl-pyfloor`` on PATH: bench/pyfloor.py on our interpreter."""
    bindir = tmp / "floor-bin"
    bindir.mkdir()
    plugin = bindir / "kubectl-pyfloor"
    plugin.write_text(f"#!{common.PYTHON} -I\n"
                      + (Path(__file__).parent / "pyfloor.py").read_text())
    plugin.chmod(0o755)
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"


def measure(tool: str, repo: common.Repo, env: dict[str, str], found: dict[str, Path],
            expect: peers.Expect) -> common.Timing:
    """One timed run, checked against what it must report."""
    if tool in peers.tools(found, diff=False) + peers.tools(found, diff=True):
        return peers.run(tool, found, repo, env, expect)
    codes = (1 if expect.differs else 0,) if tool in (DIFF, KDIFF) else (0,)
    t = common.timed(commands(tool, repo), env, cwd=repo.root, expect=codes)
    if tool == SYNC:
        peers.ours_reported(tool, t.stderr, expect)
    return t


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
    ap.add_argument("--no-peers", action="store_true", help="leave out kapp and the Flux harness")
    return ap.parse_args()


def setup(env: dict[str, str], tmp: Path, tag: str, n: int,
          found: dict[str, Path]) -> dict[str, common.Repo]:
    """Each tool's copy of the N-object app, synced once by its tool (untimed)."""
    copies = ["ours", "kubectl", *(["kapp"] if "kapp" in found else []),
              *(["flux"] if "fluxssa" in found else [])]
    repos = {}
    for copy in copies:
        namespaces = [f"small-{tag}-{n}-{copy}"]
        common.create_namespaces(env, namespaces)
        repos[copy] = common.make_repo(env, tmp / f"n{n}-{copy}", n, namespaces,
                                       name=f"small-{n}", paused=True)
    first = peers.Expect(n, created=n)
    for tool in (SYNC, APPLY, *peers.tools(found, diff=False)):
        measure(tool, repos[COPY[tool]], env, found, first)
    return repos


def main() -> int:
    args = arguments()
    if args.bin:
        common.VENV_BIN = args.bin.resolve()
    common.say(common.machine())
    found = peers.available(not args.no_peers)
    plan = scenarios(found)
    tables: dict[int, common.Table] = {}
    with common.cluster(args.reuse) as cl, tempfile.TemporaryDirectory(prefix="bench-small-") as t:
        tmp = Path(t)
        tag = tmp.name[-6:].lower().replace("_", "-")
        env = common.environment(cl.kubeconfig, tmp)
        install_floor(env, tmp)
        kube = cl.kube()
        repos: dict[int, dict[str, common.Repo]] = {}
        for n in args.sizes:
            repos[n] = setup(env, tmp, tag, n, found)
            common.settle(kube, [ns for r in repos[n].values() for ns in r.namespaces])
            tables[n] = common.Table(list(COPY))
        for r in range(args.rounds):
            for n in args.sizes:
                round_(r, n, repos[n], env, found, plan, tables[n])
                common.say(f"round {r + 1}/{args.rounds} N={n}: " + ", ".join(
                    f"{s} {tool} {tables[n].last(s, tool):.3f}s"
                    for s, tools in plan.items() for tool in tools[:1]))
    print(f"\n{common.machine('end')}")
    print(f"{args.rounds} rounds, interleaved; one namespace per N and tool; "
          "ratio = tool's median / ours")
    for n in args.sizes:
        print(f"\nN = {n}")
        print(render(tables[n], plan))
    print()
    for n in args.sizes:
        get = tables[n].median("no-change", GET)
        print(f"N = {n}: ours / kubectl get: no-change sync "
              f"{tables[n].median('no-change', SYNC) / get:.2f}x, diff "
              f"{tables[n].median('diff', DIFF) / tables[n].median('diff', GET):.2f}x "
              f"(target at N = 5: <= 1.5x); the Python plugin floor "
              f"{tables[n].median('no-change', FLOOR) / get:.2f}x", flush=True)
    return 0


def round_(r: int, n: int, repos: dict[str, common.Repo], env: dict[str, str],
           found: dict[str, Path], plan: dict[str, list[str]], table: common.Table) -> None:
    """One round at one N: the scenarios in order, tools rotated; before
    diff-change every copy gets the commit that flips a third of the objects."""
    changed = common.changed_indices(n)
    for scenario, tools in plan.items():
        if scenario == "diff-change":
            for repo in repos.values():
                common.commit_change(env, repo, set() if repo.changed else changed)
        pending = scenario in ("diff-change", "change")
        expect = peers.Expect(n, changed=len(changed) if pending else 0)
        for tool in common.rotate(tools, r):
            table.add(scenario, tool, measure(tool, repos[COPY[tool]], env, found, expect))


def render(table: common.Table, plan: dict[str, list[str]]) -> str:
    """Each scenario with ours first: Table.render compares with its first tool."""
    out = []
    for scenario, tools in plan.items():
        part = common.Table(list(tools))
        part.times = {k: v for k, v in table.times.items() if k[0] == scenario}
        part.cpu = {k: v for k, v in table.cpu.items() if k[0] == scenario}
        lines = part.render().splitlines()
        out += lines if not out else lines[1:]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
