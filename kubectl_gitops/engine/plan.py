"""One plan, two uses: diff shows it, sync carries it out.

For every desired object the plan knows the live object and the predicted
one: the server-side apply dry-run of the manifest (field manager
``kubectl-gitops``), so server defaults never show as drift; for a new
object of a built-in kind, the create dry-run, which makes the same checks
(see ``_Predictor``) at less of the server's cost. An object this
tool applied before, whose manifest is unchanged and whose live fields still
equal the manifest, is known unchanged without a dry-run (the applied hash
annotation and a field-by-field check), which is what makes a no-change run
cheap.

One decision: an item's action is what sync does with it. ``update`` means
sync writes the object, whatever the reason: git changed, someone changed a
field git declares (drift, shown with the manager that changed it), or the
object lacks this tool's label or hash (taken over from ``kubectl apply``).
Live objects are read in the manifest's own API version, so an object
written as ``autoscaling/v1`` is compared with its live form in
``autoscaling/v1``, never with the cluster's preferred version.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import json
import re
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kubectl_gitops import secrets
from kubectl_gitops.engine import applyset
from kubectl_gitops.engine.desired import crd_types, object_id
from kubectl_gitops.engine.model import Item, Listed, Plan, Served
from kubectl_gitops.errors import ClusterError, ConflictError, GitOpsError, NotFoundError
from kubectl_gitops.kube.client import FIELD_MANAGER, Kube
from kubectl_gitops.kube.resources import ObjectId, ResourceType
from kubectl_gitops.source.manifests import Manifest
from kubectl_gitops.versions import KUBERNETES_VERSION

if TYPE_CHECKING:  # the modules load where used: a converged app needs none of them
    from kubectl_gitops.source import ignore

HASH_ANNOTATION = "kubectl-gitops.io/applied-hash"
OTHER_SOURCE = "a member of this app's ApplySet"  # begins the error of one written elsewhere
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_SERVER_META = ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp",
                "selfLink")


def desired_hash(obj: dict[str, Any], salt: str = "") -> str:
    """The hash of exactly this content. A Secret's is keyed with the
    ApplySet's salt (HMAC), so its annotation cannot confirm a guessed
    value offline."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    if salt and obj.get("kind") == "Secret" and obj.get("apiVersion") == "v1":
        return hmac.new(salt.encode(), data, hashlib.sha256).hexdigest()[:32]
    return hashlib.sha256(data).hexdigest()[:32]


def to_apply(m: Manifest, set_id: str, salt: str = "",
             source: applyset.SourceId | None = None) -> dict[str, Any]:
    """The object sync applies: the manifest, labelled as a member (with the
    app's source), with the hash of exactly that content so an unchanged
    manifest is recognised."""
    return _hashed(applyset.label_member(m.obj, set_id, source), salt)


def _hashed(obj: dict[str, Any], salt: str = "") -> dict[str, Any]:
    """``obj`` (its metadata a copy) with the hash of its content, without any old hash."""
    meta = obj["metadata"]
    old = meta.get("annotations")
    if old and HASH_ANNOTATION in old:
        rest = {k: v for k, v in old.items() if k != HASH_ANNOTATION}
        if rest:
            meta["annotations"] = rest
        else:
            del meta["annotations"]
    meta["annotations"] = {**(meta.get("annotations") or {}),
                           HASH_ANNOTATION: desired_hash(obj, salt)}
    return obj


def normalize(obj: dict[str, Any] | None, *, ours: bool = True,
              ignored: tuple[tuple[str, ...], ...] = ()) -> dict[str, Any] | None:
    """Drop server-owned fields and ``ignored`` JSON pointers; with ``ours``,
    also this tool's bookkeeping."""
    if obj is None:
        return None
    if ignored:
        from kubectl_gitops import fields  # noqa: PLC0415 - only with ignore: rules

        obj = copy.deepcopy(obj)
        for p in ignored:
            fields.remove(obj, p)
    # Copy only what changes: deep copies of every object cost more than the rest.
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (out.get("metadata") or {}).items() if k not in _SERVER_META}
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(LAST_APPLIED, None)
    labels = dict(meta.get("labels") or {})
    if ours:
        annotations.pop(HASH_ANNOTATION, None)
        annotations.pop(applyset.SOURCE_ANNOTATION, None)
        labels.pop(applyset.PART_OF_LABEL, None)
    for key, value in (("annotations", annotations), ("labels", labels)):
        if value:
            meta[key] = value
        else:
            meta.pop(key, None)
    if "metadata" in out:
        out["metadata"] = meta
    return out


def is_subset(want: Any, have: Any) -> bool:
    """Every field of ``want`` is in ``have`` with the same value.

    The server drops values a manifest may spell out empty or false
    (``paused: false``, ``labels: {}``), so those match a missing field."""
    if have is None and want in (None, False, 0, "", {}, []):
        return True
    if isinstance(want, dict):
        return isinstance(have, dict) and all(is_subset(v, have.get(k))
                                              for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and \
            all(is_subset(w, h) for w, h in zip(want, have))
    return want == have


def known_unchanged(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """The live object still holds what sync applies (``desired``, hashed):
    this tool's hash of it and every desired field in place, so no dry-run
    is needed. The agent asks the same on each watch event."""
    if live is None:
        return False
    ann = (live.get("metadata") or {}).get("annotations") or {}
    want = (desired["metadata"].get("annotations") or {}).get(HASH_ANNOTATION)
    return want is not None and ann.get(HASH_ANNOTATION) == want and is_subset(desired, live)


def build(kube: Kube, manifests: list[Manifest], parent: applyset.Parent,
          parent_live: dict[str, Any] | None, *, prune: bool,
          rules: tuple[ignore.Rule, ...] = (), cascade: bool = False,
          source: applyset.SourceId | None = None, take_over: bool = False) -> Plan:
    """A conflict is recorded on its item (:meth:`Plan.problems` says whether
    it refuses the sync). ``cascade``: prune Namespaces and CRDs with what
    they hold (:mod:`kubectl_gitops.engine.prune`). ``source``: the app's,
    written on every member; a member written from another source is an
    error to apply and kept from prune, unless ``take_over``."""
    served = kube.resource_types()
    in_tree = crd_types(manifests)
    # Namespaces that come to exist before the objects in them are applied:
    # the revision's, and the app's own, which sync creates first when there
    # is no parent yet (its parent and Lease live there).
    new_namespaces = {m.name: "this revision" for m in manifests
                      if m.kind == "Namespace" and not m.group}
    if not parent.exists:
        new_namespaces.setdefault(parent.namespace, "this sync (the app's namespace)")
    items: list[Item] = []
    for m in manifests:
        key = (m.group, m.kind)
        rtype = served.get(key) or in_tree.get(key)
        item = Item(object_id(m), "create", rtype, manifest=m,
                    desired=to_apply(m, parent.id, parent.salt, source))
        if key not in served:
            item.note = f"{m.kind} is defined by a CRD this revision creates"
        items.append(item)
    predictor = _Predictor(kube, new_namespaces)

    def arrived(group: list[Item]) -> list[Callable[[], None]]:
        """A group's live objects are in: what may change is dry-run at once."""
        for item in group:
            if rules:
                _ignore(item, rules, parent.salt)
        return predictor.calls([i for i in group
                                if not i.note and not known_unchanged(i.desired, i.live)])

    pruning = prune and parent_live is not None
    queries = _prune_queries(parent, {i.id for i in items}, served) if pruning else []
    listed = _fetch_live(kube, [i for i in items if (i.id.group, i.id.kind) in served],
                         queries, f"{applyset.PART_OF_LABEL}={parent.id}", arrived)
    for item in items:
        if rules and (item.id.group, item.id.kind) not in served:
            _ignore(item, rules, parent.salt)  # not read: created along with its CRD
    for item in items:
        _classify(item)
        theirs = "" if take_over or not item.live or applyset.foreign_owner(
            item.live, parent.id) else applyset.other_source(item.live, source)
        if theirs and not item.error:
            item.error = (f"{OTHER_SOURCE} {theirs}; not taking it over "
                          "(sync --take-over hands the app to this source)")
    if pruning:
        # An object already being deleted (a Namespace terminating after the
        # last prune) is on its way out: not something to delete again.
        items += [i for i in _prune_candidates(parent, {i.id for i in items}, queries, listed,
                                               None if take_over else source)
                  if not (i.live or {}).get("metadata", {}).get("deletionTimestamp")]
        if any(i.action == "prune" for i in items):
            from kubectl_gitops.engine import prune as prune_guard  # noqa: PLC0415

            prune_guard.guard(kube, items, parent, served, cascade=cascade)
    items.sort(key=lambda i: (i.phase, i.id.namespace, i.id.group, i.id.kind, i.id.name)
               if i.action != "prune" else (9 - i.phase, i.id))
    return Plan(items, parent, parent_live, prune)


def _ignore(item: Item, rules: tuple[ignore.Rule, ...], salt: str = "") -> None:
    """Drop the fields ``ignore:`` rules give to others from what sync applies."""
    from kubectl_gitops.source import ignore  # noqa: PLC0415 - only with ignore: rules

    i = item.id
    ptrs, managers = ignore.pointers_for(rules, i.group, i.kind, i.namespace, i.name)
    if not ptrs and not managers or item.desired is None:
        return
    desired = copy.deepcopy(item.desired)
    ignore.strip(desired, ptrs, managers, item.live)
    item.desired = _hashed(desired, salt)
    item.ignored = ptrs


def _fetch_live(kube: Kube, items: list[Item], queries: list[tuple[ResourceType, str]],
                selector: str, then: Callable[[list[Item]], list[Callable[[], None]]]) -> Listed:
    """The live objects, read in one batch of requests with the prune
    candidates' ``queries`` (type, namespace): one LIST per type, version
    and namespace; where only one object is wanted, a LIST by the part-of
    ``selector`` if that type and namespace is queried for pruning anyway
    (one request for both; a GET only if the object is not labelled yet),
    else a GET. Each is read in the manifest's own API version, so live and
    predicted compare field by field (conversion is the server's).

    Each item gets its live object; ``then`` is given each group of items
    as soon as its request is answered, and the calls it returns (the
    dry-runs) start at once, while other reads are still under way.
    Returns, per (group, kind, namespace), what was listed: every object,
    or every labelled one; both hold all the set's members there."""
    groups: dict[tuple[ResourceType, str, str], list[Item]] = defaultdict(list)
    for i in items:
        assert i.rtype
        groups[(i.rtype, i.api_version.rpartition("/")[2], i.id.namespace)].append(i)
    by_label = {(rt.group, rt.kind, ns) for rt, ns in queries}

    def fetch(key: tuple[ResourceType, str, str]) -> tuple[list[dict[str, Any]], bool]:
        """The objects, and whether they hold every member (a LIST)."""
        rtype, version, ns = key
        wanted = groups[key]
        if len(wanted) > 1:
            return kube.list(rtype, ns, version=version), True
        name = wanted[0].id.name
        if (rtype.group, rtype.kind, ns) in by_label:
            objs = kube.list(rtype, ns, version=version, label_selector=selector)
            if any(o["metadata"]["name"] == name for o in objs):
                return objs, True
            obj = kube.get(rtype, ns, name, version=version)
            return objs + ([_with_kind(obj, rtype)] if obj else []), True
        obj = kube.get(rtype, ns, name, version=version)
        return ([_with_kind(obj, rtype)] if obj else []), False

    keys = list(groups)
    covered = {(rt.group, rt.kind, ns) for rt, _, ns in keys}
    rest = [q for q in queries if (q[0].group, q[0].kind, q[1]) not in covered]

    def read(task: tuple[Any, ...]) -> tuple[list[dict[str, Any]], bool]:
        if len(task) == 3:
            return fetch(task)  # type: ignore[arg-type]
        rtype, ns = task
        return kube.list(rtype, ns, label_selector=selector), True

    listed: Listed = {}

    def arrived(task: tuple[Any, ...],
                got: tuple[list[dict[str, Any]], bool]) -> list[Callable[[], None]]:
        (objs, whole), rtype, ns = got, task[0], task[-1]
        if whole:
            listed.setdefault((rtype.group, rtype.kind, ns), []).extend(objs)
        if len(task) == 2:
            return []  # prune candidates only
        found = {}
        for obj in objs:
            meta = obj["metadata"]
            found[ObjectId(rtype.group, rtype.kind, meta.get("namespace", ""), meta["name"])] = obj
        for item in groups[task]:  # type: ignore[index]
            item.live = found.get(item.id)
        return then(groups[task])  # type: ignore[index]

    kube.map_then(read, [*keys, *rest], arrived)
    return listed


def _with_kind(obj: dict[str, Any], rtype: ResourceType) -> dict[str, Any]:
    obj.setdefault("kind", rtype.kind)
    return obj


class _Predictor:
    """The dry-run that predicts each item, and what it says about the item.

    A new object of a built-in kind is predicted by a create dry-run: the
    same admission and validation at less of the server's cost (no read of
    the store, no merge). The one thing an apply refuses and a create does
    not, a repeated key in a list the schema merges by key, is checked
    against the built-in schemas just before the request (in the worker,
    so the checks of many objects overlap the first requests) and becomes
    the item's error. Custom resources keep the apply dry-run."""

    def __init__(self, kube: Kube, new_namespaces: dict[str, str], *,
                 force: bool = False) -> None:
        self.kube = kube
        self.new_namespaces = new_namespaces
        self.force = force
        self._builtin: Any = None  # schema.BuiltinSchemas, False when unavailable

    def calls(self, items: list[Item]) -> list[Callable[[], None]]:
        todo = [i for i in items if not i.error]
        checks = self._create_checks(todo)
        return [functools.partial(self._dry_run, item, checks.get(item.id)) for item in todo]

    def _create_checks(self, items: list[Item]) -> dict[ObjectId, Any]:
        """The schema check of each new object of a built-in kind (compiled
        here, in one thread: compiling is not thread-safe)."""
        new = [i for i in items if i.live is None and i.manifest and i.desired]
        if not new or self._builtin is False:
            return {}
        from kubectl_gitops.kube import schema  # noqa: PLC0415 - only new objects need it

        out: dict[ObjectId, Any] = {}
        try:
            if self._builtin is None:
                self._builtin = schema.BuiltinSchemas(KUBERNETES_VERSION)
            for item in new:
                m = item.manifest
                assert m is not None
                check = self._builtin.lookup(m.group, m.version, m.kind)
                if check is not None:
                    out[item.id] = check
        except (GitOpsError, OSError, ValueError, KeyError):
            self._builtin = False  # no schemas at hand: every object gets the apply dry-run
            return {}
        return out

    def _dry_run(self, item: Item, create_check: Any) -> None:
        assert item.rtype and item.desired
        if create_check is not None:
            from kubectl_gitops.kube import schema  # noqa: PLC0415 - loaded by _create_checks

            found: list[schema.Problem] = []
            create_check(item.desired, "", found)
            repeated = [f"{path}: {msg}" for path, msg in found
                        if msg.startswith(schema.DUPLICATE)]
            if repeated:
                item.error = "; ".join(repeated)
                return
        kube = self.kube
        try:
            item.predicted = self._predict(item, create_check is not None)
        except NotFoundError as e:
            if item.id.namespace in self.new_namespaces and "namespace" in str(e).lower():
                item.note = (f"namespace {item.id.namespace} is created by "
                             f"{self.new_namespaces[item.id.namespace]}")
            else:
                item.error = secrets.redact(e.message, item.desired)
        except ConflictError as e:
            # Predict what the forced apply sync makes, and remember the conflict.
            item.conflict = summarize_conflict(secrets.redact(e.message, item.desired))
            try:
                item.predicted = kube.apply(item.rtype, item.desired, dry_run=True, force=True)
            except ClusterError as again:
                item.error = secrets.redact(again.message, item.desired)
        except ClusterError as e:
            if e.status is None:  # no answer at all: one error for the run, not per object
                raise
            msg = secrets.redact(e.message, item.desired)
            if "immutable" in msg:
                msg += (f"; this field cannot change in place: delete {item.id} and sync "
                        "again, or give it a new name")
            item.error = msg

    def _predict(self, item: Item, by_create: bool) -> dict[str, Any]:
        assert item.rtype and item.desired
        if by_create:
            try:
                return self.kube.create(item.rtype, item.desired, dry_run=True)
            except ClusterError as e:
                if e.reason != "AlreadyExists":  # else it appeared since the LIST
                    raise
        return self.kube.apply(item.rtype, item.desired, dry_run=True, force=self.force)


def _classify(item: Item) -> None:
    meta = (item.live or {}).get("metadata") or {}
    if meta.get("deletionTimestamp"):
        # Being deleted: whatever is applied to it goes with it. Created again.
        finalizers = ", ".join(meta.get("finalizers") or []) or "none"
        item.terminating, item.live, item.predicted = meta.get("uid", ""), None, item.desired
        item.note = (f"being deleted (finalizers: {finalizers}); sync waits for it to go, "
                     "then creates it again")
    if item.predicted is None:
        # Not predicted: known unchanged, or created along with its namespace/CRD.
        item.predicted = item.live if item.live is not None and not item.note else item.desired
    if item.live is None:
        item.action = "create"
        return
    # With this tool's label and hash: an object that lacks them is written.
    before = normalize(item.live, ours=False, ignored=item.ignored)
    after = normalize(item.predicted, ours=False, ignored=item.ignored)
    item.action = "unchanged" if before == after else "update"
    if item.action == "update":
        item.drift = drift(item.live, before, after)


def drift(live: dict[str, Any], before: Any, after: Any, *, limit: int = 5) -> list[str]:
    """Fields git declares whose live value another manager set: the path,
    the manager and how long ago (``.spec.replicas (kubectl via scale)``,
    ``.metadata.labels.tier (kubectl-label, 2m ago)``)."""
    out = []
    from kubectl_gitops import fields  # noqa: PLC0415 - only for objects that changed

    for path in fields.changed_paths(before, after):
        theirs = [o for o in fields.owners(live, path) if o.manager != FIELD_MANAGER]
        if not theirs or len(theirs) < len(fields.owners(live, path)):
            continue  # ours (a change in git), or nobody's (a field git adds)
        last = max(theirs, key=lambda o: o.time)
        who = last.manager + (f" via {last.subresource}" if last.subresource else "")
        when = fields.age(last.time)  # the API server leaves it out for /scale
        out.append(f"{fields.render(path, live)} ({who}{', ' + when if when else ''})")
    if len(out) > limit:
        out = out[:limit] + [f"+{len(out) - limit} more"]
    return out


def drift_line(item: Item) -> str:
    """One line for logs, Events and status (the agent's): ``deleted``, else
    the fields another manager changed as diff and sync show them
    (``item.drift``), else the fields that differ."""
    if item.live is None:
        return "deleted"
    if item.drift:
        return ", ".join(item.drift)
    from kubectl_gitops import fields  # noqa: PLC0415

    before = normalize(item.live, ours=False, ignored=item.ignored)
    after = normalize(item.predicted, ours=False, ignored=item.ignored)
    changed = [fields.render(p, item.live) for p in fields.changed_paths(before, after)]
    return ", ".join(changed[:10]) or "fields"


_CONFLICT = re.compile(r'conflicts? with "([^"]+)"(?: with subresource "([^"]+)")?'
                       r'(?: using [^:\n]+)?:([^\n]*(?:\n- [^\n]*)*)')


def summarize_conflict(message: str, *, limit: int = 3) -> str:
    """The API server's conflict message (one line per field) as one line:
    ``"kubectl" via scale: .spec.replicas; "x": .a, .b (+2 more)``."""
    parts = []
    for manager, subresource, text in _CONFLICT.findall(message):
        paths = [p.strip().removeprefix("- ").strip() for p in text.split("\n")]
        paths = [p for p in paths if p]
        shown = ", ".join(paths[:limit]) + (f" (+{len(paths) - limit} more)"
                                            if len(paths) > limit else "")
        via = f" via {subresource}" if subresource else ""
        parts.append(f'"{manager}"{via}: {shown}')
    if not parts:
        return message.splitlines()[0] if message else "conflict"
    return "fields set by another manager: " + "; ".join(parts)


def _prune_queries(parent: applyset.Parent, desired: set[ObjectId],
                   served: Served) -> list[tuple[ResourceType, str]]:
    """Where members of the set can be: each (type, namespace) it records or
    the revision holds."""
    queries: list[tuple[ResourceType, str]] = []
    for gk in sorted(parent.group_kinds | {i.group_kind for i in desired}):
        rtype = served.get(applyset.parse_group_kind(gk))
        if rtype is None:
            continue  # the type is gone from the cluster, and its objects with it
        namespaces = sorted(parent.namespaces) if rtype.namespaced else [""]
        queries += [(rtype, ns) for ns in namespaces]
    return queries


def _prune_candidates(parent: applyset.Parent, desired: set[ObjectId],
                      queries: list[tuple[ResourceType, str]], listed: Listed,
                      source: applyset.SourceId | None = None) -> list[Item]:
    """Members of the set the revision no longer holds, from what
    :func:`_fetch_live` listed for ``queries``; those written from another
    ``source`` are kept."""
    items: list[Item] = []
    seen = set(desired)  # a type listed in two versions lists each member twice
    for rtype, ns in queries:
        for obj in listed.get((rtype.group, rtype.kind, ns), []):
            meta = obj["metadata"]
            oid = ObjectId(rtype.group, rtype.kind, meta.get("namespace", ""), meta["name"])
            labels = meta.get("labels") or {}
            if oid in seen or labels.get(applyset.PART_OF_LABEL) != parent.id:
                continue
            seen.add(oid)
            item = Item(oid, "prune", rtype, live=obj)
            theirs = applyset.other_source(obj, source)
            if applyset.keeps(obj):
                item.action, item.note = "unchanged", f"kept: {applyset.PRUNE_ANNOTATION}=false"
                item.kept = item.note
            elif theirs:
                item.action = "unchanged"
                item.kept = item.note = (f"kept: {theirs}; sync --take-over hands the app to "
                                         "this source")
            items.append(item)
    return items

