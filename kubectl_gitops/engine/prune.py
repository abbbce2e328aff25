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

Deleting any object also lets Kubernetes' garbage collector delete its
dependents: every object whose ``metadata.ownerReferences`` names it (by
uid), and theirs in turn. That is expected for what the owner's controller
made (a Deployment's ReplicaSets and their Pods, a CronJob's Jobs), as
``kubectl delete``, Argo CD and Flux expect it; not for a dependent someone
else made (see :func:`foreign`). A candidate with such a foreign dependent
is kept and reported exactly like a Namespace that holds a non-member.

The lists are made only when there is a prune candidate, so a sync that
prunes nothing pays nothing for this.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubectl_gitops.engine import applyset
from kubectl_gitops.errors import ClusterError
from kubectl_gitops.kube.client import FIELD_MANAGER, Kube
from kubectl_gitops.kube.resources import ObjectId, ResourceType

if TYPE_CHECKING:
    from kubectl_gitops.engine.model import Item, Served

Query = tuple[ResourceType, str]  # a type, and a namespace ("" = all of them)
Listing = list[dict[str, Any]] | str  # the metadata of each object, or why it could not be listed

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

# Field managers of the tools that apply manifests for a person or a repo
# (kubectl's create/apply/replace/run/expose, the API server's name for
# what client-side apply wrote before server-side apply, this tool, Argo CD,
# Flux, Helm, kapp). An object one of them wrote was put there on purpose,
# not made by its owner's controller. kubectl's edits of an existing object
# (kubectl-label, kubectl-edit, kubectl-patch...) do not say who made it.
APPLIERS = frozenset({
    "kubectl", "kubectl-client-side-apply", "kubectl-create", "kubectl-replace",
    "kubectl-run", "kubectl-expose", "before-first-apply", FIELD_MANAGER,
    "argocd-controller", "argocd-application-controller", "argocd-server",
    "kustomize-controller", "helm-controller", "helm", "kapp",
})
# Kubernetes' own controllers. An object only they wrote is theirs even when
# its owner reference is not marked as the controller's (a StatefulSet's
# PersistentVolumeClaims under persistentVolumeClaimRetentionPolicy).
BUILT_IN = frozenset({"kube-controller-manager", "kubelet", "kube-scheduler"})


def is_namespace(oid: ObjectId) -> bool:
    return oid.kind == "Namespace" and not oid.group


def is_crd(oid: ObjectId) -> bool:
    return oid.kind == "CustomResourceDefinition" and oid.group == "apiextensions.k8s.io"


def guard(kube: Kube, items: list[Item], parent: applyset.Parent, served: Served, *,
          cascade: bool, dependents: bool = True) -> None:
    """Keep every prune candidate that would take a non-member with it
    (turning it into an ``unchanged`` item with ``kept`` saying why); with
    ``cascade``, prune it anyway and note what it takes. ``dependents``:
    also look for what the garbage collector would delete with each
    candidate (else only Namespaces and CRDs are checked).

    A candidate whose dependents can only partly be seen (types the user
    may not list, as a namespace ``admin``) is not kept for that: it is
    deleted with propagationPolicy Orphan, so the collector deletes nothing
    with it, and the dependents that were seen to go with it are deleted
    one by one (``item.orphan``). Only a Namespace or CRD, whose contents
    go whatever the policy, is kept when what it holds cannot be seen."""
    candidates = [i for i in items if i.action == "prune"]
    if not candidates:
        return  # a sync that prunes nothing makes no request here
    lister = Lister(kube)
    wanted = {i.id for i in items if i.action != "prune" and not i.kept}
    owned: dict[ObjectId, _Dependents] = (
        dependents_holders(lister, items, served, wanted) if dependents else {})
    # Owners first: one kept for its dependents keeps its Namespace too.
    for item in candidates:
        if not (is_namespace(item.id) or is_crd(item.id)):
            found = owned.get(item.id) or _Dependents()
            if found.unseen and not found.foreign and not cascade:
                item.orphan = found.going
                item.note = (f"deleted with propagationPolicy Orphan and {len(found.going)} "
                             f"dependent(s) one by one, as the cascade cannot be checked: "
                             f"{describe(found.unseen)}")
                continue
            _decide(item, found.foreign or found.unseen, parent, cascade)
    pruned = {i.id for i in items if i.action == "prune"}
    # Dependents of a pruned owner go with it, even after the owner is gone.
    owners = {(i.live.get("metadata") or {}).get("uid") for i in items
              if i.action == "prune" and i.live}
    for item in candidates:
        if item.action != "prune" or not (is_namespace(item.id) or is_crd(item.id)):
            continue
        if is_namespace(item.id):
            held = namespace_holders(lister, item.id.name, served, pruned, wanted, owners)
        else:
            held = crd_holders(lister, item.live or {}, served, pruned, wanted)
        found = owned.get(item.id) or _Dependents()
        _decide(item, found.foreign + found.unseen + held, parent, cascade)


def recheck(kube: Kube, items: list[Item], set_id: str, wanted: set[ObjectId],
            source: applyset.SourceId | None = None) -> list[Item]:
    """Read each prune candidate again, right before it is deleted, and keep
    (``kept`` saying why) every one that is no longer this sync's to delete:
    re-created under another uid, no longer a member of this set (another
    app adopted it), back in the revision, marked ``prune: "false"``, or
    written from another source. The others get the object as read now in
    ``live``: its uid and resourceVersion are the delete's preconditions,
    so a change after this read makes the server refuse the delete.
    Returns the items kept."""
    kept = []

    def read(item: Item) -> dict[str, Any] | None:
        assert item.rtype is not None
        return kube.get(item.rtype, item.id.namespace, item.id.name,
                        version=item.api_version.rpartition("/")[2])

    for item, fresh in zip(items, kube.map(read, items)):
        why = _not_ours(item, fresh, set_id, wanted, source)
        if why:
            item.action, item.kept = "unchanged", f"kept: {why}"
            item.note, item.orphan = item.kept, None
            kept.append(item)
        elif fresh is not None:
            item.live = fresh
    return kept


def _not_ours(item: Item, fresh: dict[str, Any] | None, set_id: str, wanted: set[ObjectId],
              source: applyset.SourceId | None) -> str:
    """Why ``fresh`` (the candidate as it is now) must not be deleted ("" if it may)."""
    if fresh is None:
        return ""  # gone already: nothing to delete
    meta = fresh.get("metadata") or {}
    if meta.get("uid") != _uid(item.live):
        return "re-created since the plan (another uid): not the object planned"
    if item.id in wanted:
        return "in the revision"
    part_of = (meta.get("labels") or {}).get(applyset.PART_OF_LABEL)
    if part_of != set_id:
        return (f"now a member of ApplySet {part_of}" if part_of else
                f"its {applyset.PART_OF_LABEL} label was removed") + " since the plan"
    if applyset.keeps(fresh):
        return f"{applyset.PRUNE_ANNOTATION}=false"
    return applyset.other_source(fresh, source)


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


class Lister:
    """Metadata-only LISTs, each made at most once per guard: the dependents
    check and the Namespace guard read the same types; a type listed across
    all namespaces answers for each namespace too."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._done: dict[tuple[str, str, str], Listing] = {}

    def many(self, queries: list[Query]) -> list[Listing]:
        wide = {(t.group, t.kind) for t, ns in queries if not ns}
        todo = list(dict.fromkeys(q for q in queries if self._cached(q) is None
                                  and not (q[1] and (q[0].group, q[0].kind) in wide)))
        for (rtype, ns), result in zip(todo, self.kube.map(lambda q: _list(self.kube, *q),
                                                            todo)):
            self._done[(rtype.group, rtype.kind, ns)] = result
        return [self._cached(q) or [] for q in queries]

    def _cached(self, q: Query) -> Listing | None:
        rtype, ns = q
        done = self._done.get((rtype.group, rtype.kind, ns))
        if done is not None or not ns:
            return done
        whole = self._done.get((rtype.group, rtype.kind, ""))
        if whole is None or isinstance(whole, str):
            return whole
        return [m for m in whole if m.get("namespace") == ns]


def _listable(served: Served, *, namespaced_only: bool) -> list[ResourceType]:
    return [t for t in served.values() if "list" in t.verbs and (t.group, t.kind) not in EVENTS
            and (t.namespaced or not namespaced_only)]


@dataclass
class _Dependents:
    """What the garbage collector would do with one candidate."""

    foreign: list[str] = field(default_factory=list)  # not ours, and would be deleted
    unseen: list[str] = field(default_factory=list)  # types that could not be listed
    going: list[tuple[ResourceType, ObjectId, str]] = field(default_factory=list)


def dependents_holders(lister: Lister, items: list[Item], served: Served,
                       wanted: set[ObjectId]) -> dict[ObjectId, _Dependents]:
    """For each prune candidate, the foreign objects the garbage collector
    would delete with it (directly or through dependents that go too), the
    types that could not be listed where such objects could be, and the
    dependents that go with it.

    A namespaced owner can only have dependents in its own namespace; a
    cluster-scoped one anywhere, so for it every type is listed in every
    namespace."""
    candidates = [i for i in items if i.action == "prune" and i.live]
    every = _listable(served, namespaced_only=False)
    scopes = {i.id: [(t, i.id.namespace) for t in every if t.namespaced] if i.id.namespace
              else [(t, "") for t in every] for i in candidates}
    queries = list(dict.fromkeys(q for scope in scopes.values() for q in scope))
    results = dict(zip(queries, lister.many(queries)))
    graph = _Graph(results)
    pruned = {i.id for i in items if i.action == "prune"}
    deleting = {_uid(i.live) for i in candidates}
    found: dict[ObjectId, _Dependents] = {}
    for item in candidates:
        unseen = [r for q in scopes[item.id] if isinstance(r := results[q], str)]
        foreign, going = graph.foreign_dependents(item, pruned, wanted, deleting)
        if foreign or unseen:
            found[item.id] = _Dependents(foreign, unseen, going)
    return found


class _Graph:
    """Who owns what among the listed objects, by uid."""

    def __init__(self, results: dict[Query, Listing]) -> None:
        self.objects: dict[str, tuple[ObjectId, dict[str, Any], ResourceType]] = {}
        self.children: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for (rtype, _), listed in results.items():
            for meta in listed if isinstance(listed, list) else []:
                uid = meta.get("uid", "")
                oid = ObjectId(rtype.group, rtype.kind, meta.get("namespace", ""),
                               meta.get("name", ""))
                if uid in self.objects:
                    continue  # listed twice: in its namespace and across all of them
                self.objects[uid] = (oid, meta, rtype)
                for ref in meta.get("ownerReferences") or []:
                    self.children.setdefault(ref.get("uid", ""), []).append((uid, ref))

    def foreign_dependents(self, root: Item, pruned: set[ObjectId], wanted: set[ObjectId],
                           deleting: set[str]) \
            -> tuple[list[str], list[tuple[ResourceType, ObjectId, str]]]:
        """Walk down from ``root``: a dependent made by its owner's controller
        goes with it (and its own dependents are looked at); a foreign one
        is named, with the owner it hangs from when that is not ``root``.
        Returns the foreign ones and those that go (owners before theirs)."""
        inherited = inherited_marks(root.live or {})
        held: list[str] = []
        going: list[tuple[ResourceType, ObjectId, str]] = []
        seen: set[str] = set()
        frontier: list[tuple[str, str, str]] = [(_uid(root.live), root.id.namespace, "")]
        while frontier:
            owner, owner_ns, via = frontier.pop(0)
            for uid, ref in self.children.get(owner, []):
                oid, meta, rtype = self.objects[uid]
                if uid in seen or oid in pruned or not self._at_risk(oid, meta, owner_ns,
                                                                     deleting):
                    continue  # pruned members are looked at as candidates of their own
                seen.add(uid)
                why = foreign(meta, ref, inherited, oid in wanted)
                if why:
                    held.append(f"{oid} ({via}{why})")
                else:
                    deleting.add(uid)
                    going.append((rtype, oid, uid))
                    frontier.append((uid, oid.namespace, f"owned by {oid}; "))
        return sorted(held), going

    def _at_risk(self, oid: ObjectId, meta: dict[str, Any], owner_ns: str,
                 deleting: set[str]) -> bool:
        """Whether the garbage collector deletes this dependent when its
        owners in ``deleting`` go. Not when it is already being deleted; not
        through a reference to a namespaced owner in another namespace (the
        collector does not resolve those to the owner); not while another
        owner stays (and is seen): it deletes a dependent only once all its
        owners are gone."""
        if meta.get("deletionTimestamp") or (owner_ns and oid.namespace != owner_ns):
            return False
        return not any(r.get("uid") not in deleting and self._alive(r.get("uid", ""))
                       for r in meta.get("ownerReferences") or [])

    def _alive(self, uid: str) -> bool:
        found = self.objects.get(uid)
        return found is not None and not found[1].get("deletionTimestamp")

def foreign(meta: dict[str, Any], ref: dict[str, Any], inherited: set[str],
            wanted: bool) -> str:
    """Why a dependent is not its owner's controller's to delete ("" when it is).

    Foreign: an object the revision still holds; an ApplySet's parent or
    member (another app's, or ours marked ``prune: "false"``) unless its
    owner put that label there; one carrying another tool's ownership mark
    (Argo CD, Flux, Helm, kapp) that its owner did not put there; one
    written by an applier's field manager (:data:`APPLIERS`); and one whose
    owner reference is not the controller reference, unless only
    Kubernetes' own controllers wrote it. ``inherited``: the marks its owner
    hands down (:func:`inherited_marks`)."""
    why = membership(meta, wanted, inherited)
    if why:
        return why
    labels, ann = meta.get("labels") or {}, meta.get("annotations") or {}
    for key, values in applyset.FOREIGN_OWNERS.items():
        value = labels.get(key, ann.get(key))
        mark = f"{key}={value}"
        if value is not None and (values is None or value in values) and mark not in inherited:
            return mark
    managers = {e.get("manager", "") for e in meta.get("managedFields") or []}
    appliers = sorted(managers & APPLIERS)
    if appliers:
        return f"written by {appliers[0]}"
    if not ref.get("controller") and not (managers and managers <= BUILT_IN):
        return "a plain ownerReference, not a controller's"
    return ""


def membership(meta: dict[str, Any], wanted: bool,
               inherited: set[str] | frozenset[str] = frozenset()) -> str:
    """Whose an object is by this tool's and KEP-3659's marks ("" for nobody's).
    A ``part-of`` label in ``inherited`` was copied from the owner (a
    Service's labels onto its EndpointSlices): no claim of its own."""
    if wanted:
        return "in the revision"
    labels = meta.get("labels") or {}
    if applyset.ID_LABEL in labels:
        return "an ApplySet parent"
    part_of = labels.get(applyset.PART_OF_LABEL)
    if part_of is not None:
        if applyset.keeps({"metadata": meta}):
            return f"{applyset.PRUNE_ANNOTATION}=false"
        if f"{applyset.PART_OF_LABEL}={part_of}" not in inherited:
            return f"ApplySet {part_of}"
    return ""


def inherited_marks(obj: Any) -> set[str]:
    """The ``key=value`` marks an owner hands down to what its controllers
    make, which are therefore no claim of another tool there: its own
    labels (the EndpointSlice controller copies a Service's labels onto
    its slices) and every label and annotation in the templates under its
    spec (a Deployment's pod template, a CronJob's job template)."""
    own = ((obj.get("metadata") if isinstance(obj, dict) else None) or {}).get("labels") or {}
    marks = {f"{k}={v}" for k, v in own.items()}
    stack = [(obj.get("spec") if isinstance(obj, dict) else None)]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack += node
        elif isinstance(node, dict):
            meta = node.get("metadata")
            if isinstance(meta, dict):
                for key in ("labels", "annotations"):
                    marks |= {f"{k}={v}" for k, v in (meta.get(key) or {}).items()}
            stack += list(node.values())
    return marks


def _uid(live: dict[str, Any] | None) -> str:
    return ((live or {}).get("metadata") or {}).get("uid", "")


def namespace_holders(lister: Lister, namespace: str, served: Served, pruned: set[ObjectId],
                      wanted: Iterable[ObjectId], owners: set[str] | None = None) -> list[str]:
    """What in ``namespace`` is not pruned along with it: every object of
    every namespaced type that can be listed, but this sync's prune
    candidates and the automatic contents; objects the revision still
    wants there; and each type that could not be listed (unknown contents
    keep it too)."""
    types = _listable(served, namespaced_only=True)
    listed: list[tuple[ResourceType, dict[str, Any]]] = []  # (type, metadata)
    unknown: list[str] = []
    for rtype, result in zip(types, lister.many([(t, namespace) for t in types])):
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


def crd_holders(lister: Lister, crd: dict[str, Any], served: Served, pruned: set[ObjectId],
                wanted: Iterable[ObjectId]) -> list[str]:
    """Custom resources of ``crd`` anywhere in the cluster that are not pruned
    in this sync, and those the revision still holds."""
    spec = crd.get("spec") or {}
    group, kind = spec.get("group", ""), (spec.get("names") or {}).get("kind", "")
    wanted_here = {oid for oid in wanted if (oid.group, oid.kind) == (group, kind)}
    found: dict[ObjectId, dict[str, Any]] = {}
    rtype = served.get((group, kind))
    if rtype is not None:
        result = lister.many([(rtype, "")])[0]
        if isinstance(result, str):
            return [result]
        found = {ObjectId(group, kind, m.get("namespace", ""), m.get("name", "")): m
                 for m in result}
    held = wanted_here | {oid for oid in found if oid not in pruned}
    return [_label(oid, found.get(oid), oid in wanted_here) for oid in sorted(held)]


def _list(kube: Kube, rtype: ResourceType, namespace: str) -> list[dict[str, Any]] | str:
    """The metadata of every object of ``rtype`` (in ``namespace``), or why
    it could not be listed, naming the permission that would settle it. No
    answer at all (a server gone) is an error of the run, not of the type."""
    try:
        # Every type, deprecated ones too (v1 Endpoints, ComponentStatus):
        # their deprecation warnings concern no choice of the user's.
        objs = kube.list(rtype, namespace, metadata_only=True, warn=False)
    except ClusterError as e:
        if e.status in (404, 405):
            return []  # the type went away, or cannot be listed: it stores nothing here
        if e.status is None:
            raise
        what = f"{rtype.plural or rtype.kind}{'.' + rtype.group if rtype.group else ''}"
        where = f"in namespace {namespace}" if namespace else "in all namespaces"
        if e.status == 403:
            return (f"{what} {where}, which this user may not list (the RBAC verb list on "
                    f"{what} {where} would settle it)")
        return f"{what} {where}, which could not be listed ({e.message})"
    return [o.get("metadata") or {} for o in objs]


def _label(oid: ObjectId, meta: dict[str, Any] | None, wanted: bool) -> str:
    """An object, with why it is not pruned when that is worth saying."""
    why = membership(meta or {}, wanted or meta is None)
    return f"{oid} ({why})" if why else str(oid)
