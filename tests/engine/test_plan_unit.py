"""Unit tests of planning and rendering: inline YAML in, exact text out."""

from __future__ import annotations

import yaml

from kubectl_gitops.engine import applyset, diff
from kubectl_gitops.engine.model import Item
from kubectl_gitops.engine.plan import (HASH_ANNOTATION, _classify, drift_line, is_subset,
                                        known_unchanged, normalize, to_apply)
from kubectl_gitops.kube.resources import ObjectId
from kubectl_gitops.source.manifests import Manifest


def obj(text: str) -> dict:
    return yaml.safe_load(text)


LIVE_CM = obj("""
apiVersion: v1
kind: ConfigMap
metadata:
  name: web
  namespace: shop
  uid: 7d3c
  resourceVersion: "42"
  creationTimestamp: "2026-01-01T00:00:00Z"
  managedFields: [{manager: kubectl-gitops}]
  labels: {applyset.kubernetes.io/part-of: applyset-x-v1}
  annotations: {kubectl-gitops.io/applied-hash: abc}
data: {LOG_LEVEL: info}
""")


def test_normalize_drops_server_fields_and_bookkeeping() -> None:
    assert normalize(LIVE_CM) == {"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": "web", "namespace": "shop"},
                                  "data": {"LOG_LEVEL": "info"}}
    kept = normalize(LIVE_CM, ours=False)
    assert kept["metadata"]["labels"] == {"applyset.kubernetes.io/part-of": "applyset-x-v1"}


def test_is_subset() -> None:
    assert is_subset({"a": {"b": [1, {"c": 2}]}}, {"a": {"b": [1, {"c": 2, "d": 3}]}, "e": 1})
    assert not is_subset({"a": {"b": [1]}}, {"a": {"b": [1, 2]}})
    assert not is_subset({"a": "0.5"}, {"a": "500m"})


def test_unified_diff_exact_text() -> None:
    predicted = obj("""
apiVersion: v1
kind: ConfigMap
metadata: {name: web, namespace: shop}
data: {LOG_LEVEL: debug}
""")
    item = Item(ObjectId("", "ConfigMap", "shop", "web"), "update", None,
                desired=predicted, live=LIVE_CM, predicted=predicted)
    out = diff.render(item, "git@abc1234")
    assert out.text == (
        "--- live v1 ConfigMap shop/web\n"
        "+++ git@abc1234 v1 ConfigMap shop/web\n"
        "@@ -1,6 +1,6 @@\n"
        " apiVersion: v1\n"
        " data:\n"
        "-  LOG_LEVEL: info\n"
        "+  LOG_LEVEL: debug\n"
        " kind: ConfigMap\n"
        " metadata:\n"
        "   name: web\n")
    assert (out.added, out.removed) == (1, 1)


def test_secret_values_are_masked_with_change_markers() -> None:
    live = obj("""
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: n}
data: {same: c2FtZQ==, changed: b2xk, gone: eA==}
""")
    predicted = obj("""
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: n}
data: {same: c2FtZQ==, changed: bmV3, added: eQ==}
""")
    item = Item(ObjectId("", "Secret", "n", "s"), "update", None, live=live, predicted=predicted)
    text = diff.render(item, "git@1").text
    for value in ("c2FtZQ==", "b2xk", "bmV3", "eA==", "eQ=="):
        assert value not in text
    assert "-  changed: '*** (before)'" in text
    assert "+  changed: '*** (after)'" in text
    assert "   same: '***'" in text
    assert "+  added: '***'" in text
    shown = diff.render(item, "git@1", show_secrets=True).text
    assert "bmV3" in shown


def test_an_object_without_our_label_is_an_update_that_diff_shows() -> None:
    m = Manifest(obj("""
apiVersion: v1
kind: ConfigMap
metadata: {name: web, namespace: shop}
data: {LOG_LEVEL: info}
"""), "cm.yaml", 1)
    desired = to_apply(m, "applyset-x-v1")
    assert desired["metadata"]["labels"][applyset.PART_OF_LABEL] == "applyset-x-v1"
    assert HASH_ANNOTATION in desired["metadata"]["annotations"]
    # Applied by someone else: same content, but not labelled as ours yet.
    live = obj("""
apiVersion: v1
kind: ConfigMap
metadata: {name: web, namespace: shop, resourceVersion: "1"}
data: {LOG_LEVEL: info}
""")
    item = Item(ObjectId("", "ConfigMap", "shop", "web"), "create", None, manifest=m,
                desired=desired, live=live, predicted=desired)
    _classify(item)
    # One decision: sync writes it (label and hash), so it is an update, and
    # the diff shows exactly what sync adds.
    assert item.action == "update"
    assert item.needs_apply
    text = diff.render(item, "git@1").text
    added = [line for line in text.splitlines() if line.startswith("+ ")]
    assert added == ["+  labels:", "+    applyset.kubernetes.io/part-of: applyset-x-v1"], text


def test_applyset_id_follows_kep_3659() -> None:
    # base64url(sha256("<name>.<namespace>.<kind>.<group>")), no padding.
    import base64
    import hashlib

    raw = hashlib.sha256(b"shop.shop.ConfigMap.").digest()
    expected = "applyset-" + base64.urlsafe_b64encode(raw).decode().rstrip("=") + "-v1"
    assert applyset.applyset_id("shop", "shop") == expected
    assert "=" not in expected and "+" not in expected and "/" not in expected


def test_foreign_owner() -> None:
    ours = applyset.applyset_id("a", "b")
    assert applyset.foreign_owner({"metadata": {"labels": {applyset.PART_OF_LABEL: ours}}},
                                  ours) is None
    assert applyset.foreign_owner({"metadata": {"labels": {applyset.PART_OF_LABEL: "other"}}},
                                  ours) == "ApplySet other"
    assert applyset.foreign_owner({"metadata": {"labels": {
        "app.kubernetes.io/managed-by": "Helm"}}}, ours) == "app.kubernetes.io/managed-by=Helm"
    assert applyset.foreign_owner({"metadata": {}}, ours) is None


def test_history_keeps_the_newest_ten() -> None:
    from kubectl_gitops.engine import history

    records: list[dict] = []
    for i in range(12):
        records = history.appended(records, {"revision": str(i)})
    assert [r["revision"] for r in records] == [str(i) for i in range(11, 1, -1)]
    parent = applyset.Parent("app", "ns", group_kinds={"ConfigMap"}, namespaces={"ns"})
    live = parent.to_object(history=records)
    assert applyset.parent_from_live("app", "ns", live).history == records


def test_is_subset_accepts_values_the_server_drops() -> None:
    assert is_subset({"spec": {"paused": False, "x": 1}}, {"spec": {"x": 1}})
    assert is_subset({"metadata": {"labels": {}}}, {"metadata": {}})
    assert not is_subset({"spec": {"paused": True}}, {"spec": {}})


# --- drift: the plan's one account, which the agent reports too ---------------------

def _drifted(live: dict | None, predicted: dict) -> Item:
    item = Item(ObjectId("", "ConfigMap", "ns", "c"), "update", None, live=live,
                predicted=predicted)
    if live is not None:
        _classify(item)
    return item


def test_drift_names_the_manager_that_changed_a_field_git_declares() -> None:
    live = {"metadata": {"name": "c", "managedFields": [
        {"manager": "kubectl-gitops", "operation": "Apply", "fieldsV1": {"f:data": {"f:k": {}}}},
        {"manager": "kubectl-label", "operation": "Update",
         "fieldsV1": {"f:metadata": {"f:labels": {"f:team": {}}}}},
    ], "labels": {"team": "b"}}, "data": {"k": "v"}}
    predicted = {"metadata": {"name": "c", "labels": {"team": "a"}}, "data": {"k": "v"}}
    item = _drifted(live, predicted)
    assert item.action == "update"
    assert item.drift == [".metadata.labels.team (kubectl-label)"]
    assert drift_line(item) == ".metadata.labels.team (kubectl-label)"


def test_drift_line_without_another_manager_names_the_fields_and_a_deletion() -> None:
    live = {"metadata": {"name": "c", "labels": {"team": "b"}}, "data": {"k": "v"}}
    predicted = {"metadata": {"name": "c", "labels": {"team": "a"}}, "data": {"k": "w"}}
    item = _drifted(live, predicted)
    assert item.drift == []  # nobody else owns them: not drift the plan names
    assert drift_line(item) == ".data.k, .metadata.labels.team"
    assert drift_line(_drifted(None, {"data": {}})) == "deleted"


def test_known_unchanged_needs_the_applied_hash_and_the_fields() -> None:
    desired = {"metadata": {"name": "c", "annotations": {HASH_ANNOTATION: "h"}},
               "data": {"k": "v"}}
    live = {"metadata": {"name": "c", "annotations": {HASH_ANNOTATION: "h"},
                         "labels": {"extra": "ok"}}, "data": {"k": "v"}}
    assert known_unchanged(desired, live)
    assert not known_unchanged(desired, {**live, "data": {"k": "w"}})
    assert not known_unchanged(desired, None)
    assert not known_unchanged({"metadata": {"name": "c"}, "data": {"k": "v"}}, live)

