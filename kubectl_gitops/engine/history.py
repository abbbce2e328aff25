"""Sync records kept in the ApplySet parent (the newest first, at most 10)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubectl_gitops.engine import applyset
from kubectl_gitops.kube.client import Kube
from kubectl_gitops.source import git

KEEP = 10


def records(kube: Kube, name: str, namespace: str) -> list[dict[str, Any]]:
    """The records of application ``name`` in ``namespace``, newest first."""
    live = kube.get(applyset.PARENT_TYPE, namespace, name)
    return applyset.parent_from_live(name, namespace, live).history


def git_user(root: str) -> str:
    """Who git says is acting (config or GIT_COMMITTER_* variables), as ``Name <email>``."""
    proc = git.run(["var", "GIT_COMMITTER_IDENT"], cwd=root, check=False)
    ident = proc.stdout.decode("utf-8", "replace").strip()
    return ident.rsplit(" ", 2)[0] if proc.returncode == 0 and ident else ""


def record(*, revision: str | None, ref: str, path: str, git_user: str, cluster_user: str,
           result: str, counts: dict[str, int], failures: list[str]) -> dict[str, Any]:
    return {"revision": revision or "", "ref": ref, "path": path or ".",
            "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "gitUser": git_user, "clusterUser": cluster_user, "result": result,
            "counts": counts, "failures": failures[:20], "tool": applyset.TOOLING}


def appended(history: list[dict[str, Any]], rec: dict[str, Any]) -> list[dict[str, Any]]:
    return [rec, *history][:KEEP]
