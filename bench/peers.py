"""The peers the cluster benches time next to ours, and what every run of
them must report.

  kapp      carvel.dev/kapp v0.64.2:
            ``kapp deploy -a bench -n NS -f apps -y --wait=false --apply-exit-status``
            (``--wait=false``: ours does not wait for rollouts either, and
            without it a diff counts a Deployment still rolling out as a
            change; the rest is kapp's defaults: it diffs against its
            last-applied copy, applies 5 at a time, records an app change
            per deploy that writes) and, for diff, the same with ``--diff-run
            --diff-changes --diff-exit-status`` instead of the last flag.
  flux ssa  bench/fluxssa, Flux's apply engine (fluxcd/pkg/ssa v0.78.0)
            applying the directory as kustomize-controller does (field
            manager kustomize-controller, 4 dry-runs at a time, inventory
            in a ConfigMap, ``-prune``); diff as ``flux diff kustomization``.

``tools/build-peers.sh`` builds both from the Go module proxy into
~/.cache/kubectl-gitops the first time (a few minutes) and reuses them
after; a peer that cannot be built is left out of the run with one line.

Each peer gets its own copy of the app (its own namespaces): kapp and Flux
both mark what they own (labels, annotations, managed fields), so sharing
objects with another tool would make every one of their runs a change.

A run that does not report what the scenario implies (``Expect``) stops the
bench: kapp's exit status (2: no changes, 3: changes) and its ``Op:`` line,
the harness's exit status and its summary line, ours' summary line.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import common

KAPP = "kapp deploy"
KAPP_DIFF = "kapp deploy --diff-run"
FLUX = "flux ssa harness"
FLUX_DIFF = "flux ssa harness diff"
APP = "bench"  # the app's name for both peers; each lives in its own namespace


@dataclass(frozen=True)
class Expect:
    """What one run must report: ``n`` objects, of which ``created`` are new
    and ``changed`` differ from the live objects (the rest unchanged)."""

    n: int
    created: int = 0
    changed: int = 0

    @property
    def differs(self) -> bool:
        return bool(self.created or self.changed)


def available(wanted: bool = True) -> dict[str, Path]:
    """``{"kapp": binary, "fluxssa": binary}`` for the peers that could be
    built (the first call builds them: minutes); one line for each left out."""
    if not wanted:
        common.say("peers: left out (--no-peers)")
        return {}
    proc = subprocess.run([str(common.ROOT / "tools" / "build-peers.sh")],
                          capture_output=True, text=True)
    for line in proc.stderr.splitlines():
        common.say(line)
    found = {name: Path(path) for name, _, path in
             (line.partition(" ") for line in proc.stdout.splitlines()) if path}
    for name in ("kapp", "fluxssa"):
        if name not in found and f" {name}" not in proc.stderr:  # else the script said why
            common.say(f"peers: {name} is not available; this run goes on without it")
    return found


def tools(found: dict[str, Path], *, diff: bool) -> list[str]:
    """The table rows for the peers that were found."""
    rows = {"kapp": KAPP_DIFF if diff else KAPP, "fluxssa": FLUX_DIFF if diff else FLUX}
    return [rows[name] for name in ("kapp", "fluxssa") if name in found]


def argv(tool: str, found: dict[str, Path], repo: common.Repo) -> list[str]:
    """The command line of a peer on ``repo``'s manifests."""
    apps, ns = str(repo.apps), repo.namespaces[0]
    if tool in (KAPP, KAPP_DIFF):
        kapp = [str(found["kapp"]), "deploy", "-a", APP, "-n", ns, "-f", apps, "-y",
                "--wait=false"]
        if tool == KAPP_DIFF:
            return [*kapp, "--diff-run", "--diff-changes", "--diff-exit-status"]
        return [*kapp, "--apply-exit-status"]
    mode = "diff" if tool == FLUX_DIFF else "sync"
    return [str(found["fluxssa"]), mode, "-dir", apps, "-name", APP, "-namespace", ns,
            *(["-prune"] if mode == "sync" else [])]


def run(tool: str, found: dict[str, Path], repo: common.Repo, env: dict[str, str],
        expect: Expect) -> common.Timing:
    """Time one run of a peer and check that it reported ``expect``."""
    if tool in (KAPP, KAPP_DIFF):
        t = common.timed(argv(tool, found, repo), env, cwd=repo.root,
                         expect=(3 if expect.differs else 2,), capture=True)
        _kapp_reported(tool, t.stdout, expect)
        return t
    codes = (1 if expect.differs else 0,) if tool == FLUX_DIFF else (0,)
    t = common.timed(argv(tool, found, repo), env, cwd=repo.root, expect=codes)
    _flux_reported(tool, t.stderr, expect)
    return t


def _kapp_reported(tool: str, stdout: str, expect: Expect) -> None:
    m = re.search(r"^Op:\s+(\d+) create, (\d+) delete, (\d+) update", stdout, re.M)
    got = tuple(map(int, m.groups())) if m else None
    if got != (expect.created, 0, expect.changed):
        common.die(f"{tool}: expected 'Op: {expect.created} create, 0 delete, "
                   f"{expect.changed} update', got:\n{stdout[-2000:]}")


def _flux_reported(tool: str, stderr: str, expect: Expect) -> None:
    want = (f"fluxssa: {expect.created} created, {expect.changed} configured, "
            f"{expect.n - expect.created - expect.changed} unchanged, 0 deleted")
    if want not in stderr:
        common.die(f"{tool}: expected '{want}', got:\n{stderr[-2000:]}")


def ours_reported(tool: str, stderr: str, expect: Expect) -> None:
    """Our sync's summary line must say what the run did."""
    unchanged = expect.n - expect.created - expect.changed
    want = f"{expect.created} created, {expect.changed} updated, 0 pruned, {unchanged} unchanged"
    if want not in stderr:
        common.die(f"{tool}: expected '{want}' in its summary, got:\n{stderr[-2000:]}")
