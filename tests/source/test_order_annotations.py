"""A manifest's wave and hook annotations, ours read before Argo CD's."""

from __future__ import annotations

from typing import Any

import pytest

from kubectl_gitops.source import order


def obj(**annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": "x", "annotations": annotations}}


def test_waves_ours_before_argo_cds_and_zero_by_default() -> None:
    assert order.wave(obj()) == 0
    assert order.wave(obj(**{"argocd.argoproj.io/sync-wave": "-2"})) == -2
    assert order.wave(obj(**{"argocd.argoproj.io/sync-wave": "-2",
                             "kubectl-gitops.io/wave": "5"})) == 5


def test_hooks_and_their_delete_policies() -> None:
    assert order.hook_phases(obj()) == () and not order.is_hook(obj())
    job = obj(**{"argocd.argoproj.io/hook": "PreSync, PostSync"})
    assert order.hook_phases(job) == ("PreSync", "PostSync") and order.is_hook(job)
    assert order.delete_policies(job) == ("BeforeHookCreation",)  # Argo CD's default
    job["metadata"]["annotations"]["kubectl-gitops.io/hook-delete-policy"] = "HookSucceeded"
    assert order.delete_policies(job) == ("HookSucceeded",)
    assert order.is_hook(obj(**{"argocd.argoproj.io/hook": "Skip"}))


@pytest.mark.parametrize(("annotations", "problem"), [
    ({"kubectl-gitops.io/wave": "1.5"}, "kubectl-gitops.io/wave: '1.5' is not an integer"),
    ({"argocd.argoproj.io/hook": "Sync"}, "argocd.argoproj.io/hook: Sync is not a hook"),
    ({"argocd.argoproj.io/hook": ""}, "argocd.argoproj.io/hook: '' is not a hook"),
    ({"argocd.argoproj.io/hook": "PostSync",
      "argocd.argoproj.io/hook-delete-policy": "HookSucceeded,Later"},
     "hook-delete-policy: Later is not a delete policy"),
])
def test_what_cannot_be_read_is_said(annotations: dict[str, str], problem: str) -> None:
    [found] = order.problems(obj(**annotations))
    assert problem in found
    assert order.problems(obj(**{"argocd.argoproj.io/sync-wave": "3",
                                 "argocd.argoproj.io/hook": "SyncFail"})) == []
