"""Plain YAML scalars read as kubectl reads them.

kubectl turns YAML into JSON with sigs.k8s.io/yaml, which resolves plain
(unquoted) scalars with go-yaml v2's rules, not PyYAML's YAML 1.1 ones. They
differ: ``y``/``n`` are booleans to Go and strings to PyYAML; ``1e3`` and
``1.0e3`` are numbers to Go and strings to PyYAML; ``0o17`` and ``0X1F`` are
integers to Go; ``1:30`` is a string to Go and 90 to PyYAML; ``=`` is a
string to Go and a special tag to PyYAML. The value then goes through JSON,
so a float with an integral value (``1e3``, ``1.0``) arrives as an integer,
and a map key that is not a string becomes its JSON spelling (``y: 1`` is
``"true": 1``). A manifest must mean to this tool what it means to kubectl.
"""

from __future__ import annotations

import math
import re
from typing import Any

T = "tag:yaml.org,2002:"
STR, BOOL, INT, FLOAT, NULL, MERGE = (T + "str", T + "bool", T + "int", T + "float",
                                      T + "null", T + "merge")

# go-yaml v2 resolve.go: its resolveMapList.
_WORDS: dict[str, tuple[str, Any]] = {}
for _value, _tag, _words in (
        (True, BOOL, "y Y yes Yes YES true True TRUE on On ON"),
        (False, BOOL, "n N no No NO false False FALSE off Off OFF"),
        (None, NULL, "~ null Null NULL"),
        (math.nan, FLOAT, ".nan .NaN .NAN"),
        (math.inf, FLOAT, ".inf .Inf .INF +.inf +.Inf +.INF"),
        (-math.inf, FLOAT, "-.inf -.Inf -.INF")):
    for _word in _words.split():
        _WORDS[_word] = (_tag, _value)
_WORDS[""] = (NULL, None)
_WORDS["<<"] = (MERGE, "<<")

_GO_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
# strconv.ParseInt(s, 0, 64): an optional sign, then a base prefix or a
# leading 0 for octal; digits only (underscores are already removed).
_GO_INT = re.compile(r"[-+]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ].*)?")
_INT64 = (-(1 << 63), (1 << 64) - 1)  # what ParseInt or ParseUint accepts


def resolve(value: str) -> tuple[str, Any]:
    """The tag and Python value go-yaml v2 gives a plain scalar, after the
    trip through JSON that kubectl makes."""
    word = _WORDS.get(value)
    if word is not None:
        return word
    first = value[:1]
    if first == ".":
        return _float(value) or (STR, value)
    if first not in "+-0123456789":
        return STR, value
    if _TIMESTAMP.fullmatch(value):
        return STR, value  # go-yaml keeps a timestamp as its text for an interface{}
    plain = value.replace("_", "")
    if _GO_INT.fullmatch(plain):
        number = _parse_int(plain)
        if _INT64[0] <= number <= _INT64[1]:
            return INT, number
    if _GO_FLOAT.fullmatch(plain):
        return _float(plain) or (STR, value)
    return STR, value


def _parse_int(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    lower = digits.lower()
    if lower.startswith(("0x", "0o", "0b")):
        return sign * int(digits[2:], {"x": 16, "o": 8, "b": 2}[lower[1]])
    if len(digits) > 1 and digits.startswith("0"):
        return sign * int(digits, 8)
    return sign * int(digits)


def _float(text: str) -> tuple[str, Any] | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return FLOAT, as_json_number(number)


def as_json_number(number: float) -> float | int:
    """A float as kubectl sends it: Go's JSON writes ``1000`` for 1000.0,
    and the API machinery reads that back as an integer."""
    if math.isfinite(number) and number.is_integer() and abs(number) < 2 ** 63:
        return int(number)
    return number


def key_text(key: Any) -> str | None:
    """A non-string map key as sigs.k8s.io/yaml spells it in JSON; None
    where it refuses the key (null)."""
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        if math.isnan(key):
            return ".nan"
        if math.isinf(key):
            return ".inf" if key > 0 else "-.inf"
        return f"{key:.8g}".replace("e+0", "e+").replace("e-0", "e-")  # FormatFloat(…, 32)
    return None


def explicit(tag: str, value: str) -> tuple[bool, Any]:
    """A scalar with an explicit ``!!bool``/``!!int``/``!!float`` tag:
    whether go-yaml accepts it, and the value."""
    got, out = resolve(value)
    if got == tag:
        return True, out
    if tag == FLOAT and got == INT:
        return True, out  # already the JSON number kubectl sends
    return False, None


# Tags PyYAML gives that end up meaning what go-yaml's reading means here:
# a timestamp stays its text; "=" (!!value) is the string "=".
_SAME_AS_STR = (T + "timestamp", T + "value")
_PYYAML_MEANING: dict[tuple[str, str], str | None] = {}


def differs(pyyaml_tag: str, value: str) -> str | None:
    """Where a YAML 1.1 reader (PyYAML, most editors and linters) and kubectl
    (go-yaml) read a plain scalar differently, what to tell the author."""
    key = (pyyaml_tag, value)
    if key in _PYYAML_MEANING:
        return _PYYAML_MEANING[key]
    go_tag, go_value = resolve(value)
    theirs = STR if pyyaml_tag in _SAME_AS_STR else pyyaml_tag
    message = None
    if theirs != go_tag:
        message = (f"plain scalar {value} means {_describe(go_tag, go_value)} to kubectl "
                   f"(go-yaml) but {_describe(theirs, value)} to YAML 1.1 readers; quote it "
                   "if you mean a string")
    if len(_PYYAML_MEANING) < 10_000:
        _PYYAML_MEANING[key] = message
    return message


def _describe(tag: str, value: Any) -> str:
    kind = tag.removeprefix(T)
    if kind == "str":
        return f"the string {value!r}"
    if kind == "bool" and isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if kind in ("int", "float") and not isinstance(value, str):
        return f"the number {value}"
    return {"int": "a number", "float": "a number", "bool": "a boolean"}.get(kind, kind)
