"""A fleet of real local clusters for tests and benchmarks: extra control
planes (``testing.controlplane.ControlPlane``) beside one that already runs,
and one kubeconfig whose contexts name them all.

Each context of the merged kubeconfig is the whole of one cluster's own
kubeconfig (its cluster, its admin user), renamed after the context, so a
``--context`` (or a fleet target) picks exactly that cluster.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testing.controlplane import ControlPlane, _write_private


@dataclass
class Fleet:
    """``kubeconfig`` holds a context per cluster; ``planes`` the control
    planes this fleet started (by context), ``own`` each context's own
    single-context kubeconfig."""

    kubeconfig: Path
    contexts: list[str]
    own: dict[str, Path]
    planes: dict[str, ControlPlane] = field(default_factory=dict)

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "KUBECONFIG": str(self.kubeconfig)}


def merge(path: Path, kubeconfigs: dict[str, Path]) -> None:
    """One kubeconfig at ``path``: context ``name`` is ``kubeconfigs[name]``'s
    current context (its cluster and user renamed ``name`` too)."""
    clusters: list[dict[str, Any]] = []
    users: list[dict[str, Any]] = []
    contexts: list[dict[str, Any]] = []
    for name, source in kubeconfigs.items():
        doc = yaml.safe_load(source.read_text())
        current = doc["current-context"]
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == current)
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
        clusters.append({"name": name, "cluster": cluster})
        users.append({"name": name, "user": user})
        contexts.append({"name": name, "context": {"cluster": name, "user": name,
                                                   "namespace": "default"}})
    _write_private(path, yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": clusters, "users": users,
        "contexts": contexts, "current-context": next(iter(kubeconfigs))}))


@contextlib.contextmanager
def started(base: Path, directory: Path, names: list[str], extra: list[str]) \
        -> Iterator[Fleet]:
    """``names[0]`` is the running cluster of kubeconfig ``base``; a control
    plane is started for each name of ``extra``, and stopped after."""
    planes: dict[str, ControlPlane] = {}
    try:
        for name in extra:  # from this thread: each dies with the thread that started it
            planes[name] = ControlPlane().start()
        own = {names[0]: base, **{n: cp.kubeconfig for n, cp in planes.items()}}
        directory.mkdir(parents=True, exist_ok=True)
        merged = directory / "fleet-kubeconfig"
        merge(merged, {n: own[n] for n in names + extra})
        yield Fleet(merged, names + extra, own, planes)
    finally:
        for cp in planes.values():
            cp.stop()
