"""Install and remove the pre-commit hook (``kubectl_gitops/validate/git_hooks/pre-commit``).

The hooks directory is git's own answer (``git rev-parse --git-path hooks``),
so ``core.hooksPath`` and linked worktrees are respected. Installing is
idempotent; a pre-commit hook that is already there is renamed to
``pre-commit.kubectl-gitops-chained`` and run first by ours, and uninstalling
puts it back.
"""

from __future__ import annotations

import os
import shlex
import sys
from importlib import metadata, resources
from pathlib import Path

from kubectl_gitops.errors import GitError
from kubectl_gitops.source import git

HOOK = "pre-commit"
CHAINED = "pre-commit.kubectl-gitops-chained"
MARKER = b"# kubectl-gitops pre-commit hook"
# Package data, read through importlib.resources: the same lookup works in a
# checkout, a venv, a --user install, pipx and a system install (a path under
# sys.prefix does not: --user installs data under ~/.local instead).
TEMPLATE = resources.files("kubectl_gitops.validate") / "git_hooks" / "pre-commit"
# No kubectl- prefix: kubectl would list it as a plugin (`kubectl pre-commit`)
# and complete a bogus subcommand from it.
ENTRY_POINT = "gitops-pre-commit"


def hooks_dir(root: Path) -> Path:
    out = git.out(["rev-parse", "--git-path", "hooks"], cwd=root)
    return Path(out) if os.path.isabs(out) else root / out


def script() -> str:
    """The hook, pointing at the entry point of the installation running this."""
    try:
        text = TEMPLATE.read_text(encoding="utf-8")
    except OSError as e:
        raise GitError(f"{TEMPLATE}: the hook template is missing ({e.strerror}); "
                       "reinstall kubectl-gitops") from e
    exe = installed_script(ENTRY_POINT)
    return text.replace("\nexe=''\n", f"\nexe={shlex.quote(str(exe))}\n", 1)


def installed_script(name: str) -> Path:
    """Where pip put this distribution's console script ``name``.

    Read from the installation's own record, because the scripts directory is
    not always beside the interpreter: ``pip install --user`` puts them in
    ~/.local/bin while sys.executable is the system's Python.
    """
    try:
        files = metadata.distribution("kubectl-gitops").files or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == name and f.parent.name in ("bin", "Scripts"):
            return Path(os.path.normpath(f.locate()))
    return Path(sys.executable).parent / name


def is_ours(hook: Path) -> bool:
    try:
        return hook.is_file() and MARKER in hook.read_bytes()
    except OSError:
        return False


def install(root: Path) -> str:
    """Install (or refresh) the hook; a message saying what was done."""
    d = hooks_dir(root)
    hook, chained = d / HOOK, d / CHAINED
    text = script()
    where = _show(root, hook)
    if is_ours(hook):
        if hook.read_text(encoding="utf-8", errors="replace") == text:
            return f"the kubectl-gitops pre-commit hook is already installed at {where}"
        _write(hook, text)
        return f"updated the kubectl-gitops pre-commit hook at {where}"
    kept = ""
    if hook.exists() or hook.is_symlink():
        if chained.exists() or chained.is_symlink():
            raise GitError(f"{where} and {_show(root, chained)} both exist; move one of them "
                           "away, then run install-hooks again")
        _rename(hook, chained)
        kept = f"; the previous hook still runs first, kept as {_show(root, chained)}"
    _write(hook, text)
    return f"installed the kubectl-gitops pre-commit hook at {where}{kept}"


def uninstall(root: Path) -> str:
    d = hooks_dir(root)
    hook, chained = d / HOOK, d / CHAINED
    where = _show(root, hook)
    if not is_ours(hook):
        return f"no kubectl-gitops pre-commit hook at {where}; nothing to do"
    try:
        hook.unlink()
    except OSError as e:
        raise GitError(f"{where}: cannot remove ({e.strerror})") from e
    if chained.exists() or chained.is_symlink():
        _rename(chained, hook)
        return f"removed the kubectl-gitops pre-commit hook; restored the previous one at {where}"
    return f"removed the kubectl-gitops pre-commit hook from {where}"


def _write(hook: Path, text: str) -> None:
    tmp = hook.with_name(f".{hook.name}.kubectl-gitops-tmp")
    try:
        hook.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o755)
        os.replace(tmp, hook)  # never a half-written hook
    except OSError as e:
        raise GitError(f"{hook}: cannot write the hook ({e.strerror})") from e


def _rename(src: Path, dest: Path) -> None:
    try:
        os.rename(src, dest)
    except OSError as e:
        raise GitError(f"cannot rename {src} to {dest} ({e.strerror})") from e


def _show(root: Path, p: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)
