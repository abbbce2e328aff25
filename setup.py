"""Build hooks; everything else is in setup.cfg.

Man pages are generated from the click commands at build time, written to
build/man and installed as data in share/man/man1, where man finds them
beside the bin directory on PATH (<venv>/bin -> <venv>/share/man,
~/.local/bin -> ~/.local/share/man). No copy is kept in the repository.

The local control plane (kubectl_gitops/controlplane.py) stays out of the
wheel: it runs etcd and kube-apiserver for the tests and the demo from
binaries that tools/ builds, so it only works in a checkout, where the
editable install and ``python -m kubectl_gitops.controlplane`` find it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# (package, module) pairs that belong to the checkout, not to an installation.
CHECKOUT_ONLY = {("kubectl_gitops", "controlplane")}

HERE = Path(__file__).resolve().parent
# setuptools wants data file paths relative to this directory.
MAN_DIR = Path("build") / "man" / "man1"


def man_pages() -> list[str]:
    sys.path.insert(0, str(HERE))  # the package from this source tree, not an installed one
    try:
        from kubectl_gitops.cli import manpage
    finally:
        sys.path.pop(0)
    return [str(p.relative_to(HERE)) for p in manpage.write_all(HERE / MAN_DIR)]


class BuildPy(build_py):
    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        return [m for m in super().find_package_modules(package, package_dir)
                if (m[0], m[1]) not in CHECKOUT_ONLY]


setup(cmdclass={"build_py": BuildPy}, data_files=[("share/man/man1", man_pages())])
