"""Build the krew release archive and its manifest from a built wheel.

    python plugins/krew/archive.py DIST_DIR

DIST_DIR holds exactly one ``kubectl_gitops-<version>-*.whl``; written next to
it: ``kubectl-gitops-v<version>.tar.gz`` (the launcher ``kubectl-gitops`` and
the wheel) and ``gitops.yaml``, plugins/gitops.yaml with that version, the
release URL and the archive's sha256, for
``kubectl krew install --manifest=DIST_DIR/gitops.yaml --archive=...``.
The archive is byte-for-byte reproducible from the same wheel (fixed
owners, modes and times), so its sha256 depends on the wheel alone.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = HERE.parent / "gitops.yaml"
LAUNCHER = HERE / "kubectl-gitops"
RELEASES = "https://github.com/kubectl-gitops/kubectl-gitops/releases/download"


def build(dist: Path) -> tuple[Path, Path]:
    wheels = sorted(dist.glob("kubectl_gitops-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"{dist}: expected one kubectl_gitops wheel, found {len(wheels)}")
    wheel = wheels[0]
    version = wheel.name.split("-")[1]
    archive = dist / f"kubectl-gitops-v{version}.tar.gz"
    archive.write_bytes(_tar_gz([("kubectl-gitops", LAUNCHER.read_bytes(), 0o755),
                                 (wheel.name, wheel.read_bytes(), 0o644)]))
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    manifest = dist / "gitops.yaml"
    manifest.write_text(fill(MANIFEST.read_text(), version, f"{RELEASES}/v{version}/{archive.name}",
                             sha))
    return archive, manifest


def fill(text: str, version: str, uri: str, sha256: str) -> str:
    """The manifest with one release's version, URL and checksum."""
    # Quoted: an all-digit checksum would otherwise be read as a number.
    for key, value in (("version", f"v{version}"), ("uri", uri), ("sha256", f'"{sha256}"')):
        text, n = re.subn(rf"(?m)^(\s*{key}: ).*$", lambda m, v=value: m[1] + v, text)
        if n != 1:
            raise SystemExit(f"{MANIFEST}: expected one {key}: line, found {n}")
    return text


def _tar_gz(members: list[tuple[str, bytes, int]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    for path in build(Path(sys.argv[1])):
        print(path)
