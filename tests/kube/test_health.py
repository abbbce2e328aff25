"""Health of real objects on the real control plane.

Where a controller runs here (Deployment, ReplicaSet, StatefulSet, Job,
DaemonSet, disruption, PersistentVolume binder, namespace, CRD and
APIService availability), it writes the status; tests only play the
kubelet (pod status, see kubelet.py). Where none does (a load balancer, an
ingress controller, a custom resource's controller), tests write the status
through the status subresource, as that controller would. Every read is
checked twice: as a GET returns it and as a LIST item (no apiVersion/kind).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubectl_gitops.kube import health
from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.kubeconfig import Overrides
from testing.kubelet import eventually, run_pods, set_status

from test_health_unit import DATA, merge


@pytest.fixture
def kube(control_plane: Any) -> Iterator[Kube]:
    k = Kube(Overrides(kubeconfig=str(control_plane.kubeconfig)))
    yield k
    k.close()


def read_health(kube: Kube, group: str, kind: str, namespace: str, name: str,
                checks: health.Checks | None = None) -> health.Health:
    """The health of one object, the same from a GET and from a LIST."""
    rtype = kube.resource_types()[(group, kind)]
    while True:
        obj = kube.get(rtype, namespace, name)
        listed = [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")}
                  for o in kube.list(rtype, namespace) if o["metadata"]["name"] == name]
        if (obj or {}).get("metadata", {}).get("resourceVersion") == \
                (listed[0]["metadata"]["resourceVersion"] if listed else None):
            break  # one version of the object, read twice (else it changed between)
    got = health.check(group, kind, obj, checks=checks,
                       status_subresource=rtype.status_subresource)
    from_list = health.check(group, kind, listed[0] if listed else None, checks=checks,
                             status_subresource=rtype.status_subresource)
    assert (from_list.status, from_list.message) == (got.status, got.message)
    return got


def wait_health(kube: Kube, group: str, kind: str, namespace: str, name: str,
                shown: str, words: str = "") -> health.Health:
    def now() -> health.Health | None:
        h = read_health(kube, group, kind, namespace, name)
        return h if h.shown == shown and words in h.message else None

    return eventually(f"{kind} {namespace}/{name} {shown} ({words})", now)


def apply(kube: Kube, obj: dict[str, Any]) -> dict[str, Any]:
    group = obj["apiVersion"].rpartition("/")[0] if "/" in obj["apiVersion"] else ""
    return kube.apply(kube.resource_types()[(group, obj["kind"])], obj)


def workload(kind: str, name: str, namespace: str, replicas: int, **spec: Any) \
        -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "containers": [{"name": "c", "image": "registry.invalid/app:1"}]}},
                     **spec}}


# --- real controllers ------------------------------------------------------------

@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet"])
def test_a_rollout_is_progressing_until_its_pods_are_ready(
        kube: Kube, namespace: str, kind: str) -> None:
    apply(kube, workload(kind, "web", namespace, 3))
    wait_health(kube, "apps", kind, namespace, "web", "Progressing",
                "0 of 3 replicas available")
    run_pods(kube, namespace, "app=web", want=3)
    wait_health(kube, "apps", kind, namespace, "web", "Healthy", "3 replicas available")


def test_a_statefulset_is_healthy_once_each_pod_in_turn_is_ready(
        kube: Kube, namespace: str) -> None:
    apply(kube, workload("StatefulSet", "db", namespace, 2, serviceName="db"))
    wait_health(kube, "apps", "StatefulSet", namespace, "db", "Progressing",
                "1 of 2 replicas created")  # OrderedReady: db-1 waits for db-0
    run_pods(kube, namespace, "app=db", want=1)
    wait_health(kube, "apps", "StatefulSet", namespace, "db", "Progressing",
                "1 of 2 replicas ready")
    run_pods(kube, namespace, "app=db", want=2)
    wait_health(kube, "apps", "StatefulSet", namespace, "db", "Healthy", "2 replicas ready")


def job(name: str, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "registry.invalid/job:1"}]}}}}


def test_a_job_is_healthy_when_complete_and_degraded_when_failed(
        kube: Kube, namespace: str) -> None:
    apply(kube, job("ok", namespace))
    apply(kube, job("bad", namespace))
    wait_health(kube, "batch", "Job", namespace, "ok", "Progressing", "running")
    run_pods(kube, namespace, "job-name=ok", "Succeeded")
    run_pods(kube, namespace, "job-name=bad", "Failed")
    wait_health(kube, "batch", "Job", namespace, "ok", "Healthy", "complete: 1 of 1 succeeded")
    got = wait_health(kube, "batch", "Job", namespace, "bad", "Degraded", "failed: ")
    assert "backoff limit" in got.message


def test_kinds_that_are_healthy_once_their_controller_looked(
        kube: Kube, namespace: str) -> None:
    ds = workload("DaemonSet", "agent", namespace, 0)
    del ds["spec"]["replicas"]
    apply(kube, ds)
    apply(kube, {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                 "metadata": {"name": "web", "namespace": namespace},
                 "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}})
    apply(kube, {"apiVersion": "batch/v1", "kind": "CronJob",
                 "metadata": {"name": "nightly", "namespace": namespace},
                 "spec": {"schedule": "0 3 * * *",
                          "jobTemplate": {"spec": job("x", namespace)["spec"]}}})
    wait_health(kube, "apps", "DaemonSet", namespace, "agent", "Healthy", "0 pods ready")
    wait_health(kube, "policy", "PodDisruptionBudget", namespace, "web", "Healthy",
                "0 disruptions allowed")
    wait_health(kube, "batch", "CronJob", namespace, "nightly", "Healthy")
    wait_health(kube, "", "Namespace", "", namespace, "Healthy")


def test_a_claim_is_progressing_until_the_binder_binds_it(
        kube: Kube, namespace: str) -> None:
    volume = f"pv-{uuid.uuid4().hex[:8]}"
    apply(kube, {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": "data", "namespace": namespace},
                 "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                          "volumeName": volume, "resources": {"requests": {"storage": "1Gi"}}}})
    wait_health(kube, "", "PersistentVolumeClaim", namespace, "data", "Progressing",
                "phase Pending: not bound yet")
    pv_type = kube.resource_types()[("", "PersistentVolume")]
    kube.apply(pv_type, {"apiVersion": "v1", "kind": "PersistentVolume",
                         "metadata": {"name": volume},
                         "spec": {"capacity": {"storage": "1Gi"},
                                  "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                                  "persistentVolumeReclaimPolicy": "Retain",
                                  "claimRef": {"namespace": namespace, "name": "data"},
                                  "hostPath": {"path": "/tmp/" + volume}}})
    try:
        wait_health(kube, "", "PersistentVolumeClaim", namespace, "data", "Healthy", "bound")
    finally:
        kube.delete(pv_type, "", volume)


def test_an_api_service_waits_for_its_backend(kube: Kube, namespace: str) -> None:
    name = f"v1.t{uuid.uuid4().hex[:8]}.example.com"
    rtype = kube.resource_types()[("apiregistration.k8s.io", "APIService")]
    kube.apply(rtype, {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                       "metadata": {"name": name},
                       "spec": {"group": name.split(".", 1)[1], "version": "v1",
                                "groupPriorityMinimum": 100, "versionPriority": 100,
                                "insecureSkipTLSVerify": True,
                                "service": {"name": "absent", "namespace": namespace,
                                            "port": 443}}})
    try:
        wait_health(kube, "apiregistration.k8s.io", "APIService", "", name, "Progressing",
                    "Available=False: ")
    finally:
        kube.delete(rtype, "", name)
    wait_health(kube, "apiregistration.k8s.io", "APIService", "", "v1.apps", "Healthy",
                "available")


def test_a_namespace_being_emptied_is_terminating(kube: Kube, api_client: Any) -> None:
    name = f"t-terminating-{uuid.uuid4().hex[:6]}"
    ns_type = kube.resource_types()[("", "Namespace")]
    cm_type = kube.resource_types()[("", "ConfigMap")]
    kube.apply(ns_type, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    kube.apply(cm_type, {"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "held", "namespace": name,
                                      "finalizers": ["example.com/hold"]}})
    kube.delete(ns_type, "", name)
    try:
        got = wait_health(kube, "", "Namespace", "", name, "Progressing", "being deleted")
        assert got.status == "Terminating"
    finally:
        kube.request("PATCH", Kube.path(cm_type, name, "held"),
                     body={"metadata": {"finalizers": None}},
                     content_type="application/merge-patch+json")


# --- status written where no controller runs ---------------------------------------

def _server_fields_dropped(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation",
                "deletionTimestamp"):
        meta.pop(key, None)
    out.pop("status", None)
    return out


def _written_fixtures() -> list[Any]:
    """The fixture cases of kinds whose status no controller writes here."""
    out = []
    for entry in yaml.safe_load((DATA / "builtin.yaml").read_text()):
        if entry["type"] not in ("Pod", "Service", "networking.k8s.io/Ingress"):
            continue
        for case in entry["cases"]:
            if case.get("written") is False or "Timestamp" in str(case.get("patch")):
                continue  # not something a status write can make
            out.append(pytest.param(entry, case, id=f"{entry['type']}: {case['name']}"))
    return out


@pytest.mark.parametrize(("entry", "case"), _written_fixtures())
def test_a_fixture_status_written_to_the_real_object_reads_back_as_expected(
        kube: Kube, namespace: str, entry: dict[str, Any], case: dict[str, Any]) -> None:
    obj = _server_fields_dropped(merge(entry["object"], case.get("patch") or {}))
    obj["metadata"]["namespace"] = namespace
    if obj["kind"] == "Service":  # the cluster allocates these
        for key in ("clusterIP", "clusterIPs"):
            obj["spec"].pop(key, None)
        for port in obj["spec"]["ports"]:
            port.pop("nodePort", None)
    group = entry["type"].rpartition("/")[0]
    apply(kube, obj)
    set_status(kube, group, obj["kind"], namespace, obj["metadata"]["name"], case["status"])
    status, shown, words = case["expect"]
    got = read_health(kube, group, obj["kind"], namespace, obj["metadata"]["name"])
    assert (got.status, got.shown) == (status, shown) and words in got.message, got


CRD_GROUP = "health.kubectl-gitops.io"


@pytest.fixture(scope="module")
def widget_crds(control_plane: Any) -> Iterator[Kube]:
    """Two CRDs: ``Widget`` (status subresource, a controller writes its
    status) and ``Setting`` (no status subresource: configuration only)."""
    kube = Kube(Overrides(kubeconfig=str(control_plane.kubeconfig)))
    crd_type = kube.resource_types()[("apiextensions.k8s.io", "CustomResourceDefinition")]
    names = []
    for kind, status in (("Widget", True), ("Setting", False)):
        plural = kind.lower() + "s"
        version: dict[str, Any] = {
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object",
                                           "x-kubernetes-preserve-unknown-fields": True}}}
        if status:
            version["subresources"] = {"status": {}}
        kube.apply(crd_type, {
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{CRD_GROUP}"},
            "spec": {"group": CRD_GROUP, "scope": "Namespaced", "versions": [version],
                     "names": {"kind": kind, "plural": plural}}})
        names.append(f"{plural}.{CRD_GROUP}")
    for name in names:
        wait_health(kube, "apiextensions.k8s.io", "CustomResourceDefinition", "", name,
                    "Healthy", "established")
    kube.forget_discovery()
    yield kube
    for name in names:
        kube.delete(crd_type, "", name)
    kube.close()


def test_a_custom_resource_follows_its_conditions(widget_crds: Kube, namespace: str) -> None:
    kube = widget_crds
    apply(kube, {"apiVersion": f"{CRD_GROUP}/v1", "kind": "Widget",
                 "metadata": {"name": "w", "namespace": namespace}, "spec": {"size": 1}})
    got = read_health(kube, CRD_GROUP, "Widget", namespace, "w")
    assert (got.shown, got.message) == ("Progressing", "no status yet: waiting for its controller")
    for status, shown, words in [
        ({"observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": "False", "reason": "Broken",
             "message": "the widget factory is closed"}]},
         "Degraded", "Ready=False: the widget factory is closed"),
        ({"observedGeneration": 1, "conditions": [
            {"type": "Stalled", "status": "True", "reason": "Quota",
             "message": "no more widgets allowed"}]},
         "Degraded", "Stalled: no more widgets allowed"),
        ({"observedGeneration": 1, "conditions": [
            {"type": "Reconciling", "status": "True", "reason": "Building",
             "message": "assembling"}]}, "Progressing", "Reconciling: assembling"),
        ({"observedGeneration": 0, "conditions": [{"type": "Ready", "status": "True"}]},
         "Progressing", "generation 1 not observed yet"),
        ({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]},
         "Healthy", "Ready"),
    ]:
        set_status(kube, CRD_GROUP, "Widget", namespace, "w", status)
        got = read_health(kube, CRD_GROUP, "Widget", namespace, "w")
        assert got.shown == shown and words in got.message, (status, got)


def test_a_custom_resource_of_a_type_without_status_is_healthy_once_applied(
        widget_crds: Kube, namespace: str) -> None:
    kube = widget_crds
    apply(kube, {"apiVersion": f"{CRD_GROUP}/v1", "kind": "Setting",
                 "metadata": {"name": "s", "namespace": namespace}, "spec": {"level": 3}})
    assert not kube.resource_types()[(CRD_GROUP, "Setting")].status_subresource
    assert read_health(kube, CRD_GROUP, "Setting", namespace, "s").shown == "Healthy"


def test_a_custom_resource_meets_its_healthcheckexprs(
        widget_crds: Kube, namespace: str) -> None:
    kube = widget_crds
    checks = health.Checks([
        {"apiVersion": f"{CRD_GROUP}/v1", "kind": "Widget",
         "failed": "status.conditions.filter(e, e.type == 'Built').all(e, e.status == 'False')",
         "current": "status.conditions.filter(e, e.type == 'Built').all(e, e.status == 'True')"}])
    apply(kube, {"apiVersion": f"{CRD_GROUP}/v1", "kind": "Widget",
                 "metadata": {"name": "w", "namespace": namespace}, "spec": {"size": 1}})
    assert read_health(kube, CRD_GROUP, "Widget", namespace, "w", checks).status == "Unknown"
    set_status(kube, CRD_GROUP, "Widget", namespace, "w",
               {"conditions": [{"type": "Built", "status": "True"}]})
    assert read_health(kube, CRD_GROUP, "Widget", namespace, "w", checks).shown == "Healthy"
    set_status(kube, CRD_GROUP, "Widget", namespace, "w",
               {"conditions": [{"type": "Built", "status": "False"}]})
    assert read_health(kube, CRD_GROUP, "Widget", namespace, "w", checks).shown == "Degraded"
