"""Render a plan as a unified diff, a table or JSON.

Secret values are masked unless asked for, as ``kubectl diff`` does: ``***``
where a value is the same on both sides, ``*** (before)`` / ``*** (after)``
where it changed. No Secret value reaches any output otherwise.
"""

from __future__ import annotations

import difflib
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubectl_gitops.plan import Item, Plan, normalize

try:
    _Dumper: type = yaml.CSafeDumper
except AttributeError:  # pragma: no cover
    _Dumper = yaml.SafeDumper

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


def render(item: Item, revision: str, *, show_secrets: bool = False) -> Rendered:
    before = normalize(item.live) if item.action != "create" else None
    after = normalize(item.predicted) if item.action != "prune" else None
    if item.id.kind == "Secret" and not item.id.group and not show_secrets:
        before, after = mask_secrets(before, after)
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
    from unidiff import PatchSet  # noqa: PLC0415

    patch = PatchSet(text)
    return sum(f.added for f in patch), sum(f.removed for f in patch)


def changed(plan: Plan) -> list[Item]:
    return [i for i in plan.items if i.action in ("create", "update", "prune") and not i.error]


def colorize(text: str) -> str:
    out = []
    for line in text.splitlines(keepends=True):
        color = "" if line.startswith(("---", "+++")) else _COLORS.get(line[:1], "")
        out.append(f"{color}{line.rstrip(chr(10))}{_RESET}\n" if color else line)
    return "".join(out)


def as_json(rendered: list[Rendered]) -> list[dict[str, Any]]:
    return [{"action": r.item.action, "group": r.item.id.group,
             "apiVersion": r.item.api_version, "kind": r.item.id.kind,
             "namespace": r.item.id.namespace, "name": r.item.id.name,
             "added": r.added, "removed": r.removed, "note": r.item.note, "diff": r.text}
            for r in rendered]


def as_table(rendered: list[Rendered]) -> str:
    from tabulate import tabulate  # noqa: PLC0415

    rows = [(r.item.action.upper(), r.item.id.kind, r.item.id.namespace or "-", r.item.id.name,
             f"+{r.added}/-{r.removed}") for r in rendered]
    return tabulate(rows, headers=["ACTION", "KIND", "NAMESPACE", "NAME", "+/-"],
                    tablefmt="plain")


def external_diff(command: str, rendered: list[Rendered]) -> int:
    """Run ``$KUBECTL_EXTERNAL_DIFF LIVE MERGED`` on two directories, as kubectl does."""
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
