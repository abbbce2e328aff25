"""Render a plan as a unified diff, a table or JSON.

Secret values are masked unless asked for, as ``kubectl diff`` does: ``***``
where a value is the same on both sides, ``*** (before)`` / ``*** (after)``
where it changed. No Secret value reaches any output otherwise.

Multi-line strings are shown as ``|`` block scalars, as kubectl shows them.
``-o json`` of diff, ``sync --dry-run`` and sync share one shape
(:func:`document`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kubectl_gitops.engine.model import Item, Plan
from kubectl_gitops.engine.plan import HASH_ANNOTATION, normalize

if TYPE_CHECKING:
    from kubectl_gitops.engine.app import App

try:
    _Base: type = yaml.CSafeDumper
except AttributeError:  # pragma: no cover
    _Base = yaml.SafeDumper


class _Dumper(_Base):  # type: ignore[misc,valid-type]
    """Multi-line strings as ``|`` blocks; PyYAML falls back to a quoted
    scalar where a block cannot hold the text (trailing spaces, say)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

_COLORS = {"+": "\x1b[32m", "-": "\x1b[31m", "@": "\x1b[36m"}
_RESET = "\x1b[0m"


@dataclass
class Rendered:
    item: Item
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    text: str  # the unified diff, uncoloured
    added: int
    removed: int


def to_yaml(obj: dict[str, Any] | None) -> str:
    if obj is None:
        return ""
    return yaml.dump(obj, Dumper=_Dumper, default_flow_style=False, sort_keys=True,
                     allow_unicode=True, width=1 << 16)


def mask_secrets(before: dict[str, Any] | None, after: dict[str, Any] | None) \
        -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Replace Secret values with markers that only tell same from changed."""
    for key in ("data", "stringData"):
        b = (before or {}).get(key)
        a = (after or {}).get(key)
        # Copies: normalized objects share nested values with the live ones.
        b = dict(b) if isinstance(b, dict) else {}
        a = dict(a) if isinstance(a, dict) else {}
        if before is not None and key in before:
            before[key] = b
        if after is not None and key in after:
            after[key] = a
        for k in set(b) | set(a):
            changed = b.get(k) != a.get(k) and k in b and k in a
            if k in b:
                b[k] = "*** (before)" if changed else "***"
            if k in a:
                a[k] = "*** (after)" if changed else "***"
    return before, after


def header(item: Item) -> str:
    where = f"{item.id.namespace}/{item.id.name}" if item.id.namespace else item.id.name
    return f"{item.api_version} {item.id.kind} {where}"


def _sides(item: Item) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Live and predicted as shown: this tool's label and hash are left out,
    unless they are all that differs (an object taken over from ``kubectl
    apply``, which sync writes, shows exactly that)."""
    before = normalize(item.live, ignored=item.ignored) if item.action != "create" else None
    after = normalize(item.predicted, ignored=item.ignored) if item.action != "prune" else None
    if before == after and item.action == "update":
        before = normalize(item.live, ours=False, ignored=item.ignored)
        after = normalize(item.predicted, ours=False, ignored=item.ignored)
        if before is not None and after is not None and _without_hash(before) != \
                _without_hash(after):
            before, after = _without_hash(before), _without_hash(after)
    return before, after


def _without_hash(obj: dict[str, Any]) -> dict[str, Any]:
    meta = dict(obj.get("metadata") or {})
    ann = {k: v for k, v in (meta.get("annotations") or {}).items() if k != HASH_ANNOTATION}
    if ann:
        meta["annotations"] = ann
    else:
        meta.pop("annotations", None)
    return {**obj, "metadata": meta}


def render(item: Item, revision: str, *, show_secrets: bool = False) -> Rendered:
    before, after = _sides(item)
    if item.id.kind == "Secret" and not item.id.group and not show_secrets:
        before, after = mask_secrets(before, after)
    import difflib  # noqa: PLC0415 - a no-change diff renders nothing

    lines = list(difflib.unified_diff(to_yaml(before).splitlines(keepends=True),
                                      to_yaml(after).splitlines(keepends=True),
                                      fromfile=f"live {header(item)}",
                                      tofile=f"{revision} {header(item)}", n=3))
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    added, removed = _count(text)
    return Rendered(item, before, after, text, added, removed)


def _count(text: str) -> tuple[int, int]:
    if not text:
        return 0, 0
    from unidiff import PatchSet  # noqa: PLC0415 - only when something differs

    patch = PatchSet(text)
    return sum(f.added for f in patch), sum(f.removed for f in patch)


def compare(app: App, *, prune: bool, cascade: bool, force_conflicts: bool | None,
            adopt: bool, take_over: bool = False) -> tuple[Plan, list[str]]:
    """The plan a diff shows, and what sync would refuse in it (said first,
    exit status 2): the one call ``diff`` and ``diff --fleet`` make, with the
    options sync runs with (an empty revision is shown, not refused)."""
    from kubectl_gitops.engine import plan as plan_mod  # noqa: PLC0415
    from kubectl_gitops.engine import sync  # noqa: PLC0415

    opts = sync.options_for(app.src, force_conflicts=force_conflicts, prune=prune, adopt=adopt,
                            take_over=take_over, prune_cascade=cascade, allow_empty=True)
    the_plan = plan_mod.build(app.kube, app.manifests, app.parent, app.parent_live, prune=prune,
                              rules=app.src.ignore, cascade=cascade, source=app.source,
                              take_over=take_over)
    return the_plan, sync.refusals(app, the_plan, opts)


def changed(plan: Plan) -> list[Item]:
    return [i for i in plan.items if i.action in ("create", "update", "prune") and not i.error]


def colorize(text: str) -> str:
    out = []
    for line in text.splitlines(keepends=True):
        color = "" if line.startswith(("---", "+++")) else _COLORS.get(line[:1], "")
        out.append(f"{color}{line.rstrip(chr(10))}{_RESET}\n" if color else line)
    return "".join(out)


def document(plan: Plan, rendered: list[Rendered], *, revision: str, command: str,
             dry_run: bool, result: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one ``-o json`` shape of diff, ``sync --dry-run`` and sync.

    ``counts`` are what sync did (``result``: its counts, failures and
    outcome) or, for diff and a dry run, what it would do; ``items`` hold
    every object of the plan, unchanged ones too, with the same fields."""
    by_item = {id(r.item): r for r in rendered}
    planned = plan.counts()
    counts = (result or {}).get("counts") or {
        "created": planned["create"], "updated": planned["update"],
        "pruned": planned["prune"], "unchanged": planned["unchanged"], "failed": 0}
    failures = (result or {}).get("failures") or []
    return {"command": command, "revision": revision, "dryRun": dry_run,
            "result": (result or {}).get("result") or "planned",
            "counts": counts, "failures": failures,
            "items": [_json_item(i, by_item.get(id(i))) for i in plan.items]}


def _json_item(item: Item, r: Rendered | None) -> dict[str, Any]:
    return {"action": item.action, "group": item.id.group, "apiVersion": item.api_version,
            "kind": item.id.kind, "namespace": item.id.namespace, "name": item.id.name,
            "note": item.note, "drift": list(item.drift), "conflict": item.conflict,
            "error": item.error, "kept": item.kept, "added": r.added if r else 0,
            "removed": r.removed if r else 0, "diff": r.text if r else ""}


def as_table(rendered: list[Rendered]) -> str:
    from tabulate import tabulate  # noqa: PLC0415

    rows = [(r.item.action.upper(), r.item.id.kind, r.item.id.namespace or "-", r.item.id.name,
             f"+{r.added}/-{r.removed}") for r in rendered]
    return tabulate(rows, headers=["ACTION", "KIND", "NAMESPACE", "NAME", "+/-"],
                    tablefmt="plain")


def external_diff(command: str, rendered: list[Rendered]) -> int:
    """Run ``$KUBECTL_EXTERNAL_DIFF LIVE MERGED`` on two directories, as kubectl does."""
    import shlex  # noqa: PLC0415 - only with KUBECTL_EXTERNAL_DIFF
    import subprocess  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="kubectl-gitops-diff-") as tmp:
        live, merged = Path(tmp, "LIVE"), Path(tmp, "MERGED")
        live.mkdir()
        merged.mkdir()
        for r in rendered:
            i = r.item.id
            version = r.item.api_version.rpartition("/")[2]
            name = ".".join(p for p in (i.group, version, i.kind, i.namespace, i.name) if p)
            if r.before is not None:
                (live / name).write_text(to_yaml(r.before))
            if r.after is not None:
                (merged / name).write_text(to_yaml(r.after))
        argv = shlex.split(command) + [str(live), str(merged)]
        try:
            return subprocess.run(argv, env=os.environ.copy()).returncode
        except FileNotFoundError:
            return 127
