"""Identity and scope of objects: an object's (group, kind, namespace,
name), and which kinds are namespaced.

Scope comes from API discovery when a cluster is at hand, else from built-in
knowledge of the standard kinds (:func:`builtin_types`); which object each
manifest stands for is worked out by :mod:`kubectl_gitops.engine.desired`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple


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
    # Whether a controller writes its status (discovery lists ``<plural>/status``);
    # assumed when not from discovery. Health waits for a status only then.
    status_subresource: bool = field(default=True, compare=False)


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


class Mapper:
    """Answers "is this kind namespaced?" from a table of known types."""

    def __init__(self, types: Mapping[tuple[str, str], ResourceType]) -> None:
        self.types = dict(types)

    def lookup(self, group: str, kind: str) -> ResourceType | None:
        return self.types.get((group, kind))

    def with_types(self, types: Mapping[tuple[str, str], ResourceType]) -> Mapper:
        """These types too (the tree's CRDs), where this mapper does not know
        the kind yet: the cluster's own word wins."""
        return Mapper({**types, **self.types})
