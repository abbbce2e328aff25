"""Validation: every problem a manifest can have that is knowable before a
commit, collected and reported together as ``path:line: Kind ns/name: message``.

Checks, in order: reading and YAML/JSON syntax (the core parser), duplicate
mapping keys and tab indentation (which the parser hides or words poorly),
required fields, names Kubernetes would reject, duplicate identities, the
strict schema of built-in kinds for a Kubernetes release, the
``openAPIV3Schema`` of CRDs in the same revision for custom resources, and,
optionally, a server-side dry-run against a cluster.

Nothing here imports the Kubernetes client unless a cluster check is asked
for: the pre-commit hook runs this on every commit.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kubectl_gitops import secrets
from kubectl_gitops.engine import desired
from kubectl_gitops.errors import ClusterError, ManifestError, UsageError
from kubectl_gitops.kube import schema
from kubectl_gitops.source import git, helm, manifests, sops, tree
from kubectl_gitops.source.config import CONFIG_FILE
from kubectl_gitops.source.manifests import Manifest
from kubectl_gitops.source.tree import KUSTOMIZATION_FILES, Source, SourceFile
from kubectl_gitops.versions import KUBERNETES_VERSION

if TYPE_CHECKING:
    from kubectl_gitops.kube.client import Kube

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_CRD = ("apiextensions.k8s.io", "CustomResourceDefinition")


class Problem(ManifestError):
    """A :class:`ManifestError` that also says which check found it."""

    def __init__(self, path: str, line: int | None, message: str, *, obj: str = "",
                 check: str) -> None:
        self.check = check
        super().__init__(path, line, message, obj=obj)

    @classmethod
    def of(cls, e: ManifestError, check: str, *, path: str | None = None) -> Problem:
        return cls(e.path if path is None else path, e.line, e.message, obj=e.obj,
                   check=getattr(e, "check", check))

    def render(self) -> str:
        where = display_path(self.path) + (f":{self.line}" if self.line else "")
        return f"{where}: {self.obj + ': ' if self.obj else ''}{self.message}"

    def to_json(self) -> dict[str, Any]:
        # JSON carries any text, but not bytes that are not UTF-8.
        raw = not any("\udc80" <= c <= "\udcff" for c in self.path)
        return {"path": self.path if raw else display_path(self.path), "line": self.line or None, "object": self.obj or None,
                "check": self.check, "message": self.message}


def display_path(path: str) -> str:
    """A path as one printable line: quoted and C-escaped as git shows it
    when it holds control characters or bytes that are not UTF-8."""
    if path.isprintable():
        return path
    out = []
    for c in path:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif "\udc80" <= c <= "\udcff":  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\{ord(c) - 0xdc00:03o}")
        elif not c.isprintable():
            out.append("".join(f"\\{b:03o}" for b in c.encode("utf-8", "surrogatepass")))
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


@dataclass
class Options:
    kubernetes_version: str = KUBERNETES_VERSION
    ignore_missing_schemas: bool = False
    namespace: str | None = None  # default namespace for objects that omit one
    kube: Kube | None = None  # set: also a server-side dry-run of every object


@dataclass
class Result:
    source: str  # "index", "git@abc1234", "working-tree" or "files"
    path: str
    kubernetes_version: str
    schemas: str  # the schema release used, e.g. "1.37"
    files: int = 0
    objects: int = 0
    problems: list[Problem] = field(default_factory=list)
    dry_run: dict[str, Any] | None = None  # {"checked": n, "skipped": [...]} with a cluster

    @property
    def valid(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "valid": self.valid, "source": self.source, "path": self.path,
            "kubernetesVersion": self.kubernetes_version, "schemas": self.schemas,
            "files": self.files, "objects": self.objects,
            "problems": [p.to_json() for p in self.problems]}
        if self.dry_run is not None:
            doc["cluster"] = self.dry_run
        return doc


# --- entry points --------------------------------------------------------------

def staged_source(**kw: Any) -> Source:
    """The index as a source; in a pre-commit hook, the index git hands over.

    ``git commit -a`` and ``git commit <paths>`` run the hook with
    ``GIT_INDEX_FILE`` naming a temporary index: that, not ``.git/index``, is
    what is being committed. It is honoured only when it lies inside the git
    dir of the repository being validated, so a variable leaked from another
    repository's hook is never applied here.
    """
    src = tree.resolve(staged=True, **kw)
    src.index_file = hook_index_file(src.root)
    return src


def hook_index_file(root: Path) -> str | None:
    value = os.environ.get("GIT_INDEX_FILE")
    if not value:
        return None
    index = Path(value) if os.path.isabs(value) else Path.cwd() / value
    gitdir = Path(git.out(["rev-parse", "--absolute-git-dir"], cwd=root))
    try:
        index.resolve().relative_to(gitdir.resolve())
    except ValueError:
        return None
    return str(index.resolve())


def staged_paths(src: Source) -> list[str]:
    """Every path the commit being made adds, changes or deletes."""
    out = git.run(["diff", "--cached", "--no-ext-diff", "--name-only", "-z", "--no-renames"],
                  cwd=src.root, env=tree.index_env(src)).stdout
    return git.zsplit(out)


# Files of a chart that are not YAML: a change to them renders the chart.
_CHART_SUFFIXES = (".tpl", ".txt", ".helmignore", "Chart.lock", ".tgz")


def staged_changes_matter(src: Source, paths: list[str] | None = None) -> bool:
    """Whether the commit being made touches anything validation looks at:
    ``.gitops.yaml``, ``.sops.yaml``, any YAML/JSON/kustomization file, even
    outside PATH (kustomize bases may live there), or a chart's templates.
    A commit of code alone need not pay for validation; added, changed,
    renamed and deleted files all count."""
    return any(path in (CONFIG_FILE, tree.SOPS_CONFIG) or tree.is_manifest(path)
               or posixpath.basename(path) in KUSTOMIZATION_FILES
               or path.endswith(_CHART_SUFFIXES)
               for path in (staged_paths(src) if paths is None else paths))


def chart_changed(spec: helm.Spec, paths: Iterable[str]) -> bool:
    """Whether a commit changing ``paths`` changes what the chart renders:
    its files (a chart in git), its values files, or ``.gitops.yaml``."""
    local = spec.chart if spec.kind == "local" else None
    return any(p == CONFIG_FILE or p in spec.values_files
               or (local is not None and (p == local or p.startswith(local + "/")))
               for p in paths)


def path_in_index(src: Source) -> bool:
    """Whether PATH holds anything in the index; a repo whose configured path
    does not exist yet has nothing for the hook to validate."""
    if not src.path:
        return True
    out = git.run(["ls-files", "-z", "--", src.path], cwd=src.root,
                  env=tree.index_env(src)).stdout
    return bool(out)


def render_context(src: Source, opts: Options, changed: list[str] | None = None) \
        -> helm.RenderContext:
    """Charts render offline, with the schema release as the Kubernetes
    version; SOPS files are checked, never decrypted (the hook has no key).
    ``changed``: render only the charts these paths change (the hook)."""
    ctx = helm.RenderContext.offline(src, opts.kubernetes_version, decrypt=False)
    if changed is not None:
        ctx.only = lambda spec: chart_changed(spec, changed)
    return ctx


def validate_source(src: Source, opts: Options, *, changed: list[str] | None = None) -> Result:
    """Validate everything under a source (a commit, the index, the work tree);
    with ``changed`` (the hook), charts render only when these paths touch them."""
    files, unreadable = src.read_files()
    parsed, errors = manifests.read(src, files, render=render_context(src, opts, changed))
    errors += sops_policy(src, files, parsed)
    errors = [Problem.of(e, "symlink") for e in unreadable] + errors
    result = _result(src.revision, src.path, opts, len(files))
    where = {"commit": "in this revision", "index": "in the index",
             "worktree": "in the work tree"}[src.mode]
    _check(result, files, parsed, errors, opts, src, where=where, display={}, crd_source=None)
    return result


def validate_files(paths: Iterable[str], opts: Options, *, repo: str | None = None) -> Result:
    """Validate the named files as they are on disk (what the pre-commit
    framework passes). Files under a kustomization are validated by rendering
    it; files outside the repo's configured ``path:`` or excluded by
    ``.gitops.yaml`` are skipped (they are not this repo's manifests); CRDs
    are looked up in the files and, when missing, in the repo's work tree."""
    src, in_repo = _files_source(repo)
    display: dict[str, str] = {}
    files: list[SourceFile] = []
    for given in paths:
        rel = _relative(src.root, given)
        if not _wanted(src, rel):
            continue
        display[rel] = given
        if posixpath.basename(rel) in KUSTOMIZATION_FILES:
            continue  # read below, with the directory it renders
        try:
            files.append(SourceFile(rel, Path(given).read_bytes()))
        except OSError as e:
            raise UsageError(f"{given}: cannot read ({e.strerror or e})") from e
    files += _kustomizations_above(src.root, list(display))
    parsed, errors = manifests.read(src, files, render=render_context(src, opts))
    errors += sops_policy(src, files, parsed)
    result = _result("files", src.path, opts, len(display))
    _check(result, files, parsed, errors, opts, src,
           where="among these files or in the work tree" if in_repo else "among these files",
           display=display, crd_source=src if in_repo else None)
    return result


# --- the checks ----------------------------------------------------------------

def _result(label: str, path: str, opts: Options, nfiles: int) -> Result:
    schemas, _ = schema.schema_dir(opts.kubernetes_version)
    return Result(source=label, path=path, kubernetes_version=opts.kubernetes_version,
                  schemas=schemas, files=nfiles)


def _check(result: Result, files: list[SourceFile], parsed: list[Manifest],
           errors: list[ManifestError], opts: Options, src: Source, *, where: str,
           display: dict[str, str], crd_source: Source | None) -> None:
    """Run every check on what was read; ``crd_source``: where to look for
    CRDs that the files themselves lack."""
    docs = _Documents(files)
    problems = [Problem.of(docs.reword(e), _read_check(e)) for e in errors]
    mapper = desired.offline_mapper(parsed)
    default_ns = desired.default_namespace(src, opts.namespace, opts.kube)
    resolved, id_errors = desired.resolve(parsed, mapper, default_ns, unknown_kinds_ok=True)
    problems += [Problem.of(e, "identity") for e in id_errors]
    problems += docs.duplicate_keys(parsed)
    problems += [Problem(m.path, line, _HIDDEN_MEANING if secrets.is_secret(m.obj) else message,
                         obj=str(m), check="yaml-meaning")
                 for m in parsed for line, message in m.go_meanings if m.line]
    builtin = schema.BuiltinSchemas(opts.kubernetes_version)
    crds = _Crds(parsed, builtin, crd_source)
    release = schema.minor(opts.kubernetes_version)
    for m in resolved:
        problems += _names(m, docs, release)
        if not m.encrypted:  # ENC[...] values fit no schema; sops.check looked at them
            problems += _schema(m, builtin, crds, opts, docs, where)
    result.objects = len(parsed)
    if opts.kube is not None:
        more, result.dry_run = _dry_run(opts.kube, resolved, parsed)
        problems += more
    problems = _hide_secret_values(problems, parsed)
    problems = [Problem.of(p, p.check, path=display.get(p.path, p.path)) for p in problems]
    problems.sort(key=lambda p: (p.path, p.line or 0))
    result.problems = _quote_paths_in_messages(problems, [f.path for f in files])


def sops_policy(src: Source, files: list[SourceFile], parsed: list[Manifest]) \
        -> list[ManifestError]:
    """Files ``.sops.yaml`` (at the repo root) requires encrypted that are
    not: a plaintext Secret, or any file a rule's ``path_regex`` names."""
    config = src.read(tree.SOPS_CONFIG)
    if config is None:
        return []
    rules = sops.rules(config)
    secret_at = {m.path: m.line for m in parsed if secrets.is_secret(m.obj) and not m.encrypted}
    values = [(p, src.read(p)) for p in (src.helm.values_files if src.helm else ())]
    problems = []
    for path, data in [(f.path, f.data) for f in files] + values:
        if data is None or sops.encrypted(data):
            continue
        if sops.must_encrypt(rules, path, path in secret_at):
            what = "a plaintext Secret" if path in secret_at else "a plaintext file"
            problems.append(Problem(path, secret_at.get(path) or None, f"{what} where "
                                    f"{tree.SOPS_CONFIG} requires encryption; encrypt it "
                                    "with sops --encrypt --in-place", check="sops"))
    return problems


def _hide_secret_values(problems: list[Problem], parsed: list[Manifest]) -> list[Problem]:
    """No problem shows a value of a Secret read from the same file: validate
    and the hook print straight into CI logs."""
    by_file: dict[str, list[dict[str, Any]]] = {}
    for m in parsed:
        if secrets.is_secret(m.obj):
            by_file.setdefault(m.path, []).append(m.obj)
    if not by_file:
        return problems
    out = []
    for p in problems:
        message = p.message
        for obj in by_file.get(p.path, []):
            message = secrets.redact(message, obj)
        out.append(p if message == p.message else
                   Problem(p.path, p.line, message, obj=p.obj, check=p.check))
    return out


# The message names the scalar; in a Secret it may be a value.
_HIDDEN_MEANING = ("a plain scalar here means one thing to kubectl (go-yaml) and another to "
                   "YAML 1.1 readers; quote it if you mean a string")


def _quote_paths_in_messages(problems: list[Problem], paths: list[str]) -> list[Problem]:
    """"also defined at <path>" must stay on one line, as the paths do."""
    odd = [p for p in paths if not p.isprintable()]
    if not odd:
        return problems
    out = []
    for p in problems:
        message = p.message
        for path in odd:
            message = message.replace(path, display_path(path))
        out.append(Problem(p.path, p.line, message, obj=p.obj, check=p.check))
    return out


def _read_check(e: ManifestError) -> str:
    return "required-fields" if e.message.startswith("missing required field") else "syntax"


# -- documents: duplicate keys, tabs, and the line of a field ---------------------

class _Documents:
    """The YAML node trees of the files, composed once, for what the
    parser's Python objects no longer show: repeated keys, and the line on
    which a field stands."""

    def __init__(self, files: list[SourceFile]) -> None:
        self.data = {f.path: f.data for f in files}
        self._nodes: dict[str, list[tuple[int, yaml.Node]]] = {}

    def nodes(self, path: str) -> list[tuple[int, yaml.Node]]:
        """(line of the root node, root) of each document that parses."""
        if path not in self._nodes:
            self._nodes[path] = list(self._compose(self.data.get(path, b"")))
        return self._nodes[path]

    @staticmethod
    def _compose(data: bytes) -> Iterator[tuple[int, yaml.Node]]:
        if len(data) > manifests.MAX_FILE_BYTES or b"\0" in data:
            return  # the parser has reported it
        try:
            text = data.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError:
            return
        for start, chunk in manifests.split_documents(text):
            try:
                node = yaml.compose(chunk, Loader=_Loader)  # noqa: S506 - composes only
            except yaml.YAMLError:
                continue  # a syntax error, reported by the parser
            if node is not None:
                yield start + node.start_mark.line, node

    def duplicate_keys(self, parsed: list[Manifest]) -> list[Problem]:
        objects = {(m.path, m.line): str(m) for m in parsed}
        problems = []
        for path in self.data:
            if not _is_data_file(path):
                continue
            for line, root in self.nodes(path):
                offset = line - root.start_mark.line
                for key, at, first in _repeated_keys(root):
                    problems.append(Problem(
                        path, offset + at, f"duplicate key {json.dumps(key)} (first at line "
                        f"{offset + first}); only the last value would be kept",
                        obj=objects.get((path, line), ""), check="duplicate-key"))
        return problems

    def reword(self, e: ManifestError) -> ManifestError:
        """A syntax error on a tab-indented line says so plainly."""
        if not e.line or not e.message.startswith("invalid YAML"):
            return e
        lines = self.data.get(e.path, b"").split(b"\n")
        text = lines[e.line - 1] if e.line <= len(lines) else b""
        indent = text[:len(text) - len(text.lstrip(b" \t"))]
        column = indent.find(b"\t") + 1
        if not column:
            return e
        return ManifestError(e.path, e.line, f"tab character in indentation at column "
                             f"{column}; YAML indents with spaces only", obj=e.obj)

    def line_of(self, m: Manifest, field_path: str) -> int:
        """The line of ``field_path`` (or of its nearest existing parent)."""
        root = next((n for line, n in self.nodes(m.path) if line == m.line), None) \
            if m.line else None
        if root is None:
            return m.line
        offset = m.line - root.start_mark.line
        node: yaml.Node | None = root
        best = root.start_mark.line
        for seg in _segments(field_path):
            found = _child(node, seg) if node is not None else None
            if found is None:
                break  # a missing field: the line of its parent
            best, node = found
        return offset + best


def _is_data_file(path: str) -> bool:
    return path.endswith(tree.MANIFEST_SUFFIXES)


def _repeated_keys(root: yaml.Node) -> Iterator[tuple[str, int, int]]:
    """(key, line, line of its first occurrence) of every repeated key."""
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue  # an alias: walked once (and an alias bomb stays cheap)
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != _MERGE_TAG:
                    key = (k.tag, k.value)
                    if key in first:
                        yield k.value, k.start_mark.line, first[key]
                    else:
                        first[key] = k.start_mark.line
                stack.append(v)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


_SEGMENT = re.compile(r"\[(\d+)\]|\[([^\]]*)\]|\.?([^.\[]+)")


def _segments(field_path: str) -> list[str | int]:
    segs: list[str | int] = []
    for index, key, prop in _SEGMENT.findall(field_path):
        segs.append(int(index) if index else key or prop)
    return segs


def _child(node: yaml.Node, seg: str | int) -> tuple[int, yaml.Node] | None:
    """(line to report, node) one step down; a field's line is its key's."""
    if isinstance(node, yaml.SequenceNode) and isinstance(seg, int):
        if seg < len(node.value):
            return node.value[seg].start_mark.line, node.value[seg]
    elif isinstance(node, yaml.MappingNode):
        # The last of repeated keys is the one the parser kept.
        for k, v in reversed(node.value):
            if isinstance(k, yaml.ScalarNode) and k.value == str(seg):
                return k.start_mark.line, v
    return None


# -- names --------------------------------------------------------------------

_L = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAME_RULES: dict[str, tuple[re.Pattern[str], int, str]] = {
    "subdomain": (re.compile(rf"{_L}(\.{_L})*\Z"), 253, "a valid DNS-1123 subdomain (lowercase "
                  "letters, digits, '-' and '.', starting and ending with a letter or digit)"),
    "label": (re.compile(rf"{_L}\Z"), 63, "a valid DNS-1123 label (lowercase letters, digits "
              "and '-', starting and ending with a letter or digit)"),
    "dns1035": (re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z"), 63, "a valid DNS-1035 label "
                "(lowercase letters, digits and '-', starting with a letter and ending with a "
                "letter or digit)"),
    "segment": (re.compile(r"(?!\.\.?\Z)[^/%]+\Z"), 253, "a valid path segment (no '/' or '%', "
                "not '.' or '..')"),
}
# What Kubernetes' validation (pkg/apis/*/validation) requires of
# metadata.name, where it is not a DNS-1123 subdomain (the rule for every
# other kind, custom ones included).
_NAME_RULE_OF = {("", "Namespace"): "label", ("apps", "StatefulSet"): "label",
                 **{("rbac.authorization.k8s.io", k): "segment"
                    for k in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")}}
# Service names were DNS-1035 labels until RelaxedServiceNameValidation
# (beta, on by default, in 1.36) let them be DNS-1123 labels.
_RELAXED_SERVICE_NAMES = (1, 36)
# A CronJob's name plus the 11 characters of its Jobs' suffix must fit a label.
_CRONJOB_NAME_MAX = 52
_QUALIFIED = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")


def _name_problem(value: str, rule: str) -> str | None:
    rx, limit, what = _NAME_RULES[rule]
    if len(value) > limit:
        return f"{json.dumps(value)} is longer than {limit} characters"
    return None if rx.match(value) else f"{json.dumps(value)} is not {what}"


def _key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or _name_problem(prefix, "subdomain")):
        return "not a valid key: the prefix before '/' must be a DNS-1123 subdomain"
    if len(name) > 63 or not _QUALIFIED.match(name):
        return ("not a valid key: at most 63 letters, digits, '-', '_' or '.', starting and "
                "ending with a letter or digit, after an optional DNS subdomain prefix and '/'")
    return None


def _name_rule(group: str, kind: str, release: tuple[int, int]) -> str:
    if (group, kind) == ("", "Service"):
        return "label" if release >= _RELAXED_SERVICE_NAMES else "dns1035"
    return _NAME_RULE_OF.get((group, kind), "subdomain")


def _names(m: Manifest, docs: _Documents, release: tuple[int, int]) -> list[Problem]:
    found: list[tuple[str, str]] = []
    meta = m.obj["metadata"]
    # A hook with only generateName: the server makes the name.
    msg = _name_problem(m.name, _name_rule(m.group, m.kind, release)) if m.name else None
    if not msg and (m.group, m.kind) == ("batch", "CronJob") and len(m.name) > _CRONJOB_NAME_MAX:
        msg = f"{json.dumps(m.name)} is longer than {_CRONJOB_NAME_MAX} characters (a CronJob's)"
    if msg:
        found.append(("metadata.name", msg))
    if isinstance(meta.get("namespace"), str) and meta["namespace"]:
        msg = _name_problem(meta["namespace"], "label")
        if msg:
            found.append(("metadata.namespace", msg))
    for what in ("labels", "annotations"):
        entries = meta.get(what)
        for key, value in entries.items() if isinstance(entries, dict) else ():
            msg = _key_problem(key) if isinstance(key, str) else None
            if msg:
                found.append((f"metadata.{what}[{key}]", msg))
            elif what == "labels" and isinstance(value, str) and \
                    (len(value) > 63 or not _LABEL_VALUE.match(value)):
                found.append((f"metadata.labels[{key}]", f"{json.dumps(value)} is not a valid "
                              "label value (at most 63 letters, digits, '-', '_' or '.', "
                              "starting and ending with a letter or digit)"))
    if (m.group, m.kind) == _CRD:
        found += _crd_name(m)
    return [Problem(m.path, docs.line_of(m, p), f"{p}: {msg}", obj=str(m), check="name")
            for p, msg in found]


def _crd_name(m: Manifest) -> list[tuple[str, str]]:
    spec = m.obj.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("names"), dict):
        return []
    plural, group = spec["names"].get("plural"), spec.get("group")
    if isinstance(plural, str) and isinstance(group, str) and m.name != f"{plural}.{group}":
        return [("metadata.name", f"a CustomResourceDefinition must be named "
                 f"<spec.names.plural>.<spec.group>: {plural}.{group}")]
    return []


# -- schemas ------------------------------------------------------------------

# Past this many, one object's remaining schema problems are summed up.
MAX_PROBLEMS_PER_OBJECT = 25


@dataclass
class _Crd:
    name: str
    location: str
    schemas: dict[str, Any]  # version -> openAPIV3Schema (None: none given)


class _Crds:
    """CRDs in the revision (and, for loose files, in the work tree)."""

    def __init__(self, parsed: list[Manifest], builtin: schema.BuiltinSchemas,
                 worktree: Source | None) -> None:
        self.builtin = builtin
        self.table = _crd_table(parsed)
        self._worktree = worktree
        self._checks: dict[tuple[str, str, str], schema.Check | None] = {}

    def lookup(self, group: str, kind: str) -> _Crd | None:
        if (group, kind) not in self.table and self._worktree is not None:
            self.table = {**_crd_table(_worktree_crds(self._worktree)), **self.table}
            self._worktree = None  # looked once
        return self.table.get((group, kind))

    def check(self, crd: _Crd, group: str, version: str, kind: str) -> schema.Check | None:
        key = (group, version, kind)
        if key not in self._checks:
            raw = crd.schemas.get(version)
            self._checks[key] = schema.crd_check(raw, self.builtin.object_meta()) \
                if isinstance(raw, dict) else None
        return self._checks[key]


def _crd_table(parsed: Iterable[Manifest]) -> dict[tuple[str, str], _Crd]:
    table: dict[tuple[str, str], _Crd] = {}
    for m in parsed:
        spec = m.obj.get("spec")
        if (m.group, m.kind) != _CRD or not isinstance(spec, dict):
            continue
        names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
        group, kind = spec.get("group"), names.get("kind")
        if not isinstance(group, str) or not isinstance(kind, str):
            continue  # its own schema check reports the malformed CRD
        versions = {}
        for v in spec.get("versions") or []:
            if isinstance(v, dict) and isinstance(v.get("name"), str):
                sch = v.get("schema") if isinstance(v.get("schema"), dict) else {}
                versions[v["name"]] = sch.get("openAPIV3Schema")
        table[(group, kind)] = _Crd(m.name, m.location, versions)
    return table


def _worktree_crds(src: Source) -> list[Manifest]:
    # Only files that can hold a CRD are parsed: this runs in a commit hook.
    found: list[Manifest] = []
    for f in src.read_files()[0]:  # a bad link is reported where it is read
        if b"CustomResourceDefinition" in f.data:
            found += manifests.parse_file(f.path, f.data)[0]
    return found


def _schema(m: Manifest, builtin: schema.BuiltinSchemas, crds: _Crds, opts: Options,
            docs: _Documents, where: str) -> list[Problem]:
    check = builtin.lookup(m.group, m.version, m.kind)
    if check is None:
        crd = crds.lookup(m.group, m.kind)
        if crd is None:
            return [] if opts.ignore_missing_schemas else \
                [Problem(m.path, m.line, _missing(m, builtin, where), obj=str(m),
                         check="missing-schema")]
        if m.version not in crd.schemas:
            return [Problem(m.path, m.line, f"apiVersion {m.api_version}: the "
                            f"CustomResourceDefinition {crd.name} ({crd.location}) has no "
                            f"version {m.version}; it has {', '.join(crd.schemas) or 'none'}",
                            obj=str(m), check="schema")]
        check = crds.check(crd, m.group, m.version, m.kind)
        if check is None:
            return []  # the CRD gives no schema for this version: anything goes
    found: list[tuple[str, str]] = []
    check(m.obj, "", found)
    if secrets.is_secret(m.obj):
        found = [(path, secrets.redact_field_message(msg) if secrets.value_field(path) else msg)
                 for path, msg in found]
    problems = [Problem(m.path, docs.line_of(m, path), f"{path}: {msg}" if path else msg,
                        obj=str(m), check="schema")
                for path, msg in found[:MAX_PROBLEMS_PER_OBJECT]]
    if len(found) > MAX_PROBLEMS_PER_OBJECT:
        problems.append(Problem(m.path, m.line, f"and {len(found) - MAX_PROBLEMS_PER_OBJECT} "
                                "more schema problems in this object", obj=str(m),
                                check="schema"))
    return problems


def _missing(m: Manifest, builtin: schema.BuiltinSchemas, where: str) -> str:
    release = f"Kubernetes {builtin.version}"
    served = builtin.api_versions(m.kind)
    if builtin.has_group(m.group) or (served and "." not in m.group):
        has = f"serves {m.kind} only as {', '.join(served)}" if served else \
            f"has no kind {m.kind} in {m.api_version}"
        return (f"no schema for {m.kind} in {m.api_version}: {release} {has}; fix apiVersion/"
                "kind, set --kubernetes-version to the cluster's release, or pass "
                "--ignore-missing-schemas")
    return (f"no schema for {m.kind} in {m.api_version}: not a built-in kind of {release} and "
            f"no CustomResourceDefinition for it {where} (add the CRD, or pass "
            "--ignore-missing-schemas)")


# -- the cluster ----------------------------------------------------------------

def _dry_run(kube: Kube, resolved: list[Manifest], parsed: list[Manifest]) \
        -> tuple[list[Problem], dict[str, Any]]:
    """A server-side apply dry-run of every object: admission, defaults and
    the cluster's own CRDs. Objects whose Namespace or CRD the revision
    itself creates cannot be tried before they exist, and are skipped."""
    tree_namespaces = {m.name for m in parsed if (m.group, m.kind) == ("", "Namespace")}
    tree_kinds = set(desired.crd_types(parsed))
    mapper = kube.mapper()
    skipped: list[str] = []

    def one(m: Manifest) -> Problem | None:
        rtype = mapper.lookup(m.group, m.kind)
        if rtype is None:
            if (m.group, m.kind) in tree_kinds:
                skipped.append(str(m))
                return None
            return Problem(m.path, m.line, f"the cluster serves no kind {m.kind} in "
                           f"{m.api_version}", obj=str(m), check="cluster")
        try:
            kube.apply(rtype, json.loads(json.dumps(m.obj, default=str)), dry_run=True)
        except ClusterError as e:
            if e.status is None or e.status == 401 or e.status >= 500:
                raise  # the cluster, not the object: exit status 2
            if e.status == 404 and m.namespace in tree_namespaces:
                skipped.append(str(m))
                return None
            return Problem(m.path, m.line, "server-side dry-run: "
                           f"{secrets.redact(e.message, m.obj)}", obj=str(m),
                           check="cluster")
        return None

    problems = [p for p in kube.map(one, resolved) if p is not None]
    return problems, {"checked": len(resolved) - len(skipped), "skipped": sorted(skipped)}


# -- loose files ----------------------------------------------------------------

def _files_source(repo: str | None) -> tuple[Source, bool]:
    """A work-tree source for loose files, and whether it is a repository:
    the repo around them when there is one (for .gitops.yaml, kustomize and
    CRDs), else the current directory."""
    try:
        return tree.resolve(repo=repo, working_tree=True), True
    except git.GitError:
        if repo is not None:
            raise
        return Source(root=Path.cwd(), path="", mode="worktree", ref="", sha=None, name="",
                      namespace=None), False


def _relative(root: Path, given: str) -> str:
    full = Path(given).absolute()
    try:
        return full.relative_to(root.absolute()).as_posix()
    except ValueError:
        try:
            return full.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return given  # outside the repo: its own name, no kustomize lookup


def _wanted(src: Source, rel: str) -> bool:
    if posixpath.basename(rel) == CONFIG_FILE:
        return False  # settings, not objects
    inside = not src.path or rel.startswith(src.path + "/")
    return inside and src.wanted(rel)


def _kustomizations_above(root: Path, rels: list[str]) -> list[SourceFile]:
    """The kustomization files of directories holding (or above) the files,
    so the core renders those directories instead of parsing parts of them."""
    found: dict[str, SourceFile] = {}
    for rel in rels:
        if rel.startswith("/") or rel.startswith(".."):
            continue
        d = posixpath.dirname(rel)
        while True:
            for name in KUSTOMIZATION_FILES:
                k = posixpath.join(d, name)
                if k not in found and (root / k).is_file():
                    found[k] = SourceFile(k, (root / k).read_bytes())
            if not d:
                break
            d = posixpath.dirname(d)
    return list(found.values())
