"""Durations as kubectl's flags take them, in seconds.

Go's ``time.ParseDuration`` grammar: a sequence of decimal numbers, each
with a unit (``300ms``, ``1.5h``, ``2h45m``; units ``ns``, ``us``/``µs``,
``ms``, ``s``, ``m``, ``h``), ``0`` alone; and, as kubectl's
``--request-timeout``, a bare number meaning seconds (``30``). The one
parser of the project: flags, ``agent.yaml`` and kubeconfig values alike.
"""

from __future__ import annotations

import re

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3,
          "s": 1.0, "m": 60.0, "h": 3600.0}
_UNIT = "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True))
_PART = re.compile(rf"({_NUMBER})({_UNIT})")
_DURATION = re.compile(rf"(?:{_NUMBER}(?:{_UNIT}))+\Z")
_SECONDS = re.compile(rf"{_NUMBER}\Z")


def parse(value: str) -> float:
    """``value`` in seconds; ValueError when it is no duration, or negative
    (no flag or setting of this tool has a use for one)."""
    text = value.strip()
    sign, body = (text[0], text[1:]) if text[:1] in ("+", "-") else ("", text)
    if _SECONDS.match(body):
        seconds = float(body)
    elif _DURATION.match(body):
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(body))
    else:
        raise ValueError(f"{value!r} is not a duration like 30s, 1m30s or 1h")
    if sign == "-" and seconds:
        raise ValueError(f"{value!r}: a duration here cannot be negative")
    return seconds
