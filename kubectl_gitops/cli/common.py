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
    opts.append(click.option("--decryption-key-file", metavar="FILE", expose_value=False,
                             type=click.Path(exists=True, dir_okay=False),
                             callback=_decryption_key_file,
                             help="The age key that decrypts SOPS files (default: "
                                  "$SOPS_AGE_KEY_FILE)."))
    return _compose(*opts)


def _decryption_key_file(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """sops reads its key from the environment: set it for the sops this
    run starts (and for a sync that ``rollback --sync`` runs)."""
    if value:
        os.environ["SOPS_AGE_KEY_FILE"] = os.path.abspath(value)


_CLUSTER_PARAMS = ("kubeconfig", "context", "cluster_name", "user", "server", "token",
                   "as_user", "as_groups", "as_uid", "certificate_authority",
                   "client_certificate", "client_key", "tls_server_name",
                   "insecure_skip_tls_verify", "request_timeout", "verbosity")


def cluster_options(fn: F) -> F:
    """kubectl's connection flags, with kubectl's meaning.

    The command gets ``namespace`` and ``cluster`` (a
    :class:`kubectl_gitops.kube.kubeconfig.Overrides`) instead of the individual
    flags; ``app.connect(cluster)`` turns it into a connection.
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from kubectl_gitops.kube.kubeconfig import Overrides  # noqa: PLC0415 - keeps --help fast

        values = {name: kwargs.pop(name, None) for name in _CLUSTER_PARAMS}
        values["cluster"] = values.pop("cluster_name")
        values["as_groups"] = tuple(values["as_groups"] or ())
        values["insecure_skip_tls_verify"] = bool(values["insecure_skip_tls_verify"])
        values["verbosity"] = values["verbosity"] or 0
        return fn(*args, cluster=Overrides(**values), **kwargs)

    # A command's own option of the same name wins (validate's --cluster flag).
    taken = {o for p in getattr(fn, "__click_params__", []) for o in p.opts}
    return _compose(*[click.option(*decls, **kw) for decls, kw in _CONNECTION_FLAGS
                      if not taken & set(decls)])(wrapper)  # type: ignore[arg-type,return-value]


_CONNECTION_FLAGS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--kubeconfig",), {"metavar": "FILE", "help": "Path to the kubeconfig file (default: "
                         "the files in $KUBECONFIG, else ~/.kube/config, else the pod's "
                         "service account)."}),
    (("--context",), {"metavar": "NAME", "help": "The kubeconfig context to use."}),
    (("--cluster", "cluster_name"), {"metavar": "NAME", "help": "The kubeconfig cluster to "
                                     "use (instead of the context's)."}),
    (("--user",), {"metavar": "NAME",
                   "help": "The kubeconfig user to use (instead of the context's)."}),
    (("-n", "--namespace"), {"metavar": "NS", "help": "Namespace for namespaced objects that "
                             "omit one (default: .gitops.yaml, else the context's)."}),
    (("-s", "--server"), {"metavar": "URL", "help": "The API server's address."}),
    (("--token",), {"metavar": "TOKEN", "help": "Bearer token for the API server."}),
    (("--as", "as_user"), {"metavar": "USER", "help": "Act as this user (impersonation)."}),
    (("--as-group", "as_groups"), {"metavar": "GROUP", "multiple": True,
                                   "help": "Act with this group (repeat for several)."}),
    (("--as-uid",), {"metavar": "UID", "help": "Act with this UID."}),
    (("--certificate-authority",), {"metavar": "FILE", "help": "A CA certificate file to "
                                    "verify the server with."}),
    (("--client-certificate",), {"metavar": "FILE",
                                 "help": "A client certificate file for TLS."}),
    (("--client-key",), {"metavar": "FILE", "help": "A client key file for TLS."}),
    (("--tls-server-name",), {"metavar": "NAME", "help": "The name to verify the server's "
                              "certificate against (default: the server's host)."}),
    (("--insecure-skip-tls-verify",), {"is_flag": True, "help": "Do not verify the server's "
                                       "certificate (insecure)."}),
    (("--request-timeout",), {"metavar": "DURATION", "callback": lambda c, p, v:
                              parse_timeout(c, p, v),
                              "help": "How long one request may take (e.g. 30s, 1m; 0: no "
                                      "limit; default 30s)."}),
    (("-v", "--v", "verbosity"), {"type": click.IntRange(0, 10), "default": 0, "metavar": "N",
                                  "help": "Log level; 6 and above log each request (method, "
                                          "URL, status, duration)."}),
]


def fleet_options(*, waves: bool = False) -> Callable[[F], F]:
    """``--fleet --target NAME -l SELECTOR --max-parallel N`` (and, for
    sync, ``--continue-on-error``)."""
    def apply(fn: F) -> F:
        opts = [
            click.option("--fleet", is_flag=True, help="Every target of targets: in "
                         ".gitops.yaml, each in its own cluster (see \"Fleets\")."),
            click.option("--target", "targets", metavar="NAME", multiple=True,
                         help="Only this target of the fleet (repeat for several)."),
            click.option("-l", "--selector", metavar="SELECTOR", help="Only the targets "
                         "whose labels match (env=prod,region!=us)."),
            click.option("--max-parallel", type=click.IntRange(1, 256), default=8,
                         show_default=True, help="Targets at once."),
        ]
        if waves:
            opts.append(click.option("--continue-on-error", is_flag=True, help="With "
                                     "waves of targets: go on to the next wave although a "
                                     "target failed (default: stop there)."))
        for opt in reversed(opts):
            fn = opt(fn)
        return fn
    return apply


def fleet_hint(src: Any) -> None:
    """A fleet's repository read whole for one cluster is rarely meant: say so."""
    if src.targets and not src.path:
        click.echo("note: .gitops.yaml declares targets: and no path:, so this reads the "
                   "whole repository for one cluster; use --target NAME or --fleet",
                   err=True)


def parse_timeout(_ctx: click.Context | None, param: click.Parameter | None,
                  value: str | None) -> float | None:
    """A click callback: kubectl's duration forms (``30s``, ``1m30s``, ``0``) as seconds."""
    if value is None:
        return None
    from kubectl_gitops import durations  # noqa: PLC0415

    try:
        return durations.parse(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param=param) from None


def pick_path(path_arg: str | None, path: str | None) -> str | None:
    if path_arg and path and path_arg != path:
        raise click.UsageError("give the path either as an argument or as --path, not both")
    return path_arg or path


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
                import traceback  # noqa: PLC0415 - only after a bug

                traceback.print_exc()
            return exitcodes.ERROR
    return wrapper


def _log() -> None:
    """Append the current traceback to LOG_FILE: 0600 in a 0700 directory of
    ours, opened without following a symlink; no log rather than an unsafe one."""
    import traceback  # noqa: PLC0415 - only after an error

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
    _dump_modules()
    sys.exit(rc if isinstance(rc, int) else 0)


MODULES_ENV = "KUBECTL_GITOPS_DUMP_MODULES"


def _dump_modules() -> None:
    """With ``$KUBECTL_GITOPS_DUMP_MODULES`` set to a file, write the names of
    the modules the run imported there, one a line: the start-up budget test
    counts them."""
    target = os.environ.get(MODULES_ENV)
    if target:
        with open(target, "w", encoding="utf-8") as f:
            f.write("".join(f"{name}\n" for name in sorted(sys.modules)))
