"""What the agent writes about an app: its status annotation on the ApplySet
parent, with kstatus-style conditions (:mod:`kubectl_gitops.engine.status`
reads it, for ``status`` and ``ls``), and Kubernetes Events on the parent.
It writes as field manager ``kubectl-gitops-agent``.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import uuid
from typing import Any

from kubectl_gitops.engine import status
from kubectl_gitops.errors import ClusterError
from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.resources import ResourceType

AGENT_MANAGER = "kubectl-gitops-agent"
EVENT_TYPE = ResourceType("", "Event", True, plural="events", version="v1")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(st: dict[str, Any], previous: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """kstatus ``Ready``/``Reconciling``/``Stalled``, keeping each
    ``lastTransitionTime`` while its status holds. A stalled app's reason
    says why (``LeaseFailed``, ``FetchFailed``, ``InvalidRevision``...)."""
    stalled = bool(st.get("lastError") or st.get("stalled"))
    blocked = not stalled and bool(st.get("blockedBy"))
    reconciling = not stalled and (blocked or st.get("health") == "Progressing"
                                   or st.get("sync") != "Synced")
    ready = not stalled and not reconciling and st.get("health") == "Healthy"
    reason = ("Suspended" if st.get("suspended") else st.get("stalled") or "Failed" if stalled
              else "DependencyNotReady" if blocked
              else "Progressing" if st.get("health") == "Progressing"
              else st.get("sync", "Unknown") if reconciling else "Succeeded")
    message = st.get("lastError") or (
        "blocked on " + "; ".join(st["blockedBy"]) if blocked else
        f"{st.get('sync')}, {st.get('health')} at {str(st.get('revision', ''))[:12]}")
    old = {c.get("type"): c for c in previous}
    out = []
    for ctype, on in (("Ready", ready), ("Reconciling", reconciling), ("Stalled", stalled)):
        status = "True" if on else "False"
        since = old[ctype]["lastTransitionTime"] if ctype in old and \
            old[ctype].get("status") == status else now()
        out.append({"type": ctype, "status": status, "reason": reason,
                    "message": message[:1000], "lastTransitionTime": since})
    return out


def write_status(kube: Kube, namespace: str, name: str, st: dict[str, Any]) -> None:
    status.annotate(kube, namespace, name,
                    {status.STATUS_ANNOTATION: json.dumps(st, sort_keys=True)}, AGENT_MANAGER)


def event(kube: Kube, parent_live: dict[str, Any] | None, namespace: str, name: str,
          reason: str, message: str, *, warning: bool = False) -> None:
    """A core/v1 Event on the parent (``kubectl get events`` and
    ``kubectl describe configmap`` show it). Never fails the caller."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = (parent_live or {}).get("metadata") or {}
    body = {"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "ConfigMap", "name": name,
                               "namespace": namespace, "uid": meta.get("uid")},
            "reason": reason, "message": message[:1000],
            "type": "Warning" if warning else "Normal",
            "source": {"component": AGENT_MANAGER, "host": socket.gethostname()},
            "reportingComponent": AGENT_MANAGER, "reportingInstance": socket.gethostname(),
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1}
    try:
        kube.request("POST", Kube.path(EVENT_TYPE, namespace), body=body)
    except ClusterError:
        pass  # an audit line lost is better than a reconcile failed
