"""tools/build-peers.sh and bench/peers.py: the benches' peers (kapp and the
Flux ssa harness) are built once into the cache, reused after, and a peer
that cannot be built is one line and left out, never an error.

The real builds take minutes on 2 cores, so these tests make them fail for
real (the Go module proxy switched off, an empty module cache) or stand in
a cached binary; the benches run the real peers and check every run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "build-peers.sh"


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty peer cache, no module proxy, an empty module cache: any build fails."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("KUBECTL_GITOPS_CACHE", str(cache))
    monkeypatch.setenv("GOPROXY", "off")
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "gomod"))
    return cache


def build_peers(*names: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(SCRIPT), *names], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_a_peer_that_cannot_be_built_is_one_line_and_not_retried(offline: Path) -> None:
    proc = build_peers()
    assert proc.stdout == ""
    failed = [line for line in proc.stderr.splitlines() if "could not be built" in line]
    assert len(failed) == 2, proc.stderr
    for name, line in zip(("kapp", "fluxssa"), failed):
        assert line.startswith(f"build-peers: {name} could not be built (")
        assert "GOPROXY=off" in line and line.endswith(f"benches skip {name}")
    logs = sorted(offline.glob("*/build-failed.log"))
    assert [p.parent.name.split("-")[0] for p in logs] == ["fluxssa", "kapp"]
    assert not list(offline.glob("*/bin/*")) and not list(offline.glob("*/tmp.*"))

    again = build_peers()
    assert "building" not in again.stderr
    assert again.stderr.count("an earlier build failed") == 2, again.stderr


def test_built_peers_are_reused_and_found_by_the_benches(offline: Path) -> None:
    failed = build_peers().stderr
    dirs = dict(re.findall(r"build-peers: (\w+) could not be built \(.*; (\S+)/build-failed\.log\)",
                           failed))
    assert set(dirs) == {"kapp", "fluxssa"}, failed
    for name, d in dirs.items():  # a cached build stands in for the real one
        Path(d, "build-failed.log").unlink()
        binary = Path(d, "bin", name)
        binary.parent.mkdir()
        binary.write_text("#!/bin/sh\nexit 0\n")
        binary.chmod(0o755)

    proc = build_peers()
    assert proc.stderr == ""
    assert proc.stdout.splitlines() == [f"kapp {dirs['kapp']}/bin/kapp",
                                        f"fluxssa {dirs['fluxssa']}/bin/fluxssa"]
    assert build_peers("kapp").stdout == f"kapp {dirs['kapp']}/bin/kapp\n"

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import peers  # bench/peers.py
    finally:
        sys.path.remove(str(ROOT / "bench"))
    found = peers.available()
    assert found == {"kapp": Path(dirs["kapp"], "bin", "kapp"),
                     "fluxssa": Path(dirs["fluxssa"], "bin", "fluxssa")}
    assert peers.tools(found, diff=True) == [peers.KAPP_DIFF, peers.FLUX_DIFF]
    Path(dirs["kapp"], "bin", "kapp").unlink()
    Path(dirs["kapp"], "build-failed.log").write_text("error: no proxy\n")
    assert peers.tools(peers.available(), diff=False) == [peers.FLUX]
