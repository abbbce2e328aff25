"""Is an applied object healthy yet? Rollouts, Jobs, CRDs and PVCs.

Other kinds are healthy as soon as they are applied.
"""

from __future__ import annotations

from typing import Any


def _condition(obj: dict[str, Any], ctype: str) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c.get("status")
    return None


def _observed(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation", 0)
    return status.get("observedGeneration", -1) >= generation


def _rollout(obj: dict[str, Any], want: int, updated: int, ready: int,
             what: str) -> tuple[bool, str]:
    """A workload rollout: observed, and enough updated and ready pods."""
    if not _observed(obj):
        return False, "rollout not observed yet"
    if updated < want or ready < want:
        return False, f"{min(updated, ready)}/{want} {what}"
    return True, ""


def check(obj: dict[str, Any]) -> tuple[bool, str]:
    """``(healthy, what it is waiting for)``; a failed Job raises ValueError."""
    kind = obj.get("kind")
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    if group == "apps" and kind in ("Deployment", "StatefulSet"):
        ready_key = "availableReplicas" if kind == "Deployment" else "readyReplicas"
        return _rollout(obj, spec.get("replicas", 1), status.get("updatedReplicas", 0),
                        status.get(ready_key, 0), "replicas updated and ready")
    if group == "apps" and kind == "DaemonSet":
        return _rollout(obj, status.get("desiredNumberScheduled", 0),
                        status.get("updatedNumberScheduled", 0),
                        status.get("numberAvailable", 0), "pods updated and available")
    if group == "batch" and kind == "Job":
        if _condition(obj, "Failed") == "True":
            raise ValueError("the Job failed")
        done = _condition(obj, "Complete") == "True"
        return done, "" if done else "not complete"
    if group == "apiextensions.k8s.io" and kind == "CustomResourceDefinition":
        ok = _condition(obj, "Established") == "True"
        return ok, "" if ok else "not established"
    if not group and kind == "PersistentVolumeClaim":
        phase = status.get("phase", "Pending")
        return phase == "Bound", "" if phase == "Bound" else f"phase {phase}"
    return True, ""
