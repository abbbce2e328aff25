"""Build hook; everything else is in setup.cfg.

Man pages are generated from the click commands at build time, written to
build/man and installed as data in share/man/man1, where man finds them
beside the bin directory on PATH (<venv>/bin -> <venv>/share/man,
~/.local/bin -> ~/.local/share/man). No copy is kept in the repository.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup

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


setup(data_files=[("share/man/man1", man_pages())])
