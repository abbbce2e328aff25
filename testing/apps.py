"""A test app: its manifests in ``deploy/all.yaml`` of a git repository,
synced with ``kubectl gitops sync deploy --prune`` (the prune tests' shape)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from testing.git import commit, write
from testing.kube import gitops


def commit_manifests(repo: Path, text: str) -> None:
    """``deploy/all.yaml`` becomes ``text``, committed."""
    write(repo, "deploy/all.yaml", text)
    commit(repo)


def sync(repo: Path, ns: str, env: dict[str, str], *extra: str,
         name: str = "app") -> subprocess.CompletedProcess[str]:
    return gitops("sync", "deploy", "-n", ns, "--name", name, "--prune", *extra, cwd=repo,
                  env=env)
