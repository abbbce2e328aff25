"""What makes a member drift, and who made it: the fields that differ and the
field managers (from managedFields) that own them now."""

from __future__ import annotations

import re
from typing import Any

from kubectl_gitops.engine import plan
from kubectl_gitops.engine.model import Item
from kubectl_gitops.kube.client import FIELD_MANAGER

_CONFLICT = re.compile(r'conflict with "([^"]+)"(?: with subresource "[^"]+")?'
                       r'(?: using [^:]+)?: ((?:\.[^\s;,]+(?:, )?)+)')


def matches(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """The live member still holds what was applied (the cheap check the plan
    makes: the applied hash and every desired field in place)."""
    if live is None:
        return False
    ann = (live.get("metadata") or {}).get("annotations") or {}
    want = (desired["metadata"].get("annotations") or {}).get(plan.HASH_ANNOTATION)
    return ann.get(plan.HASH_ANNOTATION) == want and plan.is_subset(desired, live)


def paths(want: Any, have: Any, prefix: str = "") -> list[str]:
    """Field paths where ``want`` is not in ``have`` (``.spec.replicas``)."""
    if plan.is_subset(want, have):
        return []
    if isinstance(want, dict) and isinstance(have, dict):
        out: list[str] = []
        for k, v in want.items():
            out += paths(v, have.get(k), f"{prefix}.{k}")
        return out or [prefix or "."]
    return [prefix or "."]


def _owners(live: dict[str, Any], path: str) -> set[str]:
    """Managers whose managedFields cover ``path`` (dict keys only)."""
    keys = [k for k in path.split(".") if k]
    found: set[str] = set()
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        node: Any = entry.get("fieldsV1") or {}
        for k in keys:
            if not isinstance(node, dict) or f"f:{k}" not in node:
                node = None
                break
            node = node[f"f:{k}"]
        if node is not None and entry.get("manager") != FIELD_MANAGER:
            found.add(str(entry.get("manager")))
    return found


def describe(item: Item) -> str:
    """``.data.key changed by kubectl-patch``, ``deleted``: for logs, Events
    and status. The apply conflict names fields and manager exactly; without
    one, the differing fields and their owners are read from managedFields."""
    if item.live is None:
        return "deleted"
    named = getattr(item, "drift", None)  # the plan's own account, where it gives one
    if named:
        return ", ".join(named)
    m = _CONFLICT.findall(item.conflict or "")
    if m:
        return "; ".join(f"{fields} changed by {manager}" for manager, fields in m)
    desired = plan.normalize(item.predicted, ours=False) or {}
    live = plan.normalize(item.live, ours=False) or {}
    changed = paths(desired, live)[:10]
    owners = sorted(set().union(*(_owners(item.live, p) for p in changed))) if changed else []
    who = f" changed by {', '.join(owners)}" if owners else ""
    return f"{', '.join(changed) or 'fields'}{who}"
