"""Field paths of an object, and who owns them (``metadata.managedFields``).

Used to say *who* changed a field git declares (drift) and to drop fields
that ``ignore:`` rules give to other controllers. A path is a list of
segments: a key of a mapping, or ``(index, element)`` for a list entry, so
that the entry can be matched against the ``k:{...}`` / ``v:...`` / ``i:N``
keys of a ``fieldsV1`` set, as the API server itself matches them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

Segment = str | tuple[int, Any]
Path = tuple[Segment, ...]


@dataclass(frozen=True)
class Owner:
    manager: str
    operation: str  # Apply or Update
    time: str  # RFC 3339, as the server wrote it; may be empty
    subresource: str = ""


def changed_paths(before: Any, after: Any, prefix: Path = ()) -> Iterator[Path]:
    """The deepest paths where ``before`` and ``after`` differ."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after), key=str):
            if before.get(key) != after.get(key):
                yield from changed_paths(before.get(key), after.get(key), (*prefix, key))
        return
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for i, (b, a) in enumerate(zip(before, after)):
            if b != a:
                yield from changed_paths(b, a, (*prefix, (i, b if b is not None else a)))
        return
    if before != after:
        yield prefix


def owners(obj: dict[str, Any], path: Path) -> list[Owner]:
    """The managers whose field set holds ``path`` (or an atomic parent of it)."""
    out = []
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        fields = entry.get("fieldsV1")
        if isinstance(fields, dict) and _holds(fields, path):
            out.append(Owner(str(entry.get("manager", "")), str(entry.get("operation", "")),
                             str(entry.get("time", "")), str(entry.get("subresource", ""))))
    return out


def _holds(fields: dict[str, Any], path: Path) -> bool:
    node: dict[str, Any] = fields
    for seg in path:
        if not node:
            return True  # an atomic value: whoever owns it owns what is inside
        key = _key_for(node, seg)
        if key is None:
            return False
        node = node[key]
    return True


def _key_for(node: dict[str, Any], seg: Segment) -> str | None:
    if isinstance(seg, str):
        key = "f:" + seg
        return key if key in node else None
    index, element = seg
    for key in node:
        if key.startswith("k:") and isinstance(element, dict):
            want = _json(key[2:])
            if isinstance(want, dict) and all(element.get(k) == v for k, v in want.items()):
                return key
        elif key.startswith("v:") and _json(key[2:]) == element:
            return key
        elif key == f"i:{index}":
            return key
    return None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def render(path: Path, obj: dict[str, Any] | None = None) -> str:
    """``.spec.template.spec.containers[name="c"].image``, as the API server
    names fields in conflicts: list entries by their merge key where the
    object's managedFields know one, else by position."""
    keyed = _entry_keys(obj or {})
    out = ""
    for seg in path:
        if isinstance(seg, str):
            out += "." + seg if re.fullmatch(r"[A-Za-z0-9_-]+", seg) else f"[{json.dumps(seg)}]"
            continue
        index, element = seg
        names = keyed.get(_element_key_names(element, keyed))
        if names and isinstance(element, dict):
            out += "[" + ",".join(f"{k}={json.dumps(element[k])}" for k in names) + "]"
        else:
            out += f"[{index}]"
    return out


def _entry_keys(obj: dict[str, Any]) -> dict[frozenset[str], tuple[str, ...]]:
    """The key-field sets (``name``; ``containerPort,protocol``) used by
    ``k:`` entries anywhere in the object's managedFields."""
    sets: dict[frozenset[str], tuple[str, ...]] = {}

    def walk(node: Any) -> None:
        if not isinstance(node, dict):
            return
        for key, child in node.items():
            if key.startswith("k:"):
                want = _json(key[2:])
                if isinstance(want, dict) and want:
                    sets.setdefault(frozenset(want), tuple(sorted(want)))
            walk(child)

    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        walk(entry.get("fieldsV1"))
    return sets


def _element_key_names(element: Any, keyed: dict[frozenset[str], tuple[str, ...]]) \
        -> frozenset[str]:
    if not isinstance(element, dict):
        return frozenset()
    fits = [names for names in keyed if names <= element.keys()]
    return max(fits, key=len, default=frozenset())


def age(stamp: str, now: datetime | None = None) -> str:
    """``2m ago`` from an RFC 3339 time; empty when there is none."""
    if not stamp:
        return ""
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return ""
    seconds = max(0, int(((now or datetime.now(timezone.utc)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


# --- JSON pointers (ignore rules) ---------------------------------------------

def pointer(text: str) -> tuple[str, ...]:
    """``/spec/replicas`` as its reference tokens (RFC 6901)."""
    if text and not text.startswith("/"):
        raise ValueError(f"{text!r} is not a JSON pointer (it must start with /)")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in text.split("/")[1:])


def remove(obj: Any, tokens: tuple[str, ...]) -> bool:
    """Delete the value at ``tokens`` from ``obj`` in place; whether it was there."""
    if not tokens:
        return False
    parent = obj
    for token in tokens[:-1]:
        parent = _step(parent, token)
        if parent is None:
            return False
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
        return True
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
        return True
    return False


def _step(node: Any, token: str) -> Any:
    if isinstance(node, dict):
        return node.get(token)
    if isinstance(node, list) and token.isdigit() and int(token) < len(node):
        return node[int(token)]
    return None


def remove_owned(obj: Any, owned: dict[str, Any]) -> None:
    """Delete from ``obj`` every leaf that the ``fieldsV1`` set ``owned`` holds."""
    if not isinstance(obj, dict):
        return
    for key in list(obj):
        sub = owned.get("f:" + str(key))
        if sub is None:
            continue
        value = obj[key]
        if not sub or (not isinstance(value, (dict, list))):
            del obj[key]
        elif isinstance(value, dict):
            remove_owned(value, sub)
            if not value:
                del obj[key]
        else:
            kept = []
            for i, element in enumerate(value):
                k = _key_for(sub, (i, element))
                if k is None:
                    kept.append(element)
                    continue
                inner = sub[k]
                if set(inner) <= {"."}:
                    continue  # the whole entry is theirs
                key_fields = _json(k[2:]) if k.startswith("k:") else None
                if isinstance(key_fields, dict):  # an entry keeps the keys that name it
                    inner = {f: v for f, v in inner.items() if f[2:] not in key_fields}
                remove_owned(element, inner)
                kept.append(element)
            obj[key] = kept
