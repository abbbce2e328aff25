"""Offline schema checks for Kubernetes objects.

Built-in kinds are checked against the strict JSON schemas that the
``kubernetes-validate`` package ships for each Kubernetes minor release (every
object has ``additionalProperties: false``, so unknown fields are errors).
Custom resources are checked against the ``openAPIV3Schema`` of their CRD.

Both dialects use a small subset of JSON Schema, compiled here once per kind
into closures. The ``jsonschema`` package would do the same work but costs
~0.15 s to import and ~1.3 ms per Deployment, on a path (the pre-commit hook)
that runs on every commit; this compiler loads ``_definitions.json`` once per
process, compiles only the definitions an object reaches, and reports
Kubernetes-style field paths (``spec.containers[0].image``) directly.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import json
import marshal
import os
import re
from collections.abc import Callable, Mapping
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

from kubectl_gitops import diskcache
from kubectl_gitops.errors import UsageError

# (field path, message); the path is "" for the object itself.
Problem = tuple[str, str]
Check = Callable[[Any, str, list[Problem]], None]

_SCHEMA_DIR = re.compile(r"v(\d+)\.(\d+)\.\d+-local-strict\Z")
_DEF_PREFIX = "#/$defs/"
# Every message about a repeated key of a list-map or entry of a set starts so:
# the one check an apply makes (SSA merges by these keys) that a create does not.
DUPLICATE = "duplicate entry"
_INT_RANGES = {"int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1)}


# --- which schema files ------------------------------------------------------

def _package_dir() -> Path:
    # find_spec locates the package without running its __init__, which
    # imports jsonschema.
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the kubernetes-validate package is not installed; "
                         "pip install kubernetes-validate")
    return Path(next(iter(spec.submodule_search_locations))) / "kubernetes-json-schema"


def minor(version: str) -> tuple[int, int]:
    """``v1.37.2`` / ``1.37`` -> (1, 37); a usage error for anything else."""
    m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?", version.strip())
    if not m:
        raise UsageError(f"--kubernetes-version {version}: expected a version like 1.37 "
                         "or v1.37.2")
    return int(m[1]), int(m[2])


@lru_cache(maxsize=4)
def schema_dir(version: str) -> tuple[str, Path]:
    """The newest strict schema set not newer than ``version``: ("1.37", dir)."""
    root = _package_dir()
    available = sorted((int(m[1]), int(m[2]), p) for p in root.iterdir()
                       if (m := _SCHEMA_DIR.match(p.name)))
    want = minor(version)
    usable = [a for a in available if (a[0], a[1]) <= want]
    if not available or not usable or want > available[-1][:2]:
        span = f"{available[0][0]}.{available[0][1]} to {available[-1][0]}.{available[-1][1]}" \
            if available else "none"
        raise UsageError(f"no schemas for Kubernetes {version}: the installed kubernetes-validate "
                         f"ships {span}; pick one of those with --kubernetes-version, or "
                         "upgrade kubernetes-validate")
    major_, minor_, path = usable[-1]
    return f"{major_}.{minor_}", path


# --- the compiler ------------------------------------------------------------

def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, (str, date, bytes)):
        # YAML timestamps and !!binary become strings on the way to the API.
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


_NAMES = {"object": "a mapping", "array": "a list", "null": "null"}


def describe(value: Any) -> str:
    t = _type_of(value)
    if t in _NAMES:
        return _NAMES[t]
    if t == "string":
        text = json.dumps(str(value), ensure_ascii=False)
        return f"string {text[:40] + '…' if len(text) > 40 else text}"
    return f"{t} {json.dumps(value)}"


def _matches(t: str, allowed: frozenset[str]) -> bool:
    return t in allowed or (t == "integer" and "number" in allowed)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _hint(key: Any, known: Mapping[str, Any]) -> str:
    import difflib  # noqa: PLC0415 - only on the error path

    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.75)
    return f' (did you mean "{close[0]}"?)' if close else ""


class Compiler:
    """Compiles schemas into :data:`Check` closures, sharing definitions.

    ``openapi``: the CRD dialect (OpenAPI v3 structural schemas): boolean
    ``exclusiveMinimum``, ``x-kubernetes-int-or-string``, and, since
    validation is strict, an object schema is closed (unknown fields are
    errors) unless it has ``additionalProperties`` or
    ``x-kubernetes-preserve-unknown-fields`` -- as the API server's strict
    field validation treats fields its pruning would drop. Without
    ``openapi``, an object is closed only by ``additionalProperties: false``,
    which the strict built-in schemas put on every object.
    """

    def __init__(self, defs: Mapping[str, Any] | None = None, *, openapi: bool = False) -> None:
        self.defs = defs or {}
        self.openapi = openapi
        self._compiled: dict[str, Check] = {}

    def ref(self, name: str) -> Check:
        done = self._compiled.get(name)
        if done is not None:
            return done
        # Definitions may be recursive (JSONSchemaProps): hand out a
        # trampoline first, compile, then let later users call the real one.
        cell: list[Check] = []

        def trampoline(value: Any, path: str, out: list[Problem]) -> None:
            cell[0](value, path, out)

        self._compiled[name] = trampoline
        if name not in self.defs:
            raise KeyError(f"schema definition {name} is missing")
        cell.append(self.compile(self.defs[name]))
        self._compiled[name] = cell[0]
        return trampoline

    def compile(self, schema: Any, *, extra_props: Mapping[str, Check] | None = None) -> Check:
        if not isinstance(schema, dict):
            return _accept  # JSON Schema's `true`, or a malformed schema
        ref = schema.get("$ref")
        if isinstance(ref, str) and _DEF_PREFIX in ref:
            return self.ref(ref.partition(_DEF_PREFIX)[2])
        checks = [c for c in (self._value(schema), self._object(schema, extra_props),
                              self._array(schema), self._combined(schema)) if c is not None]
        types = self._types(schema)
        if not types and not checks:
            return _accept

        def check(value: Any, path: str, out: list[Problem]) -> None:
            if value is None:
                return
            if types:
                t = _type_of(value)
                if not _matches(t, types):
                    out.append((path, f"expected {' or '.join(sorted(types))}, "
                                      f"got {describe(value)}"))
                    return
            for c in checks:
                c(value, path, out)

        return check

    @staticmethod
    def _types(schema: dict[str, Any]) -> frozenset[str]:
        raw = schema.get("type")
        types = set(raw if isinstance(raw, list) else [raw] if isinstance(raw, str) else [])
        if schema.get("x-kubernetes-int-or-string"):
            types = {"integer", "string"}
        # The built-in schemas list "null" in every type, and the API server
        # prunes nulls from custom resources before validating them, so null
        # passes as "unset" everywhere (``nullable`` changes nothing here).
        return frozenset(types - {"null"})

    # -- scalars ----------------------------------------------------------------

    def _value(self, schema: dict[str, Any]) -> Check | None:
        tests: list[Callable[[Any], str | None]] = []
        if "enum" in schema and isinstance(schema["enum"], list):
            tests.append(_enum(schema["enum"]))
        fmt = schema.get("format")
        if fmt == "byte":
            tests.append(_base64)
        elif fmt in _INT_RANGES:
            lo, hi = _INT_RANGES[fmt]
            tests.append(lambda v: f"{v} does not fit in {fmt}"
                         if type(v) is int and not lo <= v <= hi else None)
        tests += _string_tests(schema) + self._number_tests(schema)
        if not tests:
            return None

        def check(value: Any, path: str, out: list[Problem]) -> None:
            for test in tests:
                msg = test(value)
                if msg:
                    out.append((path, msg))

        return check

    def _number_tests(self, schema: dict[str, Any]) -> list[Callable[[Any], str | None]]:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        # OpenAPI 3.0 (and Draft 4) spell an exclusive bound as a flag.
        if xlo is True:
            xlo, lo = lo, None
        if xhi is True:
            xhi, hi = hi, None
        step = schema.get("multipleOf")
        bounds = [(b, op, word) for b, op, word in (
            (lo, float.__lt__, ">="), (xlo, float.__le__, ">"),
            (hi, float.__gt__, "<="), (xhi, float.__ge__, "<"))
            if _is_number(b)]
        tests = [_bound(b, op, word) for b, op, word in bounds]
        if _is_number(step) and step > 0:
            tests.append(lambda v: f"must be a multiple of {step}, got {v}"
                         if _is_number(v) and (v / step) % 1 else None)
        return tests

    # -- objects ---------------------------------------------------------------

    def _object(self, schema: dict[str, Any],
                extra_props: Mapping[str, Check] | None) -> Check | None:
        props_schema = schema.get("properties")
        addl = schema.get("additionalProperties")
        required = [r for r in schema.get("required") or [] if isinstance(r, str)]
        is_object = schema.get("type") in ("object", ["object", "null"])
        if not (props_schema or required or addl is not None or extra_props
                or (self.openapi and is_object)):
            return None
        props = {k: self.compile(v) for k, v in (props_schema or {}).items()}
        if schema.get("x-kubernetes-embedded-resource"):
            for key in ("apiVersion", "kind", "metadata"):
                props.setdefault(key, _accept)
        props.update(extra_props or {})
        extra = self.compile(addl) if isinstance(addl, dict) else None
        # Strict CRD validation closes an explicit object schema unless it
        # keeps unknown fields; anything else stays open unless it says so.
        closed = addl is False or (self.openapi and is_object and addl is None and
                                   schema.get("x-kubernetes-preserve-unknown-fields") is not True)
        bounds = [(n, op, word) for n, op, word in
                  ((schema.get("minProperties"), int.__lt__, "at least"),
                   (schema.get("maxProperties"), int.__gt__, "at most")) if isinstance(n, int)]

        def check(value: Any, path: str, out: list[Problem]) -> None:
            if not isinstance(value, dict):
                return
            for key, sub in value.items():
                if not isinstance(key, str):
                    out.append((path, f"key {describe(key)} must be a string; quote it"))
                    continue
                c = props.get(key)
                if c is not None:
                    c(sub, _join(path, key), out)
                elif extra is not None:
                    extra(sub, f"{path}[{key}]", out)
                elif closed:
                    out.append((_join(path, key), "unknown field" + _hint(key, props)))
            for key in required:
                if key not in value:
                    out.append((_join(path, key), "required field missing"))
            for n, op, word in bounds:
                if op(len(value), n):
                    out.append((path, f"must have {word} {n} entries, has {len(value)}"))

        return check

    # -- arrays ----------------------------------------------------------------

    def _array(self, schema: dict[str, Any]) -> Check | None:
        items = self.compile(schema["items"]) if isinstance(schema.get("items"), dict) else None
        list_type = schema.get("x-kubernetes-list-type")
        keys = [k for k in schema.get("x-kubernetes-list-map-keys") or [] if isinstance(k, str)]
        unique = list_type == "set" or schema.get("uniqueItems") is True
        lo, hi = schema.get("minItems"), schema.get("maxItems")
        if items is None and not unique and not (list_type == "map" and keys) \
                and lo is None and hi is None:
            return None

        def check(value: Any, path: str, out: list[Problem]) -> None:
            if not isinstance(value, list):
                return
            if items is not None:
                for i, item in enumerate(value):
                    items(item, f"{path}[{i}]", out)
            if isinstance(lo, int) and len(value) < lo:
                out.append((path, f"must have at least {lo} items, has {len(value)}"))
            if isinstance(hi, int) and len(value) > hi:
                out.append((path, f"must have at most {hi} items, has {len(value)}"))
            if list_type == "map" and keys:
                _unique_keys(value, keys, path, out)
            elif unique:
                _unique_items(value, path, out)

        return check

    # -- allOf / anyOf / oneOf / not --------------------------------------------

    def _combined(self, schema: dict[str, Any]) -> Check | None:
        all_of = [self.compile(s) for s in schema.get("allOf") or []]
        any_of = [(s, self.compile(s)) for s in schema.get("anyOf") or []]
        one_of = [(s, self.compile(s)) for s in schema.get("oneOf") or []]
        not_ = self.compile(schema["not"]) if isinstance(schema.get("not"), dict) else None
        if not (all_of or any_of or one_of or not_):
            return None

        def check(value: Any, path: str, out: list[Problem]) -> None:
            for c in all_of:
                c(value, path, out)
            for branches, exactly_one in ((any_of, False), (one_of, True)):
                if branches:
                    _branches(branches, exactly_one, value, path, out)
            if not_ is not None:
                probe: list[Problem] = []
                not_(value, path, probe)
                if not probe:
                    out.append((path, "matches a schema it must not match"))

        return check


def _accept(value: Any, path: str, out: list[Problem]) -> None:
    return None


def _branches(branches: list[tuple[Any, Check]], exactly_one: bool, value: Any, path: str,
              out: list[Problem]) -> None:
    results = []
    for _, c in branches:
        probe: list[Problem] = []
        c(value, path, probe)
        results.append(probe)
    passed = sum(1 for r in results if not r)
    if passed == 1 or (passed and not exactly_one):
        return
    if passed > 1:
        out.append((path, f"matches {passed} of the oneOf schemas; exactly one must match"))
        return
    types = [s.get("type") for s, _ in branches if isinstance(s, dict)]
    if all(types) and all(set(s) <= {"type", "description"} for s, _ in branches):
        names = sorted({t for ts in types for t in (ts if isinstance(ts, list) else [ts])}
                       - {"null"})
        out.append((path, f"expected {' or '.join(names)}, got {describe(value)}"))
        return
    out.append(results[0][0] if len(results) == 1 else
               (path, f"matches none of the allowed schemas (first: {results[0][0][1]})"))


def _unique_keys(items: list[Any], keys: list[str], path: str, out: list[Problem]) -> None:
    seen: dict[tuple[Any, ...], int] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        key = tuple(item.get(k) for k in keys)
        try:
            first = seen.setdefault(key, i)
        except TypeError:
            continue  # a key that is itself a list or mapping: the schema reports it
        if first != i:
            what = ", ".join(f"{k}={json.dumps(item.get(k), default=str)}" for k in keys)
            out.append((f"{path}[{i}]", f"{DUPLICATE} {what} (also at [{first}]); "
                                        "keys of this list must be unique"))


def _unique_items(items: list[Any], path: str, out: list[Problem]) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        key = json.dumps(item, sort_keys=True, default=str)
        first = seen.setdefault(key, i)
        if first != i:
            out.append((f"{path}[{i}]", f"{DUPLICATE} {key[:40]} (also at [{first}])"))


def _enum(allowed: list[Any]) -> Callable[[Any], str | None]:
    # `True == 1` in Python; compare with the JSON type as well.
    keys = {(_type_of(a), a) for a in allowed if not isinstance(a, (dict, list))}
    listed = ", ".join(json.dumps(a) for a in allowed[:12]) + (", …" if len(allowed) > 12 else "")

    def test(value: Any) -> str | None:
        if value is None or isinstance(value, (dict, list)):
            return None
        return None if (_type_of(value), value) in keys else \
            f"must be one of {listed}; got {describe(value)}"

    return test


def _base64(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        base64.b64decode(value.replace("\n", "").replace("\r", ""), validate=True)
    except (binascii.Error, ValueError):
        return "not valid base64 (for plain text use stringData instead of data)"
    return None


def _string_tests(schema: dict[str, Any]) -> list[Callable[[Any], str | None]]:
    tests: list[Callable[[Any], str | None]] = []
    lo, hi, pattern = schema.get("minLength"), schema.get("maxLength"), schema.get("pattern")
    if isinstance(lo, int):
        tests.append(lambda v: f"must be at least {lo} characters long"
                     if isinstance(v, str) and len(v) < lo else None)
    if isinstance(hi, int):
        tests.append(lambda v: f"must be at most {hi} characters long"
                     if isinstance(v, str) and len(v) > hi else None)
    if isinstance(pattern, str):
        try:
            rx = re.compile(pattern)
        except re.error:
            return tests  # an ECMA-only pattern: the API server still checks it
        tests.append(lambda v: f"must match the pattern {pattern}"
                     if isinstance(v, str) and not rx.search(v) else None)
    return tests


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _bound(limit: float, fails: Callable[[float, float], bool],
           word: str) -> Callable[[Any], str | None]:
    def test(v: Any) -> str | None:
        return f"must be {word} {limit}, got {v}" if _is_number(v) and \
            fails(float(v), float(limit)) else None
    return test


# --- built-in kinds ----------------------------------------------------------

class BuiltinSchemas:
    """The strict schemas of one Kubernetes minor release, loaded on first use."""

    def __init__(self, version: str) -> None:
        self.version, self.directory = schema_dir(version)
        self._compiler: Compiler | None = None
        self._index: dict[tuple[str, str, str], str] = {}
        self._cache: dict[tuple[str, str, str], Check | None] = {}

    def _load(self) -> Compiler:
        if self._compiler is None:
            defs = definitions(self.directory)
            for name, d in defs.items():
                for gvk in d.get("x-kubernetes-group-version-kind") or []:
                    key = (gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", ""))
                    self._index.setdefault(key, name)
            self._compiler = Compiler(defs)
        return self._compiler

    def lookup(self, group: str, version: str, kind: str) -> Check | None:
        key = (group, version, kind)
        if key not in self._cache:
            compiler = self._load()
            name = self._index.get(key)
            self._cache[key] = compiler.ref(name) if name else None
        return self._cache[key]

    def object_meta(self) -> Check:
        return self._load().ref("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")

    def api_versions(self, kind: str) -> list[str]:
        """Every apiVersion that serves ``kind`` in this release (for hints)."""
        self._load()
        return sorted(f"{g}/{v}" if g else v for g, v, k in self._index if k == kind)

    def has_group(self, group: str) -> bool:
        self._load()
        return any(g == group for g, _, _ in self._index)


def definitions(directory: Path) -> dict[str, Any]:
    """Every definition of a schema set, without their descriptions.

    ``_definitions.json`` is 1.8 MB of JSON (~45 ms to parse, on every
    commit); the stripped definitions are kept as marshal data (~0.3 MB,
    ~10 ms to load) in the user's cache directory, keyed by the file's size
    and mtime. Without a writable cache, the JSON is parsed each time.
    """
    source = directory / "_definitions.json"
    st = source.stat()
    home = diskcache.directory("schemas")
    cache = Path(home, f"{directory.name}-{st.st_size}-{st.st_mtime_ns}.marshal") if home else None
    if cache:
        try:
            return marshal.loads(cache.read_bytes())  # type: ignore[no-any-return]
        except (OSError, ValueError, EOFError, TypeError):
            pass
    defs = {name: _strip(d) for name, d in json.loads(source.read_bytes())["$defs"].items()}
    if cache:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
            tmp.write_bytes(marshal.dumps(defs))
            os.replace(tmp, cache)  # readers never see half a file
        except OSError:
            pass
    return defs


_NAMED = ("properties", "patternProperties", "$defs")  # keys there are names, not keywords


def _strip(schema: Any) -> Any:
    """A schema without ``description`` (docs only): a third of the size."""
    if isinstance(schema, list):
        return [_strip(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    return {k: ({n: _strip(v) for n, v in val.items()} if k in _NAMED and isinstance(val, dict)
                else _strip(val))
            for k, val in schema.items() if k != "description"}


# --- custom resources ----------------------------------------------------------

def crd_check(schema: Mapping[str, Any], meta: Check | None) -> Check:
    """A CRD version's ``openAPIV3Schema`` as a strict check of whole objects.

    apiVersion, kind and metadata are always allowed at the root (the API
    server handles them); metadata is checked as an ObjectMeta when ``meta``
    is given.
    """
    root = {"apiVersion": Compiler().compile({"type": "string"}),
            "kind": Compiler().compile({"type": "string"}),
            "metadata": meta or _accept}
    return Compiler(openapi=True).compile(dict(schema), extra_props=root)
