"""When a manifest is applied, from its annotations: its wave, and whether
it is a hook (run at a moment of the sync instead of applied).

Ours are read first, then Argo CD's, so a tree written for Argo CD syncs in
the same order:

- ``kubectl-gitops.io/wave`` / ``argocd.argoproj.io/sync-wave``: an integer
  (default 0); lower waves are applied, and healthy, before higher ones.
- ``kubectl-gitops.io/hook`` / ``argocd.argoproj.io/hook``: ``PreSync``,
  ``PostSync``, ``SyncFail`` (comma-separated for several), or ``Skip``
  (never applied).
- ``kubectl-gitops.io/hook-delete-policy`` /
  ``argocd.argoproj.io/hook-delete-policy``: ``BeforeHookCreation`` (the
  default), ``HookSucceeded``, ``HookFailed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

WAVE_ANNOTATIONS = ("kubectl-gitops.io/wave", "argocd.argoproj.io/sync-wave")
HOOK_ANNOTATIONS = ("kubectl-gitops.io/hook", "argocd.argoproj.io/hook")
POLICY_ANNOTATIONS = ("kubectl-gitops.io/hook-delete-policy",
                      "argocd.argoproj.io/hook-delete-policy")
PRE_SYNC, POST_SYNC, SYNC_FAIL, SKIP = "PreSync", "PostSync", "SyncFail", "Skip"
HOOK_PHASES = (PRE_SYNC, POST_SYNC, SYNC_FAIL)
BEFORE_CREATION, SUCCEEDED, FAILED = "BeforeHookCreation", "HookSucceeded", "HookFailed"
POLICIES = (BEFORE_CREATION, SUCCEEDED, FAILED)


def _annotation(obj: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, str] | None:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    for key in keys:
        if key in annotations:
            return key, str(annotations[key])
    return None


def _words(value: str) -> list[str]:
    return [w.strip() for w in value.split(",") if w.strip()]


def wave(obj: Mapping[str, Any]) -> int:
    """The object's wave; 0 when it has none or an unreadable one
    (:func:`problems` reports that before anything is written)."""
    found = _annotation(obj, WAVE_ANNOTATIONS)
    try:
        return int(found[1]) if found else 0
    except ValueError:
        return 0


def hook_phases(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """The phases the object is a hook of (``Skip`` included); () for a member."""
    found = _annotation(obj, HOOK_ANNOTATIONS)
    return tuple(_words(found[1])) if found else ()


def is_hook(obj: Mapping[str, Any]) -> bool:
    """Run at a moment of the sync (or skipped), never applied as a member."""
    return bool(hook_phases(obj))


def delete_policies(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """When the tool deletes a hook it created; BeforeHookCreation by default."""
    found = _annotation(obj, POLICY_ANNOTATIONS)
    return tuple(_words(found[1])) if found else (BEFORE_CREATION,)


def problems(obj: Mapping[str, Any]) -> list[str]:
    """What is wrong with the object's order annotations, one line each."""
    out = []
    found = _annotation(obj, WAVE_ANNOTATIONS)
    if found:
        try:
            int(found[1])
        except ValueError:
            out.append(f"{found[0]}: {found[1]!r} is not an integer")
    found = _annotation(obj, HOOK_ANNOTATIONS)
    if found:
        unknown = [p for p in _words(found[1]) if p not in (*HOOK_PHASES, SKIP)]
        if unknown or not _words(found[1]):
            out.append(f"{found[0]}: {', '.join(unknown) or repr(found[1])} is not a hook this "
                       f"tool runs ({', '.join(HOOK_PHASES)}, or {SKIP})")
    found = _annotation(obj, POLICY_ANNOTATIONS)
    if found:
        unknown = [p for p in _words(found[1]) if p not in POLICIES]
        if unknown:
            out.append(f"{found[0]}: {', '.join(unknown)} is not a delete policy "
                       f"({', '.join(POLICIES)})")
    return out
