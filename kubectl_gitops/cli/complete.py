"""Shell completion: the ``__complete`` protocol kubectl uses for plugins.

kubectl completes ``kubectl gitops <args>`` by running the executable
``kubectl_complete-gitops <args> <word>`` (``kubectl_complete-gitops-diff``
for ``kubectl gitops diff``) and reading cobra's format: one candidate a line,
``value<TAB>description``, then ``:<directive>``. ``kubectl-gitops __complete``
and ``git-gitops __complete`` answer the same way, for the scripts that
``kubectl gitops completion bash|zsh|fish`` prints (``git gitops``, and the
executables run directly).

Commands and options come from the click commands themselves (each module is
imported only when its words are being completed); values from where they
live: contexts from the kubeconfig, revisions from git, application names
from the ApplySet parents in the cluster (one LIST, short timeout).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import click

from kubectl_gitops import exitcodes
from kubectl_gitops.cli.common import handle_errors

# cobra's ShellCompDirective bits.
NO_SPACE = 2
NO_FILE = 4
FILTER_DIRS = 16
# A TAB press must not hang on a slow cluster.
CLUSTER_TIMEOUT = 3.0

Candidates = list[tuple[str, str]]


def complete(group: click.Group, words: list[str], incomplete: str) -> tuple[Candidates, int]:
    """Candidates for ``incomplete`` after ``words`` (the words after the group)."""
    if not words:
        if incomplete.startswith("-"):
            return _option_names(group, [], incomplete), NO_FILE
        table: dict[str, tuple[str, str]] = getattr(group, "table", {})
        return [(n, short) for n, (_, short) in table.items() if n.startswith(incomplete)], \
            NO_FILE
    cmd = group.get_command(click.Context(group), words[0])
    if cmd is None:
        return [], NO_FILE
    return complete_command(cmd, words[1:], incomplete)


def complete_command(cmd: click.Command, words: list[str],
                     incomplete: str) -> tuple[Candidates, int]:
    if incomplete.startswith("--") and "=" in incomplete:
        name, _, partial = incomplete.partition("=")
        opt = _option(cmd, name)
        if opt is None or opt.is_flag:
            return [], NO_FILE
        found, directive = _values(opt, words, partial)
        return [(f"{name}={v}", d) for v, d in found], directive
    if words and (opt := _option(cmd, words[-1])) is not None and not opt.is_flag \
            and not opt.count:
        return _values(opt, words[:-1], incomplete)
    if incomplete.startswith("-"):
        return _option_names(cmd, words, incomplete), NO_FILE
    return _positional(cmd, words, incomplete)


def _option(cmd: click.Command, name: str) -> click.Option | None:
    for p in cmd.params:
        if isinstance(p, click.Option) and name in (*p.opts, *p.secondary_opts):
            return p
    return None


def _option_names(cmd: click.Command, words: list[str], incomplete: str) -> Candidates:
    used = set(words)
    out: Candidates = []
    # The command's context_settings name the help options (-h as well as --help).
    params = [*cmd.params, cmd.get_help_option(click.Context(cmd, **cmd.context_settings))]
    for p in params:
        if not isinstance(p, click.Option) or p.hidden:
            continue
        names = [*p.opts, *p.secondary_opts]
        if not p.multiple and used & set(names):
            continue
        long_names = [n for n in names if n.startswith("--")] or names
        for n in (long_names if incomplete.startswith("--") else names):
            if n.startswith(incomplete):
                out.append((n, _first_line(p.help or "")))
    return out


def _first_line(text: str) -> str:
    return text.strip().split("\n")[0].split(". ")[0].rstrip(".")


def _positional(cmd: click.Command, words: list[str],
                incomplete: str) -> tuple[Candidates, int]:
    args = [p for p in cmd.params if isinstance(p, click.Argument)]
    if not args:
        return [], NO_FILE
    arg = args[0]
    if arg.name == "rev":
        return _refs(words, incomplete), NO_FILE
    if arg.name == "path_arg":
        return [], FILTER_DIRS
    return [], 0  # files


def _values(opt: click.Option, words: list[str], partial: str) -> tuple[Candidates, int]:
    if isinstance(opt.type, click.Choice):
        return [(str(c), "") for c in opt.type.choices if str(c).startswith(partial)], NO_FILE
    finder = _VALUE_FINDERS.get(opt.name or "")
    if finder is not None:
        return [(v, d) for v, d in finder(words, partial) if v.startswith(partial)], NO_FILE
    if opt.metavar == "DIR":
        return [], FILTER_DIRS
    if opt.metavar == "FILE" or isinstance(opt.type, (click.Path, click.File)):
        return [], 0
    return [], NO_FILE


# --- where values come from -------------------------------------------------------

def _flag(words: list[str], *names: str) -> str | None:
    """The value given to one of ``names`` among ``words`` (last one wins)."""
    value = None
    for i, w in enumerate(words):
        for n in names:
            if w == n and i + 1 < len(words):
                value = words[i + 1]
            elif w.startswith(n + "="):
                value = w[len(n) + 1:]
    return value


def _kubeconfig_names(words: list[str], key: str) -> Candidates:
    import yaml  # noqa: PLC0415

    explicit = _flag(words, "--kubeconfig")
    paths = [explicit] if explicit else \
        [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p] or \
        [str(Path.home() / ".kube" / "config")]
    names: dict[str, str] = {}
    for path in paths:
        try:
            doc = yaml.safe_load(Path(path).expanduser().read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        for entry in doc.get(key) or []:
            if isinstance(entry, dict) and entry.get("name"):
                names.setdefault(str(entry["name"]), "")
    return list(names.items())


def _contexts(words: list[str], partial: str) -> Candidates:
    return _kubeconfig_names(words, "contexts")


def _clusters(words: list[str], partial: str) -> Candidates:
    return _kubeconfig_names(words, "clusters")


def _users(words: list[str], partial: str) -> Candidates:
    return _kubeconfig_names(words, "users")


def _refs(words: list[str], partial: str) -> Candidates:
    from kubectl_gitops.errors import GitError  # noqa: PLC0415
    from kubectl_gitops.source import git  # noqa: PLC0415

    try:
        out = git.out(["for-each-ref", "--format=%(refname:short)\t%(subject)",
                       "refs/heads", "refs/tags", "refs/remotes"],
                      cwd=_flag(words, "--repo") or ".")
    except GitError:
        return []
    refs = [tuple(line.split("\t", 1)) for line in out.splitlines() if line]
    return [("HEAD", "the current commit"), *((r[0], r[1] if len(r) > 1 else "") for r in refs)]


def _cluster_list(words: list[str], path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """Items of one LIST (metadata only), or nothing when the cluster does not answer."""
    from kubectl_gitops.errors import GitOpsError  # noqa: PLC0415
    from kubectl_gitops.kube.client import Kube  # noqa: PLC0415
    from kubectl_gitops.kube.kubeconfig import Overrides  # noqa: PLC0415

    try:
        kube = Kube(Overrides(kubeconfig=_flag(words, "--kubeconfig"),
                              context=_flag(words, "--context")), timeout=CLUSTER_TIMEOUT)
        doc = kube.request("GET", path, params=params, accept=(
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"))
    except (GitOpsError, OSError):
        return []
    return list((doc or {}).get("items") or [])


def _applysets(words: list[str], partial: str) -> Candidates:
    """Applications this tool manages: ApplySet parents whose tooling is ours."""
    from kubectl_gitops.engine import applyset  # noqa: PLC0415

    ns = _flag(words, "-n", "--namespace")
    path = f"/api/v1/namespaces/{ns}/configmaps" if ns else "/api/v1/configmaps"
    out: dict[str, str] = {}
    for item in _cluster_list(words, path, {"labelSelector": applyset.ID_LABEL}):
        meta = item.get("metadata") or {}
        tooling = (meta.get("annotations") or {}).get(applyset.TOOLING_ANNOTATION, "")
        if tooling.split("/")[0] == applyset.TOOL_NAME and meta.get("name"):
            out.setdefault(meta["name"], f"namespace {meta.get('namespace', '')}")
    return sorted(out.items())


def _namespaces(words: list[str], partial: str) -> Candidates:
    items = _cluster_list(words, "/api/v1/namespaces", {})
    return [(i["metadata"]["name"], "") for i in items if i.get("metadata", {}).get("name")]


def _fleet_targets(words: list[str], partial: str) -> Candidates:
    """The targets of ``.gitops.yaml`` in the working tree, patterns expanded
    against the kubeconfig's contexts; each described by its context."""
    from kubectl_gitops.engine import fleet  # noqa: PLC0415
    from kubectl_gitops.errors import GitOpsError  # noqa: PLC0415
    from kubectl_gitops.kube import kubeconfig  # noqa: PLC0415
    from kubectl_gitops.source import config, git  # noqa: PLC0415

    try:
        targets = config.at(git.toplevel(_flag(words, "--repo")), "worktree", None).targets
        contexts = kubeconfig.contexts(_flag(words, "--kubeconfig")) \
            if any(t.context_pattern for t in targets) else []
        return [(t.name, f"context {t.context}") for t in fleet.expand(targets, contexts)]
    except (GitOpsError, OSError):
        return []


_VALUE_FINDERS: dict[str, Callable[[list[str], str], Candidates]] = {
    "targets": _fleet_targets,
    "context": _contexts,
    "cluster": _clusters,
    "user": _users,
    "ref": _refs,
    "to": _refs,
    "name": _applysets,
    "namespace": _namespaces,
}


# --- entry points -------------------------------------------------------------------

def answer(group: click.Group, words: list[str]) -> int:
    """Print the candidates for the last of ``words`` in cobra's format."""
    *before, incomplete = words or [""]
    try:
        found, directive = complete(group, before, incomplete)
    except Exception:  # noqa: BLE001 - a TAB press never shows a traceback
        found, directive = [], 1
    lines = [f"{v}\t{d}" if d else v for v, d in found]
    sys.stdout.write("".join(f"{line}\n" for line in lines) + f":{directive}\n")
    return exitcodes.OK


# --- kubectl gitops completion SHELL ----------------------------------------------------

SHELLS = ("bash", "zsh", "fish")


@click.command("completion", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("shell", type=click.Choice(SHELLS))
@handle_errors
def command(shell: str) -> int:
    """Print the completion script for SHELL.

    \b
    bash:  source <(kubectl gitops completion bash)       in ~/.bashrc
    zsh:   source <(kubectl gitops completion zsh)        in ~/.zshrc
    fish:  kubectl gitops completion fish | source        in config.fish

    `kubectl gitops <TAB>` needs only kubectl's own completion (kubectl
    completion SHELL): it asks the installed kubectl_complete-gitops. The
    script adds `git gitops <TAB>` and the kubectl-gitops and git-gitops
    executables run directly.
    """
    click.echo(script(shell), nl=False)
    return exitcodes.OK


def script(shell: str) -> str:
    return (resources.files("kubectl_gitops.cli") / "completion" / f"gitops.{shell}") \
        .read_text(encoding="utf-8")
