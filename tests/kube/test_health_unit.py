"""Health without a cluster: the table of status fixtures for every built-in
kind the rules know and for custom resources, and Flux's documented
``healthCheckExprs`` evaluated unchanged.

Each fixture is also checked the way a LIST returns it (no apiVersion, no
kind): the rules must not depend on them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubectl_gitops.kube import health

DATA = Path(__file__).parent / "data" / "health"


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``patch`` deep-merged into a copy of ``base``; a None value removes the key."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def fixture_cases(name: str) -> list[Any]:
    cases = []
    for entry in yaml.safe_load((DATA / name).read_text()):
        group, _, kind = entry["type"].rpartition("/")
        for case in entry["cases"]:
            obj = merge(entry["object"], case.get("patch") or {})
            obj.pop("status", None)
            if case.get("status") is not None:
                obj["status"] = case["status"]
            cases.append(pytest.param(group, kind, obj, entry.get("statusSubresource", True),
                                      case["expect"], id=f"{kind}: {case['name']}"))
    return cases


BUILTIN = fixture_cases("builtin.yaml")
CUSTOM = fixture_cases("custom.yaml")


def as_listed(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as an item of a LIST: no apiVersion, no kind."""
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}


@pytest.mark.parametrize(("group", "kind", "obj", "subresource", "expect"), BUILTIN + CUSTOM)
def test_status_fixture_gives_the_expected_health_and_reason(
        group: str, kind: str, obj: dict[str, Any], subresource: bool,
        expect: list[str]) -> None:
    status, shown, reason = expect
    for read in (obj, as_listed(obj)):
        got = health.check(group, kind, read, status_subresource=subresource)
        assert (got.status, got.shown) == (status, shown), got
        assert reason in got.message, got


def test_the_table_covers_every_built_in_kind_of_the_issue() -> None:
    kinds = {p.values[1] for p in BUILTIN}
    assert kinds >= {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob",
                     "Pod", "PersistentVolumeClaim", "Service", "Ingress",
                     "CustomResourceDefinition", "APIService", "PodDisruptionBudget",
                     "Namespace"}


def test_an_object_that_is_not_there_is_missing() -> None:
    got = health.check("apps", "Deployment", None)
    assert (got.status, got.shown) == ("NotFound", "Missing")


def test_an_app_is_as_healthy_as_its_worst_member() -> None:
    assert health.worst([]) == "Healthy"
    assert health.worst(["Healthy", "Progressing"]) == "Progressing"
    assert health.worst(["Missing", "Progressing", "Healthy"]) == "Missing"
    assert health.worst(["Progressing", "Degraded", "Missing"]) == "Degraded"


# --- healthCheckExprs ------------------------------------------------------------

FLUX = yaml.safe_load((DATA / "flux-exprs.yaml").read_text())


@pytest.fixture(scope="module")
def flux_checks() -> health.Checks:
    checks = health.Checks(FLUX["healthCheckExprs"])
    checks.compile()  # every documented expression compiles
    return checks


@pytest.mark.parametrize("case", FLUX["objects"], ids=[c["name"] for c in FLUX["objects"]])
def test_flux_documented_expression_evaluates_as_flux_does(
        flux_checks: health.Checks, case: dict[str, Any]) -> None:
    obj = case["object"]
    group = obj["apiVersion"].rpartition("/")[0]
    status, reason = case["expect"]
    for read in (obj, as_listed(obj)):
        got = health.check(group, obj["kind"], read, checks=flux_checks)
        assert got.status == status, got
        assert reason in got.message, got


def test_every_documented_entry_meets_an_object(flux_checks: health.Checks) -> None:
    met = {(o["object"]["apiVersion"].rpartition("/")[0], o["object"]["kind"])
           for o in FLUX["objects"]}
    for e in flux_checks.entries:
        group, kind = health.api_group(e["apiVersion"]), e.get("kind")
        assert any(g == group and (not kind or k == kind) for g, k in met), e


def test_a_kind_entry_wins_over_its_group_entry() -> None:
    checks = health.Checks([
        {"apiVersion": "example.com/v1", "current": "true"},
        {"apiVersion": "example.com/v1", "kind": "Gadget", "current": "false",
         "failed": "spec.broken"}])
    gadget = {"metadata": {"name": "g", "generation": 1}, "spec": {"broken": True}}
    assert health.check("example.com", "Gadget", gadget, checks=checks).status == "Failed"
    assert health.check("example.com", "Widget", gadget, checks=checks).status == "Current"
    # Another group keeps the built-in rules.
    assert health.check("other.io", "Gadget", {"metadata": {}, "status": {"x": 1}},
                        checks=checks).status == "Current"


def test_an_expression_that_does_not_compile_names_its_entry_and_key() -> None:
    checks = health.Checks([{"apiVersion": "a/v1", "kind": "X", "current": "status.ready ==",
                             "failed": "false"}])
    with pytest.raises(health.ExprError, match=r"^\.gitops\.yaml: healthCheckExprs\[0\]"
                                               r"\.current: "):
        checks.compile()
    # Met while waiting, it leaves the object Unknown, with the same reason.
    got = health.check("a", "X", {"metadata": {}, "status": {"ready": True}}, checks=checks)
    assert got.status == "Unknown" and "healthCheckExprs[0].current" in got.message


def test_an_expression_that_is_not_boolean_is_unknown() -> None:
    checks = health.Checks([{"apiVersion": "a/v1", "kind": "X", "current": "status.count"}])
    got = health.check("a", "X", {"metadata": {}, "status": {"count": 3}}, checks=checks)
    assert got.status == "Unknown" and "not a boolean" in got.message

