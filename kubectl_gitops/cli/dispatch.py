"""``kubectl-gitops`` and ``git-gitops``: dispatchers and help.

kubectl finds ``kubectl-gitops-diff`` for ``kubectl gitops diff`` on its own;
git looks up only the first word, so ``git gitops rollback`` arrives here as
``git-gitops rollback``. Subcommand modules are imported only when chosen, so
``--help`` never pays for the Kubernetes client. The completion entry
points (``kubectl_complete-gitops*``, cobra's ``__complete``) start here too:
:mod:`kubectl_gitops.cli.complete` answers for the groups defined here.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click

from kubectl_gitops import __version__
from kubectl_gitops.cli.common import run

KUBECTL_COMMANDS = {
    "diff": ("kubectl_gitops.cli.diff", "Show how the live cluster differs from a git revision."),
    "sync": ("kubectl_gitops.cli.sync", "Converge the cluster to a git revision (--prune)."),
    "history": ("kubectl_gitops.cli.history", "Show the sync records kept in the cluster."),
    "status": ("kubectl_gitops.cli.status", "An app's state read from the cluster."),
    "ls": ("kubectl_gitops.cli.status", "List the apps this tool manages."),
    "suspend": ("kubectl_gitops.cli.status", "Stop the agent syncing an app."),
    "resume": ("kubectl_gitops.cli.status", "Let the agent sync an app again."),
    "agent": ("kubectl_gitops.cli.agent", "Pull from git and keep apps converged (the agent)."),
    "version": ("kubectl_gitops.cli.version", "Show the tool, git, Python, schema and server "
                                              "versions."),
    "completion": ("kubectl_gitops.cli.complete", "Print the shell completion script "
                                                  "(bash, zsh, fish)."),
}
GIT_COMMANDS = {
    "rollback": ("kubectl_gitops.cli.rollback",
                 "Restore the manifests of an earlier revision as a new commit."),
    "validate": ("kubectl_gitops.cli.validate", "Validate manifests (index, a revision or files)."),
    "install-hooks": ("kubectl_gitops.cli.validate", "Install the pre-commit hook."),
}


class LazyGroup(click.Group):
    def __init__(self, *args: Any, commands_table: dict[str, tuple[str, str]],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.table = commands_table

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.table)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.table:
            return None
        module = importlib.import_module(self.table[cmd_name][0])
        attr = cmd_name.replace("-", "_") + "_command" if cmd_name in (
            "install-hooks", "ls", "suspend", "resume") else "command"
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help is written from the table so that it imports nothing.
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in self.table.items()])


@click.group(cls=LazyGroup, commands_table=KUBECTL_COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kubectl-gitops")
def kubectl_group() -> None:
    """GitOps inside kubectl: git holds the desired state of the cluster.

    \b
    kubectl gitops diff [PATH]          live cluster vs a git revision
    kubectl gitops sync [PATH] --prune  converge the cluster to the revision
    kubectl gitops history              sync records kept in the cluster

    Rollback and validation live in git: see `git gitops --help`.
    """


@click.group(cls=LazyGroup, commands_table=GIT_COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="git-gitops")
def git_group() -> None:
    """GitOps inside git: roll back manifests and stop broken ones at commit time.

    \b
    git gitops rollback [REV]     new commit restoring the manifests of REV
    git gitops validate --staged  validate what would be committed
    git gitops install-hooks      install the pre-commit hook
    """


# cobra's hidden completion entry, which the completion scripts call.
COMPLETE = "__complete"


def kubectl_main() -> None:
    _main(kubectl_group, "kubectl gitops")


def git_main() -> None:
    _main(git_group, "git gitops")


def kubectl_complete_main() -> None:
    """``kubectl_complete-gitops[-SUB]``: the name says which command kubectl completes."""
    from kubectl_gitops.cli import complete  # noqa: PLC0415

    name = Path(sys.argv[0]).name.removesuffix(".exe")
    sub = name.partition("kubectl_complete-gitops")[2].lstrip("-")
    prefix = [sub.replace("_", "-")] if sub else []
    sys.exit(complete.answer(kubectl_group, prefix + sys.argv[1:]))


def _main(group: click.Group, prog_name: str) -> None:
    if sys.argv[1:2] == [COMPLETE]:
        from kubectl_gitops.cli import complete  # noqa: PLC0415

        sys.exit(complete.answer(group, sys.argv[2:]))
    run(group, prog_name)
