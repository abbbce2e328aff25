"""An app's state where anyone can read it without a checkout: the ApplySet
parent (the agent's status annotation with kstatus-style conditions, a
suspend flag) and the health of its members. ``status``, ``ls``,
``suspend`` and ``resume`` read and set it here; the agent writes it.

Each writer applies only its own annotations, as a field manager of its
own (the agent ``kubectl-gitops-agent``, suspend ``kubectl-gitops-suspend``):
a CLI sync force-applies the parent as ``kubectl-gitops`` without them, and
server-side apply then leaves fields other managers own alone. The history
stays the sync's own.
"""

from __future__ import annotations

import json
from typing import Any

from kubectl_gitops.engine import applyset
from kubectl_gitops.kube import health
from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.resources import ResourceType

STATUS_ANNOTATION = "kubectl-gitops.io/status"
SUSPEND_ANNOTATION = "kubectl-gitops.io/suspend"
SUSPEND_MANAGER = "kubectl-gitops-suspend"


def status_of(parent_live: dict[str, Any] | None) -> dict[str, Any]:
    """The agent's status annotation, parsed ({} when none)."""
    ann = ((parent_live or {}).get("metadata") or {}).get("annotations") or {}
    try:
        doc = json.loads(ann.get(STATUS_ANNOTATION) or "{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def suspended(parent_live: dict[str, Any] | None) -> bool:
    ann = ((parent_live or {}).get("metadata") or {}).get("annotations") or {}
    return str(ann.get(SUSPEND_ANNOTATION, "")).lower() == "true"


def annotate(kube: Kube, namespace: str, name: str, annotations: dict[str, str],
             manager: str) -> dict[str, Any]:
    """Apply ``annotations`` to the parent as ``manager``: only that manager's
    annotations (applying without one removes it); the rest is the sync's."""
    obj = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": namespace, "annotations": annotations}}
    return kube.apply(applyset.PARENT_TYPE, obj, force=True, field_manager=manager)


def set_suspended(kube: Kube, namespace: str, name: str, on: bool) -> None:
    """``suspend``/``resume``: the flag is this manager's alone, so applying
    without it removes it."""
    annotate(kube, namespace, name, {SUSPEND_ANNOTATION: "true"} if on else {},
             SUSPEND_MANAGER)


def list_parents(kube: Kube, namespace: str | None) -> list[dict[str, Any]]:
    """Every ApplySet parent this tool manages (in ``namespace``, or all)."""
    found = kube.list(applyset.PARENT_TYPE, namespace or "", label_selector=applyset.ID_LABEL)
    return [p for p in found if str(((p.get("metadata") or {}).get("annotations") or {})
                                    .get(applyset.TOOLING_ANNOTATION, ""))
            .startswith(applyset.TOOL_NAME + "/")]


def members_health(kube: Kube, parent: applyset.Parent) -> tuple[str, int, list[str]]:
    """``(Healthy|Progressing|Degraded, member count, what is not healthy)``
    from one LIST per member type and namespace, by the part-of label, with
    the app's recorded ``healthCheckExprs``."""
    served = kube.resource_types()
    queries: list[tuple[ResourceType, str]] = []
    for gk in sorted(parent.group_kinds):
        rtype = served.get(applyset.parse_group_kind(gk))
        if rtype is not None:
            queries += [(rtype, ns) for ns in (sorted(parent.namespaces)
                                               if rtype.namespaced else [""])]
    selector = f"{applyset.PART_OF_LABEL}={parent.id}"
    lists = kube.map(lambda q: kube.list(q[0], q[1], label_selector=selector), queries)
    checks = health.Checks(parent.health_checks, where=f"{parent.label} (health-checks)")
    shown, notes = [], []
    for (rtype, _), objs in zip(queries, lists):
        for obj in objs:
            h = health.check(rtype.group, rtype.kind, obj, checks=checks,
                             status_subresource=rtype.status_subresource)
            shown.append(h.shown)
            if not h.current:
                meta = obj["metadata"]
                ns = meta.get("namespace")
                notes.append(f"{rtype.kind} {ns + '/' if ns else ''}{meta['name']}: {h}")
    return health.worst(shown), len(shown), notes


def blockers(kube: Kube, depends_on: tuple[str, ...]) -> list[str]:
    """The apps of ``depends_on`` ("namespace/name") not yet ready for the
    app that depends on them, each as ``namespace/name: why``. Ready means
    synced (the agent's status says Synced; else the last sync succeeded)
    and every member Healthy."""
    def why(dep: str) -> str | None:
        ns, _, name = dep.partition("/")
        live = kube.get(applyset.PARENT_TYPE, ns, name)
        if live is None or applyset.check_parent(
                applyset.parent_from_live(name, ns, live), live):
            return f"{dep}: not synced yet"
        st = read(kube, live, with_blockers=False)  # its own dependencies are its business
        if st["managedBy"] == "agent" and st["sync"] != "Synced":
            return f"{dep}: {st['sync']}" + (f" ({st['lastError']})" if st["lastError"] else "")
        if st["managedBy"] == "cli" and st["lastResult"] != "succeeded":
            return f"{dep}: last sync {st['lastResult'] or 'not recorded'}"
        if st["health"] != "Healthy":
            first = (st.get("unhealthy") or [""])[0]
            return f"{dep}: {st['health']}" + (f" ({first})" if first else "")
        return None

    return [w for w in kube.map(why, list(depends_on)) if w]


def read(kube: Kube, parent_live: dict[str, Any], *, with_health: bool = True,
         with_blockers: bool = True) -> dict[str, Any]:
    """One app's state for ``status``/``ls``: the agent's status when an agent
    runs it, else what the history and the members say; with what of its
    ``dependsOn`` holds it back (``blockedBy``)."""
    meta = parent_live["metadata"]
    name, ns = meta["name"], meta.get("namespace", "")
    parent = applyset.parent_from_live(name, ns, parent_live)
    last = parent.history[0] if parent.history else {}
    st = status_of(parent_live)
    out: dict[str, Any] = {
        "name": name, "namespace": ns, "managedBy": "agent" if st else "cli",
        "revision": st.get("revision") or last.get("revision", ""),
        "sync": st.get("sync", "Unknown"), "health": st.get("health", "Unknown"),
        "driftCount": st.get("driftCount", 0), "drift": st.get("drift", []),
        "lastError": st.get("lastError", "") or "; ".join(last.get("failures") or []),
        "stalled": st.get("stalled", ""),
        "lastFetchTime": st.get("lastFetchTime", ""),
        "lastSyncTime": st.get("lastSyncTime") or last.get("time", ""),
        "lastResult": last.get("result", ""), "suspended": suspended(parent_live),
        "conditions": st.get("conditions", []), "unhealthy": st.get("unhealthy", []),
    }
    if with_health and not st:
        out["health"], out["members"], out["unhealthy"] = members_health(kube, parent)
    if parent.depends_on and with_blockers:
        out["dependsOn"] = list(parent.depends_on)
        # The agent says what holds it back; for a CLI app, what would now.
        out["blockedBy"] = st["blockedBy"] if "blockedBy" in st else \
            blockers(kube, parent.depends_on)
    return out
