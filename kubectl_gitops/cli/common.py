"""Shared option sets and the one top-level error handler.

Only the ``cli`` package knows click. Commands get plain values, call the
core and return an exit status from :mod:`kubectl_gitops.exitcodes`.
"""

from __future__ import annotations

import functools
import os
import stat
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from kubectl_gitops import exitcodes
from kubectl_gitops.errors import GitOpsError

F = TypeVar("F", bound=Callable[..., Any])


def _log_dir() -> str:
    """A private per-user directory (XDG base directory spec): never the shared
    temp directory, where anyone can plant the file or a symlink first."""
    state = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):  # the spec says relative values are ignored
        state = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "kubectl-gitops")


LOG_FILE = os.path.join(_log_dir(), "kubectl-gitops.log")


def _compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(fn: F) -> F:
        for d in reversed(decorators):
            fn = d(fn)
        return fn
    return apply


def source_options(*, positional_path: bool = True, ref: bool = True) -> Callable[[F], F]:
    """``[PATH] --path --repo --ref --working-tree --name`` (DESIGN.md)."""
    opts: list[Callable[[F], F]] = []
    if positional_path:
        opts.append(click.argument("path_arg", metavar="[PATH]", required=False))
    opts += [
        click.option("--path", "path", metavar="DIR",
                     help="Directory inside the repo (default: path: from .gitops.yaml, "
                          "else the repo root)."),
        click.option("--repo", metavar="DIR", help="The git repository (default: the one "
                                                   "containing the current directory)."),
    ]
    if ref:
        opts += [
            click.option("--ref", metavar="REV", help="Any commit-ish (default: HEAD)."),
            click.option("--working-tree", is_flag=True,
                         help="Read uncommitted files instead of a commit."),
        ]
    opts.append(click.option("--name", metavar="NAME", help="Application / ApplySet name "
                             "(default: name: from .gitops.yaml, else the remote "
                             "repository's name and the path)."))
    return _compose(*opts)


def cluster_options(fn: F) -> F:
    """``--kubeconfig --context -n/--namespace`` with kubectl's meaning."""
    return _compose(
        click.option("--kubeconfig", metavar="FILE", envvar="KUBECONFIG",
                     help="Path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)."),
        click.option("--context", metavar="NAME", help="The kubeconfig context to use."),
        click.option("-n", "--namespace", metavar="NS", help="Namespace for namespaced "
                     "objects that omit one (default: .gitops.yaml, else the context's)."),
    )(fn)


def pick_path(path_arg: str | None, path: str | None) -> str | None:
    if path_arg and path and path_arg != path:
        raise click.UsageError("give the path either as an argument or as --path, not both")
    return path_arg or path


def kubeconfig_value(value: str | None) -> str | None:
    """$KUBECONFIG may hold several files; the kubernetes loader takes the first."""
    if value and os.pathsep in value:
        return next((p for p in value.split(os.pathsep) if p), None)
    return value


def report(lines: list[str]) -> None:
    for line in lines:
        click.echo(f"error: {line}", err=True)


def handle_errors(fn: Callable[..., int]) -> Callable[..., int]:
    """Turn every failure into one line on stderr and an exit status.

    Tracebacks go to a log file, never to the terminal (set
    KUBECTL_GITOPS_DEBUG=1 to see them).
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return fn(*args, **kwargs)
        except GitOpsError as e:
            _log()
            report(e.lines())
            return e.exit_code
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            return exitcodes.INTERRUPTED
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:
            return exitcodes.OK
        except Exception as e:  # noqa: BLE001 - the one place that catches all
            _log()
            click.echo(f"error: internal error: {type(e).__name__}: {e} "
                       f"(details in {LOG_FILE})", err=True)
            if os.environ.get("KUBECTL_GITOPS_DEBUG"):
                traceback.print_exc()
            return exitcodes.ERROR
    return wrapper


def _log() -> None:
    """Append the current traceback to LOG_FILE: 0600 in a 0700 directory of
    ours, opened without following a symlink; no log rather than an unsafe one."""
    directory = os.path.dirname(LOG_FILE)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            return
        if st.st_mode & 0o077:
            os.chmod(directory, 0o700)
        fd = os.open(LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8", errors="replace") as f:
            os.fchmod(fd, 0o600)
            # No command line: it may carry a --token.
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {os.path.basename(sys.argv[0])}\n"
                    f"{traceback.format_exc()}\n")
    except OSError:
        pass


def run(command: click.Command, prog_name: str, args: list[str] | None = None) -> None:
    """Run a click command; usage errors exit 2 as kubectl and git do."""
    try:
        rc = command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as e:
        rc = e.exit_code
    except click.ClickException as e:
        e.show()
        rc = exitcodes.ERROR
    except click.exceptions.Abort:
        rc = exitcodes.INTERRUPTED
    sys.exit(rc if isinstance(rc, int) else 0)
