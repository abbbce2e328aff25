"""The engine's result model: what a plan holds, diff shows, prune guards
and sync carries out. Every verb of the engine shares it (kapp's change
set, Flux's ChangeSet); it imports none of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from kubectl_gitops.engine import applyset
from kubectl_gitops.kube.resources import ObjectId, ResourceType
from kubectl_gitops.source import order
from kubectl_gitops.source.manifests import Manifest

Action = Literal["create", "update", "unchanged", "prune"]
# (group, kind) -> the type as the cluster serves it.
Served = dict[tuple[str, str], ResourceType]
# (group, kind, namespace) -> the objects a plan listed there: every object,
# or every one labelled as a member of the set (both hold all its members).
Listed = dict[tuple[str, str, str], list[dict[str, Any]]]


@dataclass
class Item:
    id: ObjectId
    action: Action
    rtype: ResourceType | None
    manifest: Manifest | None = None
    desired: dict[str, Any] | None = None  # what sync applies (labelled, hashed)
    live: dict[str, Any] | None = None
    predicted: dict[str, Any] | None = None
    note: str = ""
    error: str = ""
    conflict: str = ""  # fields another manager owns, one line (forced unless refused)
    adopted: str = ""  # the previous owner, when --adopt takes the object over
    kept: str = ""  # why a member the revision dropped is not pruned
    drift: list[str] = field(default_factory=list)  # ".spec.replicas (kubectl, 2m ago)"
    ignored: tuple[tuple[str, ...], ...] = ()  # JSON pointers of ignore: rules
    # Pruned with propagationPolicy Orphan, its own dependents deleted one by
    # one (type, identity, uid): where the garbage collector's cascade cannot
    # be checked (types the user cannot list), it is not let loose.
    orphan: list[tuple[ResourceType, ObjectId, str]] | None = None
    # The uid of the live object when it is being deleted (a finalizer holds
    # it): sync waits for it to go, then creates the object again.
    terminating: str = ""

    @property
    def needs_apply(self) -> bool:
        """Whether sync writes this object: the action, nothing else."""
        return self.action in ("create", "update")

    @property
    def api_version(self) -> str:
        obj = self.desired or self.live or {}
        return str(obj.get("apiVersion", ""))

    @property
    def wave(self) -> int:
        """The wave the object is applied in (pruned in, for a member the
        revision dropped: its live annotations)."""
        return order.wave(self.desired or self.live or {})

    @property
    def phase(self) -> int:
        """Apply order within a wave: Namespaces and CRDs, other
        cluster-scoped, namespaced."""
        if self.id.kind == "Namespace" and not self.id.group:
            return 0
        if self.id.kind == "CustomResourceDefinition":
            return 0
        return 1 if not self.id.namespace else 2


@dataclass
class Hook:
    """An object run at a moment of the sync (source.order): created, never
    applied, never a member of the ApplySet."""

    manifest: Manifest
    rtype: ResourceType | None
    error: str = ""  # what its dry-run create said: refuses the sync

    @property
    def phases(self) -> tuple[str, ...]:
        return order.hook_phases(self.manifest.obj)

    @property
    def policies(self) -> tuple[str, ...]:
        return order.delete_policies(self.manifest.obj)

    @property
    def wave(self) -> int:
        return order.wave(self.manifest.obj)

    def __str__(self) -> str:
        return str(self.manifest)


@dataclass
class Plan:
    items: list[Item]
    parent: applyset.Parent
    parent_live: dict[str, Any] | None
    pruning: bool
    hooks: list[Hook] = field(default_factory=list)

    def of(self, *actions: Action) -> list[Item]:
        return [i for i in self.items if i.action in actions]

    @property
    def errors(self) -> list[Item]:
        return [i for i in self.items if i.error]

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "update": 0, "prune": 0, "unchanged": 0}
        for i in self.items:
            out[i.action] += 1
        return out

    def problems(self, *, force_conflicts: bool) -> list[str]:
        """What refuses the whole sync before anything is written, one line
        per object; diff reports the same lines (and exits 2) first."""
        out = [f"{i.id}: {i.error}" for i in self.errors]
        out += [f"{h} (a hook): {h.error}" for h in self.hooks if h.error]
        if not force_conflicts:
            out += [f"{i.id}: {i.conflict}; refused by --no-force-conflicts (forceConflicts: "
                    "false in .gitops.yaml)" for i in self.items
                    if i.conflict and not i.error and not i.adopted]
        return out


def namespaces_of(ids: Iterable[ObjectId]) -> set[str]:
    return {i.namespace for i in ids if i.namespace}
