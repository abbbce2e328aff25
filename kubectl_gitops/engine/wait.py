"""Waiting until objects are healthy: ``sync --wait``, each wave before the
next, PostSync hooks after every member, and the hooks themselves.

Health is kube.health's (kstatus for every kind, the app's
``healthCheckExprs``). A wait ends as soon as every object is Current, or
as soon as one has Failed (fast, with its reason), or at the deadline
(naming what it still waits for). Objects are read each round: one LIST
per type and namespace where several are awaited there, else a GET each.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubectl_gitops.kube.client import Kube
    from kubectl_gitops.kube.health import Checks, Health
    from kubectl_gitops.kube.resources import ResourceType

_FIRST_POLL, _POLL = 0.25, 1.0  # the first rounds come soon: a failure shows in seconds
_LIST_FROM = 4  # objects of one type in one namespace from which a LIST beats GETs


@dataclass(frozen=True)
class Target:
    label: str  # "Deployment shop/web"
    rtype: ResourceType
    namespace: str
    name: str
    # A hook: done when it ran to completion (a Pod Succeeded), not merely healthy.
    to_completion: bool = False


@dataclass
class Progress:
    """One round of a wait, for the face to show: how many are ready, and
    what the others wait for (``label: reason``)."""

    what: str  # "members", "wave 1", "PreSync hooks"
    ready: int
    total: int
    waiting: list[str] = field(default_factory=list)


OnProgress = Callable[[Progress], None]


def until_healthy(kube: Kube, targets: list[Target], *, what: str, deadline: float,
                  timeout: float, checks: Checks | None, progress: OnProgress) -> list[str]:
    """Wait for ``targets`` until ``deadline`` (``timeout`` seconds after the
    sync began, as the message says); the failures (empty: all ready)."""
    from kubectl_gitops.kube import health  # noqa: PLC0415 - only when waiting

    pending = list(targets)
    poll = _FIRST_POLL
    while True:
        waiting: list[str] = []
        still: list[Target] = []
        for t, obj in zip(pending, _read(kube, pending)):
            h = health.check(t.rtype.group, t.rtype.kind, obj, checks=checks,
                             status_subresource=t.rtype.status_subresource)
            if h.failed:
                return [f"{t.label}: {h}"]
            if not _done(t, h, obj):
                still.append(t)
                waiting.append(f"{t.label}: {h}")
        pending = still
        progress(Progress(what, len(targets) - len(pending), len(targets), waiting))
        if not pending:
            return []
        if time.monotonic() + poll > deadline:
            return [f"timed out after {timeout:g} s waiting for {what}: " + "; ".join(waiting)]
        time.sleep(poll)
        poll = min(poll * 2, _POLL)


def _done(t: Target, h: Health, obj: dict[str, Any] | None) -> bool:
    if not h.current:
        return False
    if t.to_completion and t.rtype.kind == "Pod" and not t.rtype.group:
        return ((obj or {}).get("status") or {}).get("phase") == "Succeeded"
    return True


def _read(kube: Kube, targets: list[Target]) -> list[dict[str, Any] | None]:
    """Each target as it is now (None: not found)."""
    groups: dict[tuple[ResourceType, str], list[Target]] = defaultdict(list)
    for t in targets:
        groups[(t.rtype, t.namespace)].append(t)
    listed = [key for key, ts in groups.items() if len(ts) >= _LIST_FROM]
    by_name: dict[tuple[ResourceType, str, str], dict[str, Any]] = {}
    for (rtype, ns), objs in zip(listed, kube.map(lambda k: kube.list(k[0], k[1]), listed)):
        by_name.update({(rtype, ns, o["metadata"]["name"]): o for o in objs})
    single = [t for t in targets if (t.rtype, t.namespace) not in listed]
    for t, obj in zip(single, kube.map(lambda t: kube.get(t.rtype, t.namespace, t.name),
                                       single)):
        if obj is not None:
            by_name[(t.rtype, t.namespace, t.name)] = obj
    return [by_name.get((t.rtype, t.namespace, t.name)) for t in targets]


def lines(report: Callable[[str], None]) -> OnProgress:
    """Progress as plain lines, one when what is awaited changes (logs,
    and output that is not a terminal)."""
    last: list[str] = [""]

    def show(p: Progress) -> None:
        if p.ready == p.total:
            return
        shown = "; ".join(p.waiting[:3]) + (f"; and {len(p.waiting) - 3} more"
                                            if len(p.waiting) > 3 else "")
        line = f"waiting    {p.what}: {p.ready}/{p.total} ready; {shown}"
        if line != last[0]:
            report(line)
            last[0] = line

    return show
