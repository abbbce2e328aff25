"""Prune never deletes a non-member, directly or by cascade.

Deleting a Namespace deletes everything in it, and deleting a CRD deletes
every custom resource of its kind in the whole cluster. So before either is
pruned, what it would take with it is listed: a Namespace is pruned only
when it holds nothing but members this sync prunes too (and the contents
Kubernetes itself puts in every namespace), a CRD only when every custom
resource of it is such a member. Otherwise it is kept, and the plan says
which objects keep it. ``--prune-cascade`` deletes it anyway, and the plan
names what goes with it. The namespace of the app's own ApplySet parent is
never pruned: the parent, its history and the app's Lease live there.

The lists are made only when a Namespace or CRD is a prune candidate, so a
sync that prunes neither pays nothing for this.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kubectl_gitops import applyset
from kubectl_gitops.errors import ClusterError
from kubectl_gitops.kube import Kube
from kubectl_gitops.resources import ObjectId, ResourceType

if TYPE_CHECKING:
    from kubectl_gitops.plan import Item

Served = dict[tuple[str, str], ResourceType]

# What Kubernetes itself creates in every namespace, and removes with it:
# the root CA bundle (kube-controller-manager's root-ca-cert-publisher) and
# the default ServiceAccount (its serviceaccount controller). They never
# keep a namespace. Neither do Events (records about other objects, which
# expire on their own), Endpoints named after a Service in the same
# namespace (the endpoints controller's; the Service decides), nor objects
# whose owner (by uid) is in the namespace (the owner decides).
AUTOMATIC = frozenset({("", "ConfigMap", "kube-root-ca.crt"), ("", "ServiceAccount", "default")})
EVENTS = frozenset({("", "Event"), ("events.k8s.io", "Event")})
SHOWN = 10  # holders named in a message; the rest are counted


def is_namespace(oid: ObjectId) -> bool:
    return oid.kind == "Namespace" and not oid.group


def is_crd(oid: ObjectId) -> bool:
    return oid.kind == "CustomResourceDefinition" and oid.group == "apiextensions.k8s.io"


def guard(kube: Kube, items: list[Item], parent: applyset.Parent, served: Served, *,
          cascade: bool) -> None:
    """Keep every pruned Namespace or CRD that would take a non-member with it
    (turning it into an ``unchanged`` item with ``kept`` saying why); with
    ``cascade``, prune it anyway and note what it takes."""
    candidates = [i for i in items if i.action == "prune" and (is_namespace(i.id) or is_crd(i.id))]
    if not candidates:
        return
    pruned = {i.id for i in items if i.action == "prune"}
    # Dependents of a pruned owner go with it, even after the owner is gone.
    owners = {(i.live.get("metadata") or {}).get("uid") for i in items
              if i.action == "prune" and i.live}
    wanted = [i.id for i in items if i.action != "prune" and not i.kept]
    for item in candidates:
        if is_namespace(item.id):
            held = namespace_holders(kube, item.id.name, served, pruned, wanted, owners)
        else:
            held = crd_holders(kube, item.live or {}, served, pruned, wanted)
        _decide(item, held, parent, cascade)


def _decide(item: Item, held: list[str], parent: applyset.Parent, cascade: bool) -> None:
    if is_namespace(item.id) and item.id.name == parent.namespace:
        item.action = "unchanged"
        item.kept = (f"kept: it holds this app's ApplySet parent {parent.label} (with its "
                     "history and Lease); the parent's namespace is never pruned")
    elif not held:
        return
    elif cascade:
        item.note = f"--prune-cascade: also deletes {describe(held)}"
        return
    else:
        item.action = "unchanged"
        item.kept = (f"kept: deleting it would also delete {describe(held)}; "
                     "pass --prune-cascade to delete them with it")
    item.note = item.kept


def describe(held: list[str]) -> str:
    shown = ", ".join(held[:SHOWN])
    return shown + (f" and {len(held) - SHOWN} more" if len(held) > SHOWN else "")


def namespace_holders(kube: Kube, namespace: str, served: Served, pruned: set[ObjectId],
                      wanted: Iterable[ObjectId], owners: set[str] | None = None) -> list[str]:
    """What in ``namespace`` is not pruned along with it: every object of
    every namespaced type that can be listed, but this sync's prune
    candidates and the automatic contents; objects the revision still
    wants there; and each type that could not be listed (unknown contents
    keep it too)."""
    types = [t for t in served.values() if t.namespaced and "list" in t.verbs
             and (t.group, t.kind) not in EVENTS]
    listed: list[tuple[ResourceType, dict[str, Any]]] = []  # (type, metadata)
    unknown: list[str] = []
    for rtype, result in zip(types, kube.map(lambda t: _list(kube, t, namespace), types)):
        if isinstance(result, str):
            unknown.append(result)
        else:
            listed += [(rtype, meta) for meta in result]
    by_id = {ObjectId(t.group, t.kind, namespace, meta.get("name", "")): meta
             for t, meta in listed}
    uids = {meta.get("uid") for meta in by_id.values()} | (owners or set())
    services = {oid.name for oid in by_id if (oid.group, oid.kind) == ("", "Service")}
    wanted_here = {oid for oid in wanted if oid.namespace == namespace}
    held = set(wanted_here)
    for oid, meta in by_id.items():
        if oid in pruned or (oid.group, oid.kind, oid.name) in AUTOMATIC:
            continue
        if (oid.group, oid.kind) == ("", "Endpoints") and oid.name in services:
            continue
        if any(o.get("uid") in uids for o in meta.get("ownerReferences") or []):
            continue
        held.add(oid)
    return [_label(oid, by_id.get(oid), oid in wanted_here) for oid in sorted(held)] + unknown


def crd_holders(kube: Kube, crd: dict[str, Any], served: Served, pruned: set[ObjectId],
                wanted: Iterable[ObjectId]) -> list[str]:
    """Custom resources of ``crd`` anywhere in the cluster that are not pruned
    in this sync, and those the revision still holds."""
    spec = crd.get("spec") or {}
    group, kind = spec.get("group", ""), (spec.get("names") or {}).get("kind", "")
    wanted_here = {oid for oid in wanted if (oid.group, oid.kind) == (group, kind)}
    found: dict[ObjectId, dict[str, Any]] = {}
    rtype = served.get((group, kind))
    if rtype is not None:
        result = _list(kube, rtype, "")
        if isinstance(result, str):
            return [result]
        found = {ObjectId(group, kind, m.get("namespace", ""), m.get("name", "")): m
                 for m in result}
    held = wanted_here | {oid for oid in found if oid not in pruned}
    return [_label(oid, found.get(oid), oid in wanted_here) for oid in sorted(held)]


def _list(kube: Kube, rtype: ResourceType, namespace: str) -> list[dict[str, Any]] | str:
    """The metadata of every object of ``rtype`` (in ``namespace``), or why
    it could not be listed."""
    try:
        objs = kube.list(rtype, namespace, metadata_only=True)
    except ClusterError as e:
        if e.status in (404, 405):
            return []  # the type went away, or cannot be listed: it stores nothing here
        what = rtype.plural or rtype.kind
        return f"{what}.{rtype.group or 'core'} that could not be listed ({e.message})"
    return [o.get("metadata") or {} for o in objs]


def _label(oid: ObjectId, meta: dict[str, Any] | None, wanted: bool) -> str:
    """An object, with why it is not pruned when that is worth saying."""
    if wanted or meta is None:
        return f"{oid} (in the revision)"
    labels = meta.get("labels") or {}
    if applyset.ID_LABEL in labels:
        return f"{oid} (an ApplySet parent)"
    if applyset.PART_OF_LABEL in labels:
        ann = meta.get("annotations") or {}
        if str(ann.get(applyset.PRUNE_ANNOTATION, "")).lower() == "false":
            return f"{oid} ({applyset.PRUNE_ANNOTATION}=false)"
        return f"{oid} (ApplySet {labels[applyset.PART_OF_LABEL]})"
    return str(oid)
