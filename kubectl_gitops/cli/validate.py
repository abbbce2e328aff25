"""``git gitops validate``, ``git gitops install-hooks`` and the pre-commit hook
(``gitops-pre-commit``, what an installed hook runs)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import click

from kubectl_gitops import exitcodes
from kubectl_gitops.cli.common import (cluster_options, handle_errors, pick_path, run,
                                       source_options)
from kubectl_gitops.errors import UsageError
from kubectl_gitops.versions import KUBERNETES_VERSION

if TYPE_CHECKING:  # the loader is imported only once a cluster is needed
    from kubectl_gitops.kube.kubeconfig import Overrides

BYPASS = "commit blocked; fix and `git add` the files, or bypass with git commit --no-verify"

_CONTEXT = {"help_option_names": ["-h", "--help"]}


def _schema_options(fn: Any) -> Any:
    fn = click.option("--ignore-missing-schemas", is_flag=True,
                      envvar="KUBECTL_GITOPS_IGNORE_MISSING_SCHEMAS",
                      help="Let kinds with neither a built-in schema nor a CRD pass "
                           "(as kubeconform).")(fn)
    return click.option("--kubernetes-version", metavar="VERSION", default=KUBERNETES_VERSION,
                        envvar="KUBECTL_GITOPS_KUBERNETES_VERSION", show_default=True,
                        help="Check built-in kinds against this release's schemas.")(fn)


@click.command("validate", context_settings=_CONTEXT)
@click.argument("args", nargs=-1, metavar="[FILE...|PATH]", type=click.Path())
@click.option("--staged", is_flag=True, help="Validate the index: exactly what would be "
                                             "committed (what the pre-commit hook does).")
@source_options(positional_path=False)
@cluster_options
@_schema_options
@click.option("--cluster", "use_cluster", is_flag=True,
              help="Also run a server-side dry-run of every object against the cluster.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@handle_errors
def command(args: tuple[str, ...], staged: bool, path: str | None, repo: str | None,
            ref: str | None, working_tree: bool, name: str | None, cluster: Overrides,
            namespace: str | None, kubernetes_version: str,
            ignore_missing_schemas: bool, use_cluster: bool, output: str) -> int:
    """Validate manifests: syntax, names, duplicates, strict schemas, CRDs.

    \b
    git gitops validate --staged          the index (what the hook checks)
    git gitops validate [PATH]            PATH at --ref (default HEAD)
    git gitops validate --working-tree    uncommitted files
    git gitops validate a.yaml b.yaml     these files as they are on disk

    Exit status: 0 valid, 1 invalid, 2 error.
    """
    from kubectl_gitops.validate import checks  # noqa: PLC0415 - keeps --help fast

    files, path = _split_args(args, path, staged or working_tree or bool(ref))
    opts = checks.Options(kubernetes_version=kubernetes_version, namespace=namespace,
                          ignore_missing_schemas=ignore_missing_schemas)
    if use_cluster:
        from kubectl_gitops.engine.app import connect  # noqa: PLC0415

        opts.kube = connect(cluster)
    if files:
        result = checks.validate_files(files, opts, repo=repo)
    else:
        kw = {"repo": repo, "path": path, "name": name, "namespace": namespace}
        src = checks.staged_source(**kw) if staged else \
            _resolve(ref=ref, working_tree=working_tree, **kw)
        result = checks.validate_source(src, opts)
    _print(result, output)
    return exitcodes.OK if result.valid else exitcodes.INVALID


def _resolve(**kw: Any) -> Any:
    from kubectl_gitops.source import tree  # noqa: PLC0415

    return tree.resolve(**kw)


def _split_args(args: tuple[str, ...], path: str | None,
                source_chosen: bool) -> tuple[list[str], str | None]:
    """One directory is PATH (as for diff and sync); otherwise files."""
    if len(args) == 1 and os.path.isdir(args[0]):
        return [], pick_path(args[0], path)
    if any(os.path.isdir(a) for a in args):
        raise UsageError("give either one directory (PATH) or files, not both")
    if args and (path or source_chosen):
        raise UsageError("files are read from disk: they cannot be combined with "
                               "--path, --ref, --staged or --working-tree")
    return list(args), path


def _print(result: Any, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return
    for p in result.problems:
        click.echo(p.render(), err=True)
    what = f"{_n(result.objects, 'object')} in {_n(result.files, 'file')}"
    if result.problems:
        click.echo(f"invalid: {_n(len(result.problems), 'problem')} in {what}", err=True)
        return
    extra = ""
    if result.dry_run is not None:
        skipped = len(result.dry_run["skipped"])
        extra = f"; server-side dry-run of {_n(result.dry_run['checked'], 'object')}" + \
            (f", {skipped} skipped until their Namespace or CRD exists" if skipped else "")
    click.echo(f"valid: {what} ({result.source}, Kubernetes {result.schemas} schemas{extra})")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def main() -> None:
    run(command, "git gitops validate")


# --- install-hooks ---------------------------------------------------------------

@click.command("install-hooks", context_settings=_CONTEXT)
@click.option("--uninstall", is_flag=True, help="Remove the hook and restore the one it "
                                                "replaced.")
@click.option("--repo", metavar="DIR", help="The git repository (default: the one "
                                            "containing the current directory).")
@handle_errors
def install_hooks_command(uninstall: bool, repo: str | None) -> int:
    """Install the pre-commit hook that validates the staged manifests.

    Respects core.hooksPath, is idempotent, and keeps an existing pre-commit
    hook: it is renamed and still runs first.
    """
    from kubectl_gitops.source import git  # noqa: PLC0415
    from kubectl_gitops.validate import hooks  # noqa: PLC0415

    root = git.toplevel(repo)
    click.echo(hooks.uninstall(root) if uninstall else hooks.install(root))
    return exitcodes.OK


# --- the hook ----------------------------------------------------------------------

@click.command("gitops-pre-commit", context_settings=_CONTEXT)
@_schema_options
def hook_command(kubernetes_version: str, ignore_missing_schemas: bool) -> int:
    """Validate the staged manifests under PATH; a failure blocks the commit.

    Installed by `git gitops install-hooks`; options can also be set through
    KUBECTL_GITOPS_KUBERNETES_VERSION and KUBECTL_GITOPS_IGNORE_MISSING_SCHEMAS.
    """
    rc = _hook(kubernetes_version, ignore_missing_schemas)
    if rc not in (exitcodes.OK, exitcodes.INVALID):
        click.echo(f"kubectl-gitops: the pre-commit hook failed; {BYPASS}", err=True)
    return rc


@handle_errors
def _hook(kubernetes_version: str, ignore_missing_schemas: bool) -> int:
    from kubectl_gitops.validate import checks  # noqa: PLC0415

    src = checks.staged_source()
    changed = checks.staged_paths(src)
    if not checks.staged_changes_matter(src, changed) or not checks.path_in_index(src):
        return exitcodes.OK
    result = checks.validate_source(src, checks.Options(
        kubernetes_version=kubernetes_version, ignore_missing_schemas=ignore_missing_schemas),
        changed=changed)
    if result.valid:
        return exitcodes.OK
    for p in result.problems:
        click.echo(p.render(), err=True)
    under = f" under {src.path}/" if src.path else ""
    click.echo(f"kubectl-gitops: {_n(len(result.problems), 'problem')} in the staged "
               f"manifests{under}", err=True)
    click.echo(BYPASS, err=True)
    return exitcodes.INVALID


def hook_main() -> None:
    run(hook_command, "gitops-pre-commit")
