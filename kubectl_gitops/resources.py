"""Identity and scope of objects: which kinds are namespaced, and which
(group, kind, namespace, name) each manifest stands for.

Scope comes from API discovery when a cluster is at hand, else from built-in
knowledge of the standard kinds; either way, CRDs in the same revision are
known before they exist in the cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from kubectl_gitops.errors import ManifestError
from kubectl_gitops.manifests import Manifest


class ObjectId(NamedTuple):
    """An object's identity. The version is not part of it (as in kapp)."""

    group: str
    kind: str
    namespace: str  # "" for cluster-scoped objects
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace \
            else f"{self.kind} {self.name}"

    @property
    def group_kind(self) -> str:
        """``Kind.group`` as ApplySet annotations spell it (``Kind`` for core)."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


@dataclass(frozen=True)
class ResourceType:
    group: str
    kind: str
    namespaced: bool
    plural: str = ""
    version: str = ""  # the preferred version, when known from discovery
    # The verbs discovery lists ("list", "delete"...); empty when not from discovery.
    verbs: tuple[str, ...] = field(default=(), compare=False)


def object_id(m: Manifest) -> ObjectId:
    return ObjectId(m.group, m.kind, m.namespace or "", m.name)


# Built-in kinds that are cluster-scoped; every other built-in kind below is
# namespaced. Kept to kinds a manifest repository can hold.
_CLUSTER_SCOPED: dict[str, tuple[str, ...]] = {
    "": ("Namespace", "Node", "PersistentVolume", "ComponentStatus"),
    "rbac.authorization.k8s.io": ("ClusterRole", "ClusterRoleBinding"),
    "apiextensions.k8s.io": ("CustomResourceDefinition",),
    "apiregistration.k8s.io": ("APIService",),
    "storage.k8s.io": ("StorageClass", "CSIDriver", "CSINode", "VolumeAttachment",
                       "VolumeAttributesClass"),
    "scheduling.k8s.io": ("PriorityClass",),
    "admissionregistration.k8s.io": ("MutatingWebhookConfiguration",
                                     "ValidatingWebhookConfiguration",
                                     "ValidatingAdmissionPolicy",
                                     "ValidatingAdmissionPolicyBinding",
                                     "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"),
    "networking.k8s.io": ("IngressClass", "IPAddress", "ServiceCIDR"),
    "node.k8s.io": ("RuntimeClass",),
    "certificates.k8s.io": ("CertificateSigningRequest", "ClusterTrustBundle"),
    "flowcontrol.apiserver.k8s.io": ("FlowSchema", "PriorityLevelConfiguration"),
    "resource.k8s.io": ("DeviceClass", "ResourceSlice", "DeviceTaintRule"),
    "storagemigration.k8s.io": ("StorageVersionMigration",),
    "internal.apiserver.k8s.io": ("StorageVersion",),
}
_NAMESPACED: dict[str, tuple[str, ...]] = {
    "": ("ConfigMap", "Secret", "Service", "ServiceAccount", "Pod", "PodTemplate",
         "ReplicationController", "PersistentVolumeClaim", "Endpoints", "LimitRange",
         "ResourceQuota", "Event", "Binding"),
    "apps": ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ControllerRevision"),
    "batch": ("Job", "CronJob"),
    "autoscaling": ("HorizontalPodAutoscaler",),
    "policy": ("PodDisruptionBudget",),
    "networking.k8s.io": ("Ingress", "NetworkPolicy"),
    "rbac.authorization.k8s.io": ("Role", "RoleBinding"),
    "coordination.k8s.io": ("Lease", "LeaseCandidate"),
    "discovery.k8s.io": ("EndpointSlice",),
    "events.k8s.io": ("Event",),
    "storage.k8s.io": ("CSIStorageCapacity",),
    "resource.k8s.io": ("ResourceClaim", "ResourceClaimTemplate"),
}


def builtin_types() -> dict[tuple[str, str], ResourceType]:
    types: dict[tuple[str, str], ResourceType] = {}
    for scoped, table in ((False, _CLUSTER_SCOPED), (True, _NAMESPACED)):
        for group, kinds in table.items():
            for kind in kinds:
                types[(group, kind)] = ResourceType(group, kind, scoped)
    return types


def crd_types(manifests: Iterable[Manifest]) -> dict[tuple[str, str], ResourceType]:
    """Kinds defined by CRDs among the manifests."""
    types: dict[tuple[str, str], ResourceType] = {}
    for m in manifests:
        if m.kind != "CustomResourceDefinition" or m.group != "apiextensions.k8s.io":
            continue
        spec = m.obj.get("spec") or {}
        names = spec.get("names") or {}
        group, kind = spec.get("group"), names.get("kind")
        if not isinstance(group, str) or not isinstance(kind, str):
            continue  # validation reports the malformed CRD itself
        served = [v.get("name") for v in spec.get("versions") or []
                  if isinstance(v, dict) and v.get("served", True)]
        types[(group, kind)] = ResourceType(group, kind, spec.get("scope") != "Cluster",
                                            plural=str(names.get("plural") or ""),
                                            version=str(served[0]) if served else "")
    return types


class Mapper:
    """Answers "is this kind namespaced?" from a table of known types."""

    def __init__(self, types: Mapping[tuple[str, str], ResourceType]) -> None:
        self.types = dict(types)

    def lookup(self, group: str, kind: str) -> ResourceType | None:
        return self.types.get((group, kind))

    def with_crds(self, manifests: Iterable[Manifest]) -> Mapper:
        # The tree's CRDs win only where the cluster does not know the kind yet.
        return Mapper({**crd_types(manifests), **self.types})


def offline_mapper(manifests: Iterable[Manifest] = ()) -> Mapper:
    """Built-in kinds plus CRDs in the tree: no cluster needed (the hook)."""
    return Mapper(builtin_types()).with_crds(manifests)


def resolve(manifests: list[Manifest], mapper: Mapper, default_namespace: str,
            *, unknown_kinds_ok: bool = False) -> tuple[list[Manifest], list[ManifestError]]:
    """Fill in namespaces, check scope and identities; return every problem.

    ``unknown_kinds_ok`` lets kinds the mapper does not know pass as
    namespaced-if-given (offline validation reports them separately).
    """
    errors: list[ManifestError] = []
    seen: dict[ObjectId, Manifest] = {}
    out: list[Manifest] = []
    for m in manifests:
        rtype = mapper.lookup(m.group, m.kind)
        if rtype is None and not unknown_kinds_ok:
            errors.append(ManifestError(m.path, m.line, f"unknown kind {m.kind} in "
                                        f"{m.api_version}: no such resource type in the "
                                        "cluster and no CRD for it in this revision", obj=str(m)))
            continue
        meta = m.obj["metadata"]
        if rtype is not None and not rtype.namespaced:
            # A chart's cluster-scoped object may carry the release namespace:
            # helm drops it, and so does this.
            if m.namespace and not m.default_namespace:
                errors.append(ManifestError(m.path, m.line, f"{m.kind} is cluster-scoped but "
                                            "has metadata.namespace; remove it", obj=str(m)))
                continue
            meta.pop("namespace", None)
        elif rtype is not None and not m.namespace:
            meta["namespace"] = m.default_namespace or default_namespace
        oid = object_id(m)
        if oid in seen:
            first = seen[oid]
            errors.append(ManifestError(m.path, m.line, f"duplicate object, also defined at "
                                        f"{first.location}", obj=str(oid)))
            continue
        seen[oid] = m
        out.append(m)
    return out, errors
