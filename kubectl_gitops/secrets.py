"""Keeping Secret values out of every message.

One place decides what a Secret value looks like in text, so that validate,
the hook, plan and sync all hide the same things: a message about a Secret
(ours, or one the API server echoes back) has every value of the object's
``data`` and ``stringData`` replaced by ``***``, in each form it may take
(as written, base64-decoded, JSON-quoted). Type errors about those fields
name the type, never the value.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from typing import Any

MASK = "***"
_VALUE_FIELDS = ("data", "stringData")
# "got integer 48213579", "got string \"hunt…\"", "got boolean true": the value
# after the type name goes, whatever it is.
_GOT = re.compile(r"\b(got (?:integer|number|boolean|string))\b[^;]*")


def is_secret(obj: Any) -> bool:
    """A core/v1 Secret (any version of the core group)."""
    return isinstance(obj, dict) and obj.get("kind") == "Secret" \
        and isinstance(obj.get("apiVersion"), str) and "/" not in obj["apiVersion"]


def value_field(field_path: str) -> bool:
    """Whether a field path (``stringData[pin]``, ``data``) holds Secret values."""
    return any(field_path == f or field_path.startswith((f + "[", f + "."))
               for f in _VALUE_FIELDS)


def redact_field_message(message: str) -> str:
    """A schema message about a value field, with the value described by its type only."""
    return _GOT.sub(r"\1 (value hidden)", message)


def redact(message: str, obj: Any) -> str:
    """``message`` with every value of the Secret ``obj`` masked; other objects
    pass through unchanged."""
    if not is_secret(obj):
        return message
    for text in sorted(set(_forms(obj)), key=len, reverse=True):
        message = _replace(message, text)
    return message


def _forms(obj: dict[str, Any]) -> Iterator[str]:
    """Every spelling under which a value of ``obj`` may show up in a message."""
    for key in _VALUE_FIELDS:
        values = obj.get(key)
        if isinstance(values, dict):
            items: list[Any] = list(values.values())
        elif values is not None:
            items = [values]  # a mistyped field: a scalar or list in place of the map
        else:
            continue
        for value in _leaves(items):
            yield from _spellings(value, decode=key == "data")


def _leaves(items: list[Any]) -> Iterator[Any]:
    for item in items:
        if isinstance(item, dict):
            yield from _leaves(list(item.values()))
        elif isinstance(item, list):
            yield from _leaves(item)
        elif item is not None:
            yield item


def _spellings(value: Any, *, decode: bool) -> Iterator[str]:
    text = value if isinstance(value, str) else json.dumps(value)
    if not text:
        return
    yield text
    yield json.dumps(text)[1:-1]  # escaped, as inside a JSON or Go quoted string
    for line in text.splitlines():
        if len(line.strip()) >= 4:
            yield line.strip()  # multi-line values echoed one line at a time
    if decode:
        try:
            plain = base64.b64decode(text.replace("\n", ""), validate=True)
            yield plain.decode("utf-8")
        except (binascii.Error, ValueError):
            pass


def _replace(message: str, text: str) -> str:
    # Short values only where they stand alone, so that a value "1" does not
    # eat every digit of a message; long ones wherever they appear, and their
    # truncated beginnings ("hunter2hunter…") too.
    if len(text) < 6:
        return re.sub(rf"(?<![\w.]){re.escape(text)}(?![\w.])", MASK, message)
    message = message.replace(text, MASK)
    return re.sub(rf"{re.escape(text[:6])}[^\s\"']*…", MASK, message)
