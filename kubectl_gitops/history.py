"""Sync records kept in the ApplySet parent (the newest first, at most 10)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubectl_gitops import applyset, git
from kubectl_gitops.kube import Kube

KEEP = 10


def records(kube: Kube, name: str, namespace: str) -> list[dict[str, Any]]:
    """The records of application ``name`` in ``namespace``, newest first."""
    live = kube.get(applyset.PARENT_TYPE, namespace, name)
    return applyset.parent_from_live(name, namespace, live).history


def git_user(root: str) -> str:
    name = git.run(["config", "user.name"], cwd=root, check=False).stdout.decode().strip()
    email = git.run(["config", "user.email"], cwd=root, check=False).stdout.decode().strip()
    return f"{name} <{email}>" if email else name


def record(*, revision: str | None, ref: str, path: str, git_user: str, cluster_user: str,
           result: str, counts: dict[str, int], failures: list[str]) -> dict[str, Any]:
    return {"revision": revision or "", "ref": ref, "path": path or ".",
            "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "gitUser": git_user, "clusterUser": cluster_user, "result": result,
            "counts": counts, "failures": failures[:20], "tool": applyset.TOOLING}


def appended(history: list[dict[str, Any]], rec: dict[str, Any]) -> list[dict[str, Any]]:
    return [rec, *history][:KEEP]
