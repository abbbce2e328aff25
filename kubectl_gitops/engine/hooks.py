"""Sync hooks: objects the revision marks to run at a moment of the sync
(source.order), as Argo CD's resource hooks do: PreSync before anything
else is written, PostSync once every member is applied and healthy,
SyncFail when the sync failed.

A hook is created (POST), never applied: ``generateName`` works, and it
carries no ApplySet label, so it is never a member and never pruned. The
hooks of a phase run wave by wave; each is waited for to completion (a Job
complete, a Pod succeeded, anything else healthy), and a failure stops the
phase. Delete policies: BeforeHookCreation (the default: a named hook's
earlier run is deleted before it is created again), HookSucceeded,
HookFailed.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

from kubectl_gitops import secrets
from kubectl_gitops.engine import wait
from kubectl_gitops.engine.model import Hook
from kubectl_gitops.errors import ClusterError, NotFoundError
from kubectl_gitops.source import order

if TYPE_CHECKING:
    from collections.abc import Callable

    from kubectl_gitops.kube.client import Kube
    from kubectl_gitops.kube.health import Checks
    from kubectl_gitops.kube.resources import ResourceType
    from kubectl_gitops.source.manifests import Manifest


def plan(kube: Kube, manifests: list[Manifest], new_namespaces: set[str]) -> list[Hook]:
    """The hooks, each checked by a dry-run create (so an invalid hook
    refuses the sync before anything is written). A hook in a namespace the
    sync creates is checked when it is created."""
    if not manifests:
        return []
    served = kube.resource_types()
    hooks = [Hook(m, served.get((m.group, m.kind))) for m in manifests]

    def check(h: Hook) -> None:
        if h.rtype is None:
            h.error = f"unknown kind {h.manifest.kind} in {h.manifest.api_version}"
            return
        if h.rtype.namespaced and h.manifest.namespace in new_namespaces:
            return
        try:
            kube.create(h.rtype, h.manifest.obj, dry_run=True)
        except ClusterError as e:
            if e.status == 409 and order.BEFORE_CREATION in h.policies:
                return  # its earlier run, deleted before it is created again
            h.error = secrets.redact(e.message, h.manifest.obj)

    list(kube.map(check, hooks))
    return hooks


def run(kube: Kube, hooks: list[Hook], phase: str, *, deadline: float, timeout: float,
        checks: Checks | None, report: Callable[[str], None],
        progress: wait.OnProgress) -> list[str]:
    """Run the ``phase`` hooks, wave by wave; the failures (empty: all ran)."""
    mine = [h for h in hooks if phase in h.phases]
    for w in sorted({h.wave for h in mine}):
        batch = [h for h in mine if h.wave == w]
        created: list[tuple[Hook, dict[str, Any]]] = []
        failures: list[str] = []
        for h in batch:
            try:
                created.append((h, _create(kube, h, deadline)))
            except ClusterError as e:
                failures.append(f"{phase} hook {h}: {secrets.redact(e.message, h.manifest.obj)}")
                break
            report(f"hook       {phase} {_label(h, created[-1][1])} created")
        if not failures:
            targets = [wait.Target(_label(h, live), h.rtype, live["metadata"].get("namespace", ""),
                                   live["metadata"]["name"], to_completion=True)
                       for h, live in created if h.rtype]
            what = f"{phase} hooks" + (f" (wave {w})" if len(mine) != len(batch) else "")
            failures = [f"{phase} hook {f}" for f in wait.until_healthy(
                kube, targets, what=what, deadline=deadline, timeout=timeout, checks=checks,
                progress=progress)]
        for h, live in created:
            label = _label(h, live)
            if failures and not any(label in f for f in failures):
                report(f"hook       {phase} {label} left as it is: the phase failed")
                continue
            report(f"hook       {phase} {label} {'failed' if failures else 'succeeded'}")
            if (order.FAILED if failures else order.SUCCEEDED) in h.policies:
                _delete(kube, h.rtype, live)
        if failures:
            return failures
    return []


def _label(h: Hook, live: dict[str, Any]) -> str:
    ns = live["metadata"].get("namespace")
    return f"{h.manifest.kind} {ns + '/' if ns else ''}{live['metadata']['name']}"


def _create(kube: Kube, h: Hook, deadline: float) -> dict[str, Any]:
    assert h.rtype is not None
    obj = copy.deepcopy(h.manifest.obj)
    name = obj["metadata"].get("name")
    if name and order.BEFORE_CREATION in h.policies:
        live = kube.get(h.rtype, h.manifest.namespace or "", name)
        if live is not None:
            _delete(kube, h.rtype, live)
            _gone(kube, h.rtype, h.manifest.namespace or "", name, deadline)
    return kube.create(h.rtype, obj)


def _delete(kube: Kube, rtype: ResourceType | None, live: dict[str, Any]) -> None:
    """Delete a hook (its Pods with it: a Job's default would orphan them)."""
    assert rtype is not None
    meta = live["metadata"]
    try:
        kube.delete(rtype, meta.get("namespace", ""), meta["name"], uid=meta.get("uid"),
                    propagation="Background")
    except NotFoundError:
        pass


def _gone(kube: Kube, rtype: ResourceType, namespace: str, name: str, deadline: float) -> None:
    """Wait until the earlier run is deleted, so its name is free again."""
    while kube.get(rtype, namespace, name) is not None:
        if time.monotonic() > deadline:
            raise ClusterError(f"its earlier run {rtype.kind} {namespace}/{name} is still "
                               "being deleted")
        time.sleep(0.2)
