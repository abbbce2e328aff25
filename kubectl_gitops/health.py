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


def check(obj: dict[str, Any]) -> tuple[bool, str]:
    """``(healthy, what it is waiting for)``; a failed Job raises ValueError."""
    kind = obj.get("kind")
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    if group == "apps" and kind in ("Deployment", "StatefulSet"):
        want = spec.get("replicas", 1)
        ready_key = "availableReplicas" if kind == "Deployment" else "readyReplicas"
        updated, ready = status.get("updatedReplicas", 0), status.get(ready_key, 0)
        if not _observed(obj):
            return False, "rollout not observed yet"
        if updated < want or ready < want:
            return False, f"{min(updated, ready)}/{want} replicas updated and ready"
        return True, ""
    if group == "apps" and kind == "DaemonSet":
        want = status.get("desiredNumberScheduled", 0)
        updated = status.get("updatedNumberScheduled", 0)
        ready = status.get("numberAvailable", 0)
        if not _observed(obj):
            return False, "rollout not observed yet"
        if updated < want or ready < want:
            return False, f"{min(updated, ready)}/{want} pods updated and available"
        return True, ""
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
