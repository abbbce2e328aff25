"""``.gitops.yaml``: the settings a revision carries at its repository root.

Read from the same place as the manifests (a commit, the index or the
working tree), so an old commit brings its own settings. Every key is
optional; an unknown key is an error, never ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kubectl_gitops.errors import ConfigError
from kubectl_gitops.source import git

if TYPE_CHECKING:
    from kubectl_gitops.source.helm import Spec as HelmSpec
    from kubectl_gitops.source.ignore import Rule

CONFIG_FILE = ".gitops.yaml"

Mode = Literal["commit", "worktree", "index"]


@dataclass(frozen=True)
class RepoConfig:
    """``.gitops.yaml`` at the repo root; every key is optional."""

    path: str | None = None
    name: str | None = None
    namespace: str | None = None
    exclude: tuple[str, ...] = ()
    ignore: tuple[Rule, ...] = ()  # fields other controllers own (see ignore.py)
    force_conflicts: bool = True  # false: refuse instead of taking drifted fields back
    helm: HelmSpec | None = None  # a chart to render (helm.py)
    # Flux's healthCheckExprs entries (apiVersion, kind, current, inProgress, failed).
    health_checks: tuple[dict[str, str], ...] = ()
    depends_on: tuple[Dependency, ...] = ()  # apps to wait for
    targets: tuple[Target, ...] = ()  # a fleet: the clusters this app goes to


@dataclass(frozen=True)
class Target:
    """One entry of ``targets:``: a cluster (a kubeconfig context, or every
    context matching ``context_pattern``) the app is synced to, with what
    differs there. ``path``, ``namespace`` and ``app`` may hold
    ``{{name}}`` and ``{{context}}`` (see :func:`Target.expand`)."""

    name: str  # "" for a pattern entry: each match is named after its context
    where: str  # ".gitops.yaml: targets[1]", for errors
    context: str | None = None
    context_pattern: str | None = None
    path: str | None = None
    namespace: str | None = None
    app: str | None = None  # the app (ApplySet) name there; default the app's
    labels: tuple[tuple[str, str], ...] = ()
    wave: int = 0

    def expand(self, context: str) -> Target:
        """This entry for one context: the name and templates filled in."""
        name = self.name or context

        def fill(text: str | None) -> str | None:
            if text is None:
                return None
            return _TEMPLATE.sub(lambda m: name if m.group(1) == "name" else context, text)

        return Target(name=name, where=self.where, context=context, path=fill(self.path),
                      namespace=fill(self.namespace), app=fill(self.app), labels=self.labels,
                      wave=self.wave)


@dataclass(frozen=True)
class Dependency:
    """An app this one waits for: its name, and its namespace (None: this app's)."""

    name: str
    namespace: str | None = None

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


def load(root: Path, data: bytes | None = None) -> RepoConfig:
    """Parse ``.gitops.yaml`` (from ``data`` when given, else the work tree)."""
    import yaml  # noqa: PLC0415

    if data is None:
        cfg = root / CONFIG_FILE
        if not cfg.is_file():
            return RepoConfig()
        data = cfg.read_bytes()
    try:
        doc = yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{CONFIG_FILE}{line}: not valid YAML") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"{CONFIG_FILE}: expected a mapping of path, name, namespace, exclude")
    unknown = set(doc) - {"path", "name", "namespace", "exclude", "ignore", "forceConflicts",
                          "helm", "healthCheckExprs", "dependsOn", "targets"}
    if unknown:
        raise ConfigError(f"{CONFIG_FILE}: unknown key(s) {', '.join(sorted(unknown))}")
    exclude = doc.get("exclude") or []
    if isinstance(exclude, str):
        exclude = [exclude]
    for key in ("path", "name", "namespace"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise ConfigError(f"{CONFIG_FILE}: {key} must be a string")
    force = doc.get("forceConflicts", True)
    if not isinstance(force, bool):
        raise ConfigError(f"{CONFIG_FILE}: forceConflicts must be true or false")
    return RepoConfig(path=doc.get("path"), name=doc.get("name"),
                      namespace=doc.get("namespace"), exclude=tuple(map(str, exclude)),
                      ignore=_ignore_rules(doc.get("ignore")), force_conflicts=force,
                      helm=_helm_spec(doc.get("helm")),
                      health_checks=_health_checks(doc.get("healthCheckExprs")),
                      depends_on=_depends_on(doc.get("dependsOn")),
                      targets=_targets(doc.get("targets")))


def _helm_spec(doc: object) -> HelmSpec | None:
    if doc is None:
        return None
    from kubectl_gitops.source import helm  # noqa: PLC0415 - only for a Helm app

    return helm.parse_spec(doc, CONFIG_FILE)


def _ignore_rules(doc: object) -> tuple[Rule, ...]:
    if doc is None:
        return ()
    from kubectl_gitops.source import ignore  # noqa: PLC0415 - the hook rarely needs it

    try:
        return ignore.parse(doc, CONFIG_FILE)
    except ValueError as e:
        raise ConfigError(str(e)) from None


_EXPR_KEYS = ("apiVersion", "kind", "current", "inProgress", "failed")


def _mappings(doc: object, key: str, keys: tuple[str, ...]) \
        -> Iterator[tuple[str, dict[Any, Any]]]:
    """``key``'s entries, each with where it is (``.gitops.yaml: key[0]``):
    a list of mappings of ``keys`` only."""
    if not isinstance(doc, list):
        raise ConfigError(f"{CONFIG_FILE}: {key} must be a list of mappings of "
                          f"{', '.join(keys)}")
    for i, entry in enumerate(doc):
        at = f"{CONFIG_FILE}: {key}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at}: expected a mapping of {', '.join(keys)}")
        unknown = set(entry) - set(keys)
        if unknown:
            raise ConfigError(f"{at}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        yield at, entry


def _health_checks(doc: object) -> tuple[dict[str, str], ...]:
    """``healthCheckExprs`` in Flux's format; its shape only (compiling the
    expressions needs the CEL library, which waits until health is read)."""
    if doc is None:
        return ()
    out: list[dict[str, str]] = []
    seen: dict[tuple[str, str], str] = {}
    for at, entry in _mappings(doc, "healthCheckExprs", _EXPR_KEYS):
        for key, value in entry.items():
            if not isinstance(value, str):
                raise ConfigError(f"{at}: {key} must be a string")
        if not entry.get("apiVersion"):
            raise ConfigError(f"{at}: apiVersion is required")
        if not entry.get("current"):
            raise ConfigError(f"{at}: current is required (the expression that is true "
                              "when the object is ready)")
        version = entry["apiVersion"]
        gk = (version.rpartition("/")[0] if "/" in version else "", entry.get("kind", ""))
        if gk in seen:
            raise ConfigError(f"{at}: a second check for {gk[1] or 'every kind'} of group "
                              f"{gk[0] or 'core'} (the first is {seen[gk].split(': ')[1]})")
        seen[gk] = at
        out.append({k: v for k, v in entry.items() if v})
    return tuple(out)


def _depends_on(doc: object) -> tuple[Dependency, ...]:
    """``dependsOn: [{name, namespace}]``, as Flux writes it."""
    if doc is None:
        return ()
    out: list[Dependency] = []
    for at, entry in _mappings(doc, "dependsOn", ("name", "namespace")):
        name, namespace = entry.get("name"), entry.get("namespace")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{at}: name is required (the app to wait for)")
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            raise ConfigError(f"{at}: namespace must be a string")
        out.append(Dependency(name, namespace))
    return tuple(out)


_TEMPLATE = re.compile(r"\{\{\s*(name|context)\s*\}\}")
_TARGET_KEYS = ("name", "context", "contextPattern", "path", "namespace", "appName", "labels",
                "wave")
_TARGET_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def _targets(doc: object) -> tuple[Target, ...]:
    """``targets:``, each a context (or a ``contextPattern``) and what
    differs there; every problem is one line naming the entry."""
    if doc is None:
        return ()
    out: list[Target] = []
    names: dict[str, str] = {}
    for at_, entry in _mappings(doc, "targets", _TARGET_KEYS):
        name = entry.get("name")
        shown = name or entry.get("context")
        label = f"{at_} ({shown})" if isinstance(shown, str) and shown else at_
        for key in ("name", "context", "contextPattern", "path", "namespace", "appName"):
            if entry.get(key) is not None and (not isinstance(entry[key], str) or not entry[key]):
                raise ConfigError(f"{label}: {key} must be a non-empty string")
        context, pattern = entry.get("context"), entry.get("contextPattern")
        if bool(context) == bool(pattern):
            raise ConfigError(f"{label}: give either context (a kubeconfig context) or "
                              "contextPattern (e.g. \"prod-*\"), not "
                              + ("both" if context else "neither"))
        if pattern and name:
            raise ConfigError(f"{label}: a contextPattern entry names each target after its "
                              "context; remove name")
        if context and not name:
            name = context
        if name and not _TARGET_NAME.match(name):
            raise ConfigError(f"{label}: name {name!r} is not a valid target name (letters, "
                              "digits, '-', '_' and '.')")
        if name in names:
            raise ConfigError(f"{label}: a second target named {name} (the first is "
                              f"{names[name]})")
        if name:
            names[name] = at_.split(": ")[1]
        wave = entry.get("wave", 0)
        if isinstance(wave, bool) or not isinstance(wave, int):
            raise ConfigError(f"{label}: wave must be an integer")
        labels = entry.get("labels") or {}
        if not isinstance(labels, dict) or not all(
                isinstance(k, str) and isinstance(v, (str, int, float, bool))
                for k, v in labels.items()):
            raise ConfigError(f"{label}: labels must be a mapping of names to values")
        out.append(Target(name=name or "", where=label, context=context,
                          context_pattern=pattern, path=entry.get("path"),
                          namespace=entry.get("namespace"), app=entry.get("appName"),
                          labels=tuple(sorted((k, _label_value(v)) for k, v in labels.items())),
                          wave=wave))
    return tuple(out)


def _label_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def at(root: Path, mode: Mode, sha: str | None, index_file: str | None = None) -> RepoConfig:
    """The settings of a commit (``sha``), the index or the working tree."""
    if mode == "worktree":
        return load(root)
    spec = f"{sha}:{CONFIG_FILE}" if mode == "commit" else f":{CONFIG_FILE}"
    env = {"GIT_INDEX_FILE": index_file} if index_file and mode == "index" else None
    proc = git.run(["cat-file", "blob", spec], cwd=root, check=False, env=env)
    return load(root, proc.stdout) if proc.returncode == 0 else RepoConfig()
