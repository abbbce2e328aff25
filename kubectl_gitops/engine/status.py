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
    from one LIST per member type and namespace, by the part-of label."""
    served = kube.resource_types()
    queries: list[tuple[ResourceType, str]] = []
    for gk in sorted(parent.group_kinds):
        rtype = served.get(applyset.parse_group_kind(gk))
        if rtype is not None:
            queries += [(rtype, ns) for ns in (sorted(parent.namespaces)
                                               if rtype.namespaced else [""])]
    selector = f"{applyset.PART_OF_LABEL}={parent.id}"
    lists = kube.map(lambda q: kube.list(q[0], q[1], label_selector=selector), queries)
    worst, count, notes = "Healthy", 0, []
    for (rtype, _), objs in zip(queries, lists):
        for obj in objs:
            count += 1
            meta = obj["metadata"]
            ns = meta.get("namespace")
            label = f"{rtype.kind} {ns + '/' if ns else ''}{meta['name']}"
            try:
                ok, why = health.check(obj)
            except ValueError as e:
                worst = "Degraded"
                notes.append(f"{label}: {e}")
                continue
            if not ok:
                worst = "Progressing" if worst == "Healthy" else worst
                notes.append(f"{label}: {why}")
    return worst, count, notes


def read(kube: Kube, parent_live: dict[str, Any], *, with_health: bool = True) \
        -> dict[str, Any]:
    """One app's state for ``status``/``ls``: the agent's status when an agent
    runs it, else what the history and the members say."""
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
        "conditions": st.get("conditions", []),
    }
    if with_health and not st:
        out["health"], out["members"], out["unhealthy"] = members_health(kube, parent)
    return out
