"""Field paths, owners, drift lines and conflict summaries: no cluster."""

from __future__ import annotations

from datetime import datetime, timezone

from kubectl_gitops import fields
from kubectl_gitops.engine.plan import drift, summarize_conflict
from kubectl_gitops.source import ignore

LIVE = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "managedFields": [
        {"manager": "kubectl-gitops", "operation": "Apply", "time": "2026-01-01T10:00:00Z",
         "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
             'k:{"name":"c"}': {".": {}, "f:name": {}, "f:image": {}}}}}}}},
        {"manager": "kubectl-scale", "operation": "Update", "subresource": "scale",
         "time": "2026-01-01T11:58:00Z", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        {"manager": "kubectl-set", "operation": "Update", "time": "2026-01-01T11:00:00Z",
         "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
             'k:{"name":"d"}': {"f:image": {}}}}}}}},
    ]},
    "spec": {"replicas": 5, "template": {"spec": {"containers": [
        {"name": "c", "image": "nginx:1"}, {"name": "d", "image": "busybox:2"}]}}},
}


def test_owners_and_rendered_paths() -> None:
    path = ("spec", "template", "spec", "containers", (1, {"name": "d", "image": "busybox:2"}),
            "image")
    assert [o.manager for o in fields.owners(LIVE, path)] == ["kubectl-set"]
    assert fields.render(path, LIVE) == '.spec.template.spec.containers[name="d"].image'
    assert fields.render(("metadata", "labels", "app.kubernetes.io/name")) == \
        '.metadata.labels["app.kubernetes.io/name"]'


def test_drift_names_the_manager_and_when(monkeypatch) -> None:
    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)

    monkeypatch.setattr(fields, "datetime", Clock)
    after = {"spec": {"replicas": 2, "template": {"spec": {"containers": [
        {"name": "c", "image": "nginx:2"}, {"name": "d", "image": "busybox:1"}]}}}}
    before = {"spec": LIVE["spec"]}
    # nginx:2 is a change in git (our field): not drift.
    assert drift(LIVE, before, after) == [
        ".spec.replicas (kubectl-scale via scale, 2m ago)",
        '.spec.template.spec.containers[name="d"].image (kubectl-set, 1h ago)']


def test_conflict_message_becomes_one_line() -> None:
    message = ('Apply failed with 4 conflicts: conflicts with "kubectl-client-side-apply" '
               'using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name="c"]'
               '.image\n- .metadata.labels.app\n- .spec.paused\nconflict with "kubectl-edit" '
               'using apps/v1: .spec.minReadySeconds')
    assert summarize_conflict(message) == (
        'fields set by another manager: "kubectl-client-side-apply": .spec.replicas, '
        '.spec.template.spec.containers[name="c"].image, .metadata.labels.app (+1 more); '
        '"kubectl-edit": .spec.minReadySeconds')
    assert "\n" not in summarize_conflict(message)


def test_ignore_rules_parse_and_strip() -> None:
    rules = ignore.parse([{"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]},
                          {"kind": "Deployment", "name": "w*",
                           "managedFieldsManagers": ["kubectl-set"]}], ".gitops.yaml")
    ptrs, managers = ignore.pointers_for(rules, "apps", "Deployment", "ns", "web")
    assert ptrs == (("spec", "replicas"),) and managers == ("kubectl-set",)
    desired = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 2, "template": {"spec": {"containers": [
                   {"name": "c", "image": "nginx:2"}, {"name": "d", "image": "busybox:1"}]}}}}
    ignore.strip(desired, ptrs, managers, LIVE)
    assert desired["spec"] == {"template": {"spec": {"containers": [
        {"name": "c", "image": "nginx:2"}, {"name": "d"}]}}}
    assert ignore.pointers_for(rules, "", "ConfigMap", "ns", "web") == ((), ())


def test_bad_ignore_rules_name_the_entry() -> None:
    for doc, message in (
            ([{"kind": "Deployment"}], "ignore[1]: give jsonPointers or managedFieldsManagers"),
            ([{"kind": "X", "jsonPointers": ["spec/replicas"]}],
             "ignore[1]: 'spec/replicas' is not a JSON pointer (it must start with /)"),
            ([{"knd": "X", "jsonPointers": ["/a"]}], "ignore[1]: unknown key(s) knd")):
        try:
            ignore.parse(doc, ".gitops.yaml")
        except ValueError as e:
            assert str(e) == f".gitops.yaml: {message}"
        else:
            raise AssertionError(doc)
