"""Manifest files to Kubernetes objects, each remembering its ``file:line``.

Safe loading only (libyaml's C loader when available); every problem of a
read is collected and reported together. Files are read as kubectl reads
them: plain scalars resolve by go-yaml's rules (:mod:`goyaml`), a repeated
mapping key is an error, and a ``*List`` of any group is expanded.
"""

from __future__ import annotations

import json
import os
import posixpath
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from kubectl_gitops.errors import ManifestError, ManifestErrors
from kubectl_gitops.source import goyaml, order
from kubectl_gitops.source.tree import KUSTOMIZATION_FILES, Source, SourceFile

if TYPE_CHECKING:
    from kubectl_gitops.source.helm import RenderContext

try:  # libyaml is ~10x faster; fall back to the pure-Python loader.
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on the PyYAML build
    _Loader = yaml.SafeLoader

MAX_FILE_BYTES = 8 * 1024 * 1024
# Past this many nodes after alias expansion, a document is an alias bomb.
MAX_EXPANDED_NODES = 500_000


@dataclass
class Manifest:
    """One desired object and where it was read from."""

    obj: dict[str, Any]
    path: str
    line: int
    # Keys a mapping of this document repeats, with their lines: validate
    # reports them itself; diff and sync refuse them (repeated_key_errors).
    repeated_keys: list[tuple[str, int]] = field(default_factory=list)
    # Plain scalars kubectl (go-yaml) reads otherwise than YAML 1.1 readers,
    # as (line, message): this tool reads them as kubectl; validate says so.
    go_meanings: list[tuple[int, str]] = field(default_factory=list)
    # Rendered by a chart: its release namespace for objects that omit one
    # (and a cluster-scoped object's namespace is dropped, as helm does).
    default_namespace: str | None = None
    # Read from a SOPS-encrypted file without its key (validate): its values
    # are ENC[...] strings, so no schema check applies to them.
    encrypted: bool = False

    @property
    def api_version(self) -> str:
        return self.obj["apiVersion"]

    @property
    def kind(self) -> str:
        return self.obj["kind"]

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0] if "/" in self.api_version else ""

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def name(self) -> str:
        """The name; "" for a hook that has only ``generateName``."""
        return self.obj["metadata"].get("name") or ""

    @property
    def namespace(self) -> str | None:
        return self.obj["metadata"].get("namespace") or None

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path

    def __str__(self) -> str:
        ns = self.namespace
        name = self.name or f"{self.obj['metadata'].get('generateName', '')}*"
        return f"{self.kind} {ns}/{name}" if ns else f"{self.kind} {name}"


def read(src: Source, files: list[SourceFile] | None = None, *, cache: bool = False,
         render: RenderContext | None = None) -> tuple[list[Manifest], list[ManifestError]]:
    """Every object under the source, in sorted path order, and every error.

    ``files``: the source's files when the caller already read them.
    ``cache``: reuse and keep what files parse to (:class:`ParseCache`).
    ``render``: how charts render and whether SOPS files are decrypted
    (default: offline Capabilities, decrypted with sops's own keys).
    Files under a chart (a ``Chart.yaml`` directory, or ``helm:`` of
    ``.gitops.yaml``) and its values files are read by the chart's render.
    """
    from kubectl_gitops.source import helm  # noqa: PLC0415

    files = sorted(src.files() if files is None else files, key=lambda f: f.path)
    ctx = render or helm.RenderContext.offline(src)
    kfiles = top_kustomizations(f.path for f in files)
    kdirs = [posixpath.dirname(k) for k in kfiles]
    charts = helm.find_charts(src, [f.path for f in files], kdirs)
    taken = {c.chart for c in charts if c.kind == "local"}
    values = {v for c in charts for v in c.values_files}
    manifests: list[Manifest] = []
    errors: list[ManifestError] = []
    store = ParseCache.default() if cache else None
    for f in files:
        if any(_inside(f.path, d) for d in kdirs) or any(_inside(f.path, c) for c in taken) \
                or f.path in values:
            continue  # rendered with its kustomization or chart, not on its own
        if _encrypted(f.data):
            ms, es = _read_encrypted(src, f, ctx)
        else:
            ms, es = store.parse(f.path, f.data) if store else parse_file(f.path, f.data)
        manifests += ms
        errors += es
    ms, es = _render_kustomizations(src, kfiles, ctx)
    manifests += ms
    errors += es
    rendered, es = helm.render(src, charts, ctx, parse_file,
                               {f.path: f.data for f in files if f.path in values})
    manifests += [Manifest(obj, path, 0, default_namespace=ns) for obj, path, ns in rendered]
    return manifests, errors + es


def _encrypted(data: bytes) -> bool:
    from kubectl_gitops.source import sops  # noqa: PLC0415

    return sops.encrypted(data)


def _read_encrypted(src: Source, f: SourceFile, ctx: RenderContext) \
        -> tuple[list[Manifest], list[ManifestError]]:
    """A SOPS file: decrypted in memory and parsed (never cached), or,
    without decryption (validate), its structure checked and what can be
    read of it kept (names, kinds) with its values still encrypted."""
    from kubectl_gitops.source import sops  # noqa: PLC0415

    if not ctx.decrypt:
        problems = sops.check(f.path, f.data)
        if problems:
            return [], problems
        out: list[Manifest] = []
        for doc in sops.visible(f.data):
            ms, es = to_manifests(doc, f.path, 1)
            if es:
                return [], [ManifestError(f.path, None, "SOPS-encrypted with its apiVersion, "
                                          "kind or metadata.name encrypted too: only data "
                                          "should be (encrypted_regex: ^(data|stringData)$)")]
            out += ms
        for m in out:
            m.encrypted = True
        return out, []
    try:
        plaintext = sops.decrypt(f.path, f.data, src.keys)
    except ManifestError as e:
        return [], [e]
    return parse_file(f.path, plaintext)


class ParseCache:
    """What a YAML file parses to, kept on disk by its content's hash, so an
    unchanged file is not parsed again: a small diff or sync spends more
    time turning YAML into objects (go-yaml's scalar rules, line numbers,
    repeated keys) than reading them back as JSON.

    ``$XDG_CACHE_HOME/kubectl-gitops/manifests/<xx>/<hash>.json``
    (kubectl_gitops.diskcache: private, written whole, anything odd is a
    miss). Kept only for a file that parsed cleanly: no error, no repeated
    key, no scalar YAML 1.1 reads otherwise, no Secret (its values stay in
    git alone), under 1 MB. The key covers the parser's version, so an
    upgrade never reads an older parser's result. Entries untouched for
    :attr:`MAX_AGE` are removed now and then when one is written.
    """

    MAX_AGE = 14 * 86400
    MAX_BYTES = 1_000_000

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self.version = _parser_version()
        self._private = False  # the directory was found private (then not asked again)

    @classmethod
    def default(cls) -> ParseCache:
        from kubectl_gitops import diskcache  # noqa: PLC0415

        return cls(diskcache.directory("manifests"))

    def _file(self, data: bytes) -> str:
        import hashlib  # noqa: PLC0415

        key = hashlib.sha256(self.version.encode() + b"\0" + data).hexdigest()
        return os.path.join(str(self.directory), key[:2], key[2:] + ".json")

    def parse(self, path: str, data: bytes) -> tuple[list[Manifest], list[ManifestError]]:
        """:func:`parse_file`, from the cache when this content was seen."""
        if self.directory is None or path.endswith(".json") or len(data) > self.MAX_BYTES:
            return parse_file(path, data)
        from kubectl_gitops import diskcache  # noqa: PLC0415

        file = self._file(data)
        self._private = self._private or diskcache.private(self.directory)
        hit = diskcache.read_json(file) if self._private else None
        if isinstance(hit, dict) and hit.get("v") == self.version and \
                isinstance(hit.get("m"), list):
            try:
                found = [Manifest(obj, path, int(line)) for obj, line in hit["m"]]
                if all(isinstance(m.obj, dict) for m in found):
                    return found, []
            except (TypeError, ValueError):
                pass  # not what this version writes: parse it again
        ms, es = parse_file(path, data)
        if not es and all(not m.repeated_keys and not m.go_meanings and m.kind != "Secret"
                          for m in ms):
            diskcache.write_json(file, {"v": self.version, "m": [[m.obj, m.line] for m in ms]})
            self._expire()
        return ms, es

    def _expire(self) -> None:
        """Now and then (1 write in 50), remove entries older than MAX_AGE."""
        import random  # noqa: PLC0415
        import time  # noqa: PLC0415

        if random.random() >= 0.02:
            return
        cutoff = time.time() - self.MAX_AGE
        try:
            for folder in os.scandir(str(self.directory)):
                if not folder.is_dir(follow_symlinks=False):
                    continue
                for entry in os.scandir(folder.path):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
        except OSError:
            pass  # another run expiring at the same time, or no directory yet


_VERSION: list[str] = []


def _parser_version() -> str:
    """This parser's identity: PyYAML's version and a hash of the code that
    turns YAML into objects, so a cached result is only ever read back by
    the same parser."""
    if not _VERSION:
        import hashlib  # noqa: PLC0415

        digest = hashlib.sha256()
        for module in (sys.modules[__name__], goyaml):
            with open(str(module.__file__), "rb") as f:
                digest.update(f.read())
        _VERSION.append(f"pyyaml/{yaml.__version__} {digest.hexdigest()[:16]}")
    return _VERSION[0]


def parse_file(path: str, data: bytes) -> tuple[list[Manifest], list[ManifestError]]:
    if len(data) > MAX_FILE_BYTES:
        mb = len(data) / 1_000_000
        return [], [ManifestError(path, None, f"file is {mb:.1f} MB, over the "
                                  f"{MAX_FILE_BYTES // 2**20} MiB limit for a manifest file")]
    if b"\0" in data:
        return [], [ManifestError(path, None, "binary file (contains NUL bytes), not YAML or JSON")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return [], [ManifestError(path, line, f"not valid UTF-8 (byte 0x{data[e.start]:02x} at "
                                  f"offset {e.start}); save the file as UTF-8")]
    text = text.removeprefix("\ufeff")
    if path.endswith(".json"):
        return _parse_json(path, text)
    try:
        return _parse_stream(path, text)
    except (yaml.YAMLError, _AliasBomb, RecursionError):
        # Some document is bad: read them one by one, so that each problem is
        # reported at its own line and the good documents still count.
        return _parse_documents(path, text)


def _parse_stream(path: str, text: str) -> tuple[list[Manifest], list[ManifestError]]:
    """All documents through one loader: the fast path for a valid file."""
    loader = _CachingLoader(text)
    docs: list[tuple[int, Any, int]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            docs.append((node.start_mark.line + 1, _construct(loader, node), 1))
    finally:
        loader.dispose()
    manifests: list[Manifest] = []
    errors: list[ManifestError] = []
    for line, doc, first in docs:
        if doc is not None:  # else an empty document
            ms, es = to_manifests(doc, path, line, first)
            manifests += ms
            errors += es
    return manifests, errors


def _parse_documents(path: str, text: str) -> tuple[list[Manifest], list[ManifestError]]:
    manifests: list[Manifest] = []
    errors: list[ManifestError] = []
    for start, chunk in split_documents(text):
        try:
            doc = _load(chunk)
        except yaml.YAMLError as e:
            errors.append(_yaml_error(path, start, e))
            continue
        except _AliasBomb as e:
            errors.append(ManifestError(path, _first_content_line(chunk, start), str(e)))
            continue
        except RecursionError:
            errors.append(ManifestError(path, _first_content_line(chunk, start),
                                        "YAML nested too deeply for a Kubernetes object"))
            continue
        if doc is None:
            continue  # an empty document
        ms, es = to_manifests(doc, path, _first_content_line(chunk, start), start)
        manifests += ms
        errors += es
    return manifests, errors


def split_documents(text: str) -> list[tuple[int, str]]:
    """``(first line number, text)`` of each YAML document in a stream.

    Splitting on ``---`` at column 0 lets one bad document be reported
    without losing the others, and gives each its line. A marker can only
    stand at column 0 outside a quoted scalar, and block scalars are indented.
    """
    docs: list[tuple[int, str]] = []
    current: list[str] = []
    start = 1
    for n, line in enumerate(text.splitlines(keepends=True), 1):
        if line.startswith("---") and (len(line) == 3 or line[3] in " \t\r\n"):
            if current:
                docs.append((start, "".join(current)))
            # Blank out the marker but keep what follows it on the same line,
            # and its columns, so marks still point at the right place.
            current = ["   " + line[3:]]
            start = n
        elif line.startswith("...") and (len(line) == 3 or line[3] in " \t\r\n"):
            if current:
                docs.append((start, "".join(current)))
            current = []
            start = n + 1
        else:
            if not current:
                start = n
            current.append(line)
    if current:
        docs.append((start, "".join(current)))
    return docs


class _AliasBomb(Exception):
    pass


_T = "tag:yaml.org,2002:"
_STR, _SEQ, _MAP = _T + "str", _T + "seq", _T + "map"
_MERGE_KEYS = (goyaml.MERGE,)
# Values of plain scalars repeat a lot across a tree (keys above all), and
# resolving one runs regular expressions in Python: (tag, value) by text.
_RESOLVED: dict[str, tuple[str, Any]] = {}
# Plain scalars that YAML 1.1 readers take otherwise than kubectl: what to say.
_DIFFERS: dict[str, str] = {}
_MAY_DIFFER = frozenset("yYnNoOtTfF~.+-0123456789=<")


def _resolved(value: str) -> tuple[str, Any]:
    hit = _RESOLVED.get(value)
    if hit is None:
        hit = goyaml.resolve(value)
        if len(value) < 100:
            if len(_RESOLVED) > 100_000:
                _RESOLVED.clear()
            _RESOLVED[value] = hit
    return hit


class _CachingLoader(_Loader):  # type: ignore[misc,valid-type]
    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is not yaml.ScalarNode:
            return super().resolve(kind, value, implicit)  # type: ignore[no-any-return]
        if not implicit[0]:
            return _STR  # quoted: always a string
        if value not in _RESOLVED and value[:1] in _MAY_DIFFER:
            # Once per distinct text that YAML 1.1 may read otherwise (other
            # first letters are strings to both): compare the two readings.
            message = goyaml.differs(super().resolve(kind, value, implicit), value)
            if message:
                _DIFFERS[value] = message
        return _resolved(value)[0]  # as go-yaml (kubectl) resolves it, not YAML 1.1


def _load(chunk: str) -> Any:
    loader = _CachingLoader(chunk)
    try:
        node = loader.get_single_node()
        return None if node is None else _construct(loader, node)
    finally:
        loader.dispose()


def _construct(loader: Any, root: yaml.Node) -> Any:
    """A composed document to plain data: dicts, lists, str, int, float, bool, None.

    PyYAML's own constructor is generic and spends most of a read; this one
    knows only what JSON (and so a Kubernetes object) can hold, refuses other
    tags, keeps timestamps as strings (as kubectl does), and shares aliased
    collections, checking afterwards that they do not expand into a bomb.
    """
    memo: dict[int, Any] = {}
    aliased = False
    repeated: list[tuple[str, int]] = []  # (key, 0-based line in the loader's text)
    meanings: list[tuple[int, str]] = []  # (0-based line, what go-yaml reads otherwise)

    def build(node: yaml.Node) -> Any:
        nonlocal aliased
        cls = node.__class__
        if cls is yaml.ScalarNode:
            if not node.style and node.value in _DIFFERS:  # plain: None, or "" from libyaml
                meanings.append((node.start_mark.line, _DIFFERS[node.value]))
            return node.value if node.tag == _STR else _scalar(loader, node)
        key = id(node)
        if key in memo:
            aliased = True
            return memo[key]
        if cls is yaml.SequenceNode and node.tag == _SEQ:
            seq: list[Any] = []
            memo[key] = seq  # before the items: an alias may point back here
            seq.extend([build(item) for item in node.value])
            return seq
        if cls is yaml.MappingNode and node.tag == _MAP:
            mapping: dict[Any, Any] = {}
            memo[key] = mapping
            fill(node, mapping)
            return mapping
        raise _unsupported(node)

    def fill(node: yaml.MappingNode, mapping: dict[Any, Any], merged: bool = False) -> None:
        for k, v in node.value:
            if k.__class__ is yaml.ScalarNode and k.tag == _STR:
                key = k.value
            elif k.tag in _MERGE_KEYS:  # "<<: *base": rare, let PyYAML merge
                loader.flatten_mapping(node)
                mapping.clear()
                fill(node, mapping, merged=True)
                return
            else:
                key = _key(build(k), node, k)
            if key in mapping and not merged:  # merged keys may be overridden
                repeated.append((key, k.start_mark.line))
            mapping[key] = build(v)

    doc = build(root)
    if aliased:
        _check_expansion(doc)
        # kubectl sends each alias as its own copy; shared dicts would let a
        # namespace set on one place appear in another.
        doc = _unshare(doc)
    if (repeated or meanings) and isinstance(doc, dict):
        doc[_NOTES] = (repeated, meanings)  # taken off again by to_manifests
    return doc


def _key(key: Any, node: yaml.Node, k: yaml.Node) -> str:
    """A mapping key as JSON has it: ``y: 1`` is ``"true": 1`` to kubectl."""
    if isinstance(key, str):
        return key
    text = goyaml.key_text(key)
    if text is None:
        raise yaml.constructor.ConstructorError(
            "while constructing a mapping", node.start_mark,
            "found a key that is not a string, number or boolean", k.start_mark)
    return text


_NOTES = object()  # a key no YAML text can produce


def _unshare(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _unshare(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unshare(v) for v in node]
    return node


def _scalar(loader: Any, node: yaml.ScalarNode) -> Any:
    tag = node.tag
    if tag == _T + "timestamp":
        return node.value  # kubectl reads an unquoted date as a string too
    if tag == _T + "null":
        return None
    if tag not in _SCALARS:
        raise _unsupported(node)
    hit = _RESOLVED.get(node.value) or goyaml.resolve(node.value)
    if hit[0] == tag:
        return hit[1]
    ok, value = goyaml.explicit(tag, node.value)  # an explicit tag, as go-yaml takes it
    if not ok:
        # Not quoted: the document is unread, so it may be a Secret's value;
        # the line and column say where it is.
        raise yaml.constructor.ConstructorError(
            None, None, f"cannot read the value as {_short(tag)}", node.start_mark)
    return value


_SCALARS = (goyaml.BOOL, goyaml.INT, goyaml.FLOAT)


def _short(tag: str) -> str:
    return "!!" + tag.removeprefix(_T) if tag.startswith(_T) else tag


def _unsupported(node: yaml.Node) -> yaml.YAMLError:
    return yaml.constructor.ConstructorError(
        None, None, f"unsupported YAML tag {_short(node.tag)} on a {node.id}: a Kubernetes "
        "object holds only mappings, lists, strings, numbers, booleans and null",
        node.start_mark)


def _check_expansion(doc: Any) -> None:
    """Aliases share nodes when loaded; count them as if expanded, once each."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in memo:
            return memo[key]
        if key in active:
            raise _AliasBomb("YAML alias refers to a node that contains it (a recursive "
                             "structure no Kubernetes object can hold)")
        active.add(key)
        if isinstance(node, dict):
            n = 1 + sum(size(k) + size(v) for k, v in node.items())
        else:
            n = 1 + sum(size(v) for v in node)
        active.discard(key)
        if n > MAX_EXPANDED_NODES:
            raise _AliasBomb(f"YAML aliases expand to more than {MAX_EXPANDED_NODES:,} nodes "
                             "(an alias bomb?); write the values out instead")
        memo[key] = n
        return n

    size(doc)


def _first_content_line(chunk: str, start: int) -> int:
    for i, line in enumerate(chunk.splitlines()):
        s = line.strip()
        if s and not s.startswith("#"):
            return start + i
    return start


def _yaml_error(path: str, start: int, e: yaml.YAMLError) -> ManifestError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    msg = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    if mark is None:
        return ManifestError(path, start, msg)
    return ManifestError(path, start + mark.line, f"{msg} at column {mark.column + 1}")


def _parse_json(path: str, text: str) -> tuple[list[Manifest], list[ManifestError]]:
    if not text.strip():
        return [], []
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        return [], [ManifestError(path, e.lineno, f"invalid JSON: {e.msg} at column {e.colno}")]
    except RecursionError:
        return [], [ManifestError(path, 1, "JSON nested too deeply for a Kubernetes object")]
    return to_manifests(doc, path, 1)


def to_manifests(doc: Any, path: str, line: int, first_line: int = 1) \
        -> tuple[list[Manifest], list[ManifestError]]:
    """One loaded document to objects: a ``List`` is expanded into its items.
    ``first_line``: the file line of the loader's first line (for repeated keys)."""
    notes = doc.pop(_NOTES, None) if isinstance(doc, dict) else None
    ms, es = _to_manifests(doc, path, line)
    if notes:
        for m in ms:
            m.repeated_keys = [(key, first_line + at) for key, at in notes[0]]
            m.go_meanings = [(first_line + at, message) for at, message in notes[1]]
    return ms, es


def _to_manifests(doc: Any, path: str, line: int) -> tuple[list[Manifest], list[ManifestError]]:
    if not isinstance(doc, dict):
        what = "a list" if isinstance(doc, list) else f"a {type(doc).__name__} scalar"
        return [], [ManifestError(path, line, f"document is {what}, not a Kubernetes object "
                                  "(expected a mapping with apiVersion, kind, metadata)")]
    kind = doc.get("kind")
    # As kubectl: a kind ending in List whose items are objects, of any group
    # (rbac.authorization.k8s.io/v1 RoleBindingList), is a list.
    items = doc.get("items")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list) \
            and all(isinstance(i, dict) for i in items):
        out: list[Manifest] = []
        errs: list[ManifestError] = []
        for item in doc["items"]:
            ms, es = _to_manifests(item, path, line)
            out += ms
            errs += es
        return out, errs
    problem = _missing_fields(doc)
    if problem:
        return [], [ManifestError(path, line, problem)]
    return [Manifest(doc, path, line)], []


def _missing_fields(doc: dict[str, Any]) -> str | None:
    missing = [k for k in ("apiVersion", "kind") if not isinstance(doc.get(k), str) or not doc[k]]
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        missing.append("metadata.name")
    elif meta.get("name") is not None and not isinstance(meta["name"], str):
        return (f"metadata.name is {json.dumps(meta['name'])}, not a string (as kubectl reads "
                "it); quote the name")
    elif not isinstance(meta.get("name"), str) or not meta["name"]:
        if meta.get("generateName") and order.is_hook(doc):
            return None  # a hook is created, not applied: the server makes its name
        if meta.get("generateName"):
            return ("metadata.generateName without metadata.name: apply cannot use "
                    "generateName; give it a name (or make it a hook, which is created)")
        missing.append("metadata.name")
    elif "namespace" in meta and meta["namespace"] is not None \
            and not isinstance(meta["namespace"], str):
        return "metadata.namespace must be a string"
    if missing:
        return f"missing required field{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
    return None


# --- kustomizations: rendered by kustomize.py, loaded only when a tree has one ----

def top_kustomizations(paths: Iterable[str]) -> list[str]:
    """Kustomization files of the top-most directories holding one."""
    top: dict[str, str] = {}
    # By directory, so a parent comes before the directories inside it.
    for p in sorted((p for p in paths if posixpath.basename(p) in KUSTOMIZATION_FILES),
                    key=posixpath.dirname):
        d = posixpath.dirname(p)
        if not any(_inside(d + "/x", t) for t in top):
            top[d] = p
    return list(top.values())


def _inside(path: str, directory: str) -> bool:
    return not directory or path.startswith(directory + "/")


def _render_kustomizations(src: Source, kfiles: list[str], ctx: RenderContext) \
        -> tuple[list[Manifest], list[ManifestError]]:
    """The objects of each kustomization (by its file's path), rendered by
    :func:`kustomize.render`: SOPS values put back in memory, chart hooks
    of ``helmCharts:`` left out as for ``helm:``."""
    if not kfiles:
        return [], []
    from kubectl_gitops.source import kustomize  # noqa: PLC0415

    rendered, errors = kustomize.render(src, kfiles, ctx)
    manifests: list[Manifest] = []
    for out in rendered:
        ms, es = parse_file(out.kfile, out.output)
        for m in ms:
            m.line = 0  # lines of rendered output mean nothing to the author
        ms = _decrypted(ms, out.secrets, ctx)
        manifests += _without_hooks(out.kfile, ms) if out.helm else ms
        errors += es
    return manifests, errors


def _decrypted(manifests: list[Manifest], table: dict[str, Any],
               ctx: RenderContext) -> list[Manifest]:
    """Rendered objects with their ``sops`` metadata dropped and, when
    decrypting, every ENC[...] value replaced by its plaintext."""
    from kubectl_gitops.source import sops  # noqa: PLC0415

    for m in manifests:
        if isinstance(m.obj.get("sops"), dict):
            del m.obj["sops"]
            if ctx.decrypt:
                m.obj = sops.substitute(m.obj, table)
            else:
                m.encrypted = True
    return manifests


def _without_hooks(kfile: str, manifests: list[Manifest]) -> list[Manifest]:
    """A chart's hooks and tests, which kustomize's helm renders too, are not
    applied, as for ``helm:`` (see helm.py)."""
    from kubectl_gitops.source import helm  # noqa: PLC0415

    kept, hooks = [], []
    for m in manifests:
        hook = helm.hook_of(m.obj)
        if hook is None:
            kept.append(m)
        elif not all(e.startswith("test") for e in hook.split(",")):
            hooks.append(f"{m} ({hook})")
    helm.hooks_note(kfile, hooks)
    return kept


def repeated_key_errors(manifests: list[Manifest]) -> list[ManifestError]:
    """A repeated mapping key: kubectl refuses the file, so diff and sync do."""
    return [ManifestError(m.path, at, f"duplicate key {json.dumps(key)}: kubectl refuses a "
                          "mapping that repeats a key; keep one", obj=str(m))
            for m in manifests for key, at in m.repeated_keys]


def load(src: Source) -> list[Manifest]:
    """Read and parse; raise every problem together."""
    manifests, errors = read(src)
    if errors:
        raise ManifestErrors(errors)
    return manifests
