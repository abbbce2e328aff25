#!/usr/bin/env python3
"""Benchmark: ``sync --fleet`` and ``diff --fleet`` over 1, 3 and 6 clusters.

One app (N objects: ConfigMaps, Deployments, Services in 5 namespaces) goes
to K local control planes (contexts ``c0``..``c5`` of one kubeconfig, a
``contextPattern`` target). For each fleet size K, per round, tools
interleaved, every run from the same state (the cluster is set to revision
A, untimed, before each timed change):

  change     revision A -> B (a third of the objects changed)
  no-change  B again
  diff       diff of B against clusters at A (exit status 1)

for

  kubectl gitops sync|diff --fleet --target c0 ... (one process, targets in parallel)
  the slowest single run: ``kubectl gitops sync|diff --context cI``, each
      target alone, one after the other; the table shows the slowest
  a shell loop of those single runs (what a team does without fleets)
  parallel singles: those single runs all at once, one process each (sync
      only): what the machine allows K clusters at once, whatever the tool

The target: a fleet run within 1.3x of its slowest single target. The
fleet's peak memory (max RSS of its process) is reported per K.

    .venv/bin/python bench/fleet.py                      # K = 1,3,6, N = 100, 3 rounds
    .venv/bin/python bench/fleet.py --sizes 1,3 -n 50 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import common  # bench/, the script's directory, is first on sys.path

sys.path.insert(0, str(common.ROOT))
from testing.fleet import started  # noqa: E402


@dataclass
class Run:
    wall: float
    rss_mb: float
    cpu: float  # the client's own CPU seconds (user + system)


def timed(argv: list[str], env: dict[str, str], cwd: Path, expect: tuple[int, ...] = (0,)) \
        -> Run:
    """Wall seconds and the peak RSS of one process (its own rusage, wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in expect:
        common.die(f"`{' '.join(argv)}` exited {proc.returncode}: {err.decode()[-2000:]}")
    return Run(wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)


@dataclass
class Results:
    times: dict[tuple[int, str, str], list[float]] = field(default_factory=dict)
    rss: dict[int, list[float]] = field(default_factory=dict)
    cpu: dict[tuple[int, str], list[float]] = field(default_factory=dict)  # fleet, client

    def add(self, k: int, scenario: str, tool: str, wall: float) -> None:
        self.times.setdefault((k, scenario, tool), []).append(wall)

    def render(self) -> str:
        lines = [f"{'K':>2}  {'scenario':<10}{'fleet s':>9}{'fleet cpu s':>12}"
                 f"{'slowest single s':>18}{'ratio':>7}{'shell loop s':>14}{'loop/fleet':>11}"
                 f"{'parallel singles s':>20}{'fleet RSS MB':>14}"]
        for k in sorted({k for k, _, _ in self.times}):
            for scenario in ("change", "no-change", "diff"):
                fleet = self.times.get((k, scenario, "fleet"))
                if not fleet:
                    continue
                f = statistics.median(fleet)
                s = statistics.median(self.times[(k, scenario, "slowest single")])
                loop = self.times.get((k, scenario, "shell loop"))
                lp = statistics.median(loop) if loop else float("nan")
                rss = max(self.rss.get(k, [0.0]))
                cpu = statistics.median(self.cpu.get((k, scenario), [float("nan")]))
                par = self.times.get((k, scenario, "parallel singles"))
                pr = f"{statistics.median(par):.3f}" if par else "-"
                lines.append(f"{k:>2}  {scenario:<10}{f:>9.3f}{cpu:>12.2f}{s:>18.3f}"
                             f"{f / s:>6.2f}x{lp:>14.3f}{lp / f:>10.2f}x{pr:>20}{rss:>14.0f}")
        return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--objects", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="1,3,6", help="fleet sizes, comma-separated")
    args = ap.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    names = [f"c{i}" for i in range(max(sizes))]
    common.say(common.machine())
    with common.cluster() as first, tempfile.TemporaryDirectory(prefix="bench-fleet-") as t:
        tmp = Path(t)
        began = time.perf_counter()
        with started(first.kubeconfig, tmp / "fleet", names[:1], names[1:]) as fleet:
            common.say(f"{len(names)} control planes up ({time.perf_counter() - began:.1f}s "
                       "for the extra ones)")
            env = common.environment(fleet.kubeconfig, tmp)
            results = bench(env, tmp, names, sizes, args.objects, args.rounds)
    print(f"\nN = {args.objects} objects per cluster, {args.rounds} rounds; medians\n")
    print(results.render())
    common.say(common.machine("end"))


def bench(env: dict[str, str], tmp: Path, names: list[str], sizes: list[int],
          n_objects: int, rounds: int) -> Results:
    namespaces = common.namespace_set("fleet")
    for c in names:
        _namespaces(env, c, namespaces)
    repo = common.make_repo(env, tmp / "repo", n_objects, namespaces, name="fleet",
                            paused=True)
    # The fleet: every context, from one pattern entry.
    (repo.root / ".gitops.yaml").write_text(
        f"name: fleet\nnamespace: {namespaces[0]}\npath: {common.APPS_DIR}\n"
        "targets:\n- contextPattern: \"c*\"\n")
    common.git(env, repo.root, "commit", "-q", "-a", "-m", "targets")
    common.git(env, repo.root, "tag", "A")
    common.commit_change(env, repo, common.changed_indices(n_objects))
    common.git(env, repo.root, "tag", "B")
    gitops = ["kubectl", "gitops"]
    results = Results()

    def reset(k: int) -> None:  # untimed: every target at A
        timed(gitops + ["sync", "--ref", "A", *_targets(names[:k])], env, repo.root)

    for k in sizes:
        targets = names[:k]
        reset(k)
        for rnd in range(rounds):
            common.say(f"K = {k}, round {rnd + 1}/{rounds}")
            order = common.rotate(["fleet", "single", "loop"], rnd)
            for tool in order:
                reset(k)
                if tool == "fleet":
                    r = timed(gitops + ["sync", "--ref", "B", *_targets(targets)], env,
                              repo.root)
                    results.add(k, "change", "fleet", r.wall)
                    results.rss.setdefault(k, []).append(r.rss_mb)
                    results.cpu.setdefault((k, "change"), []).append(r.cpu)
                    r = timed(gitops + ["sync", "--ref", "B", *_targets(targets)], env,
                              repo.root)
                    results.add(k, "no-change", "fleet", r.wall)
                    results.cpu.setdefault((k, "no-change"), []).append(r.cpu)
                    reset(k)
                    r = timed(gitops + ["diff", "--ref", "B", "-o", "table",
                                        *_targets(targets)], env, repo.root, expect=(1,))
                    results.add(k, "diff", "fleet", r.wall)
                    results.cpu.setdefault((k, "diff"), []).append(r.cpu)
                elif tool == "single":
                    change = [timed(gitops + ["sync", "--ref", "B", "--context", c], env,
                                    repo.root).wall for c in targets]
                    same = [timed(gitops + ["sync", "--ref", "B", "--context", c], env,
                                  repo.root).wall for c in targets]
                    reset(k)
                    diffs = [timed(gitops + ["diff", "--ref", "B", "-o", "table",
                                             "--context", c], env, repo.root,
                                   expect=(1,)).wall for c in targets]
                    results.add(k, "change", "slowest single", max(change))
                    results.add(k, "no-change", "slowest single", max(same))
                    results.add(k, "diff", "slowest single", max(diffs))
                else:
                    loop = "; ".join(f"kubectl gitops sync --ref B --context {c} >/dev/null "
                                     "|| exit 1" for c in targets)
                    r = timed(["sh", "-c", loop], env, repo.root)
                    results.add(k, "change", "shell loop", r.wall)
                    r = timed(["sh", "-c", loop], env, repo.root)
                    results.add(k, "no-change", "shell loop", r.wall)
                    reset(k)
                    dloop = "; ".join(f"kubectl gitops diff --ref B -o table --context {c} "
                                      ">/dev/null; [ $? = 1 ] || exit 1" for c in targets)
                    r = timed(["sh", "-c", dloop], env, repo.root)
                    results.add(k, "diff", "shell loop", r.wall)
                if tool == "loop" and k > 1:  # the singles at once, one process each
                    reset(k)
                    par = " ".join(f"kubectl gitops sync --ref B --context {c} >/dev/null & "
                                   for c in targets) + "wait"
                    r = timed(["sh", "-c", par], env, repo.root)
                    results.add(k, "change", "parallel singles", r.wall)
                    r = timed(["sh", "-c", par], env, repo.root)
                    results.add(k, "no-change", "parallel singles", r.wall)
    return results


def _namespaces(env: dict[str, str], context: str, names: list[str]) -> None:
    docs = "".join(f"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {n}\n"
                   for n in names)
    proc = subprocess.run(["kubectl", "--context", context, "apply", "--server-side", "-f",
                           "-"], env=env, input=docs, capture_output=True, text=True)
    if proc.returncode != 0:
        common.die(f"cannot create namespaces in {context}: {proc.stderr.strip()}")


def _targets(names: list[str]) -> list[str]:
    return [a for n in names for a in ("--target", n)]


if __name__ == "__main__":
    main()
