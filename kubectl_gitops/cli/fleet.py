"""``--fleet``, ``--target``, ``-l`` on diff, sync and status: the options,
and the one summary table (or JSON) of a run over many clusters.

The work of each target is :mod:`kubectl_gitops.engine.fleet`'s; this
module turns flags into a :class:`~kubectl_gitops.engine.fleet.Setup` and
results into lines."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from kubectl_gitops.engine.fleet import Setup, TargetResult
    from kubectl_gitops.kube.kubeconfig import Overrides
    from kubectl_gitops.source.tree import Source

def setup(src: Source, cluster: Overrides, *, concurrency: int, timeout: float | None,
          path: str | None, name: str | None, namespace: str | None) -> Setup:
    from kubectl_gitops.engine import fleet  # noqa: PLC0415

    for flag, value in (("--context", cluster.context), ("--cluster", cluster.cluster),
                        ("--server", cluster.server)):
        if value:
            raise click.UsageError(f"{flag} names one cluster; a fleet's targets name their "
                                   "own contexts (leave out --fleet, --target and -l to use "
                                   f"{flag})")
    return fleet.Setup(src, cluster, concurrency=concurrency, timeout=timeout, path=path,
                       name=name, namespace=namespace)


def choose(s: Setup, targets: tuple[str, ...], selector: str | None) -> list[Any]:
    from kubectl_gitops.engine import fleet  # noqa: PLC0415
    from kubectl_gitops.kube import kubeconfig  # noqa: PLC0415

    needs_contexts = any(t.context_pattern for t in s.src.targets)
    contexts = kubeconfig.contexts(s.cluster.kubeconfig) if needs_contexts else []
    return fleet.select(s.src, contexts, names=targets, label_selector=selector)


class Lines:
    """Each target's progress lines, prefixed with its name, one at a time."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.lock = threading.Lock()

    def __call__(self, target: str, line: str) -> None:
        if not self.quiet:
            with self.lock:
                click.echo(f"{target}: {line}")

    def wave(self, wave: int, targets: list[str]) -> None:
        if not self.quiet:
            click.echo(f"wave {wave}: {', '.join(targets)}")


def _time(seconds: float) -> str:
    return f"{seconds:.1f}s"


def _short(revision: str) -> str:
    return revision[:7] if len(revision) == 40 else revision or "-"


def table(results: list[TargetResult], verb: str) -> str:
    from tabulate import tabulate  # noqa: PLC0415

    if verb == "diff":
        head = ["TARGET", "CLUSTER", "REVISION", "CREATE", "UPDATE", "PRUNE", "UNCHANGED",
                "HEALTH", "RESULT", "TIME"]
        keys = ("create", "update", "prune", "unchanged")
    elif verb == "status":
        head = ["TARGET", "CLUSTER", "NAMESPACE", "NAME", "REVISION", "SYNC", "HEALTH",
                "RESULT", "LAST SYNC"]
        keys = ()
    else:
        head = ["TARGET", "CLUSTER", "REVISION", "CREATED", "UPDATED", "PRUNED",
                "UNCHANGED", "HEALTH", "RESULT", "TIME"]
        keys = ("created", "updated", "pruned", "unchanged")
    rows = []
    for r in results:
        if verb == "status":
            st = r.status or {}
            rows.append([r.target, r.context, r.namespace or "-", r.app or "-",
                         _short(str(st.get("revision") or "")), st.get("sync") or "-",
                         r.health or "-", r.result, st.get("lastSyncTime") or "-"])
            continue
        counts = [str(r.counts[k]) if k in r.counts else "-" for k in keys]
        rows.append([r.target, r.context, _short(r.revision), *counts, r.health or "-",
                     r.result, _time(r.seconds)])
    return tabulate(rows, headers=head, tablefmt="plain")


def errors(results: list[TargetResult]) -> None:
    """One line per target that failed or was skipped, naming it."""
    for r in results:
        if r.error:
            kind = "error" if r.result != "skipped" else "skipped"
            text = r.error[len("skipped: "):] if r.error.startswith("skipped: ") else r.error
            click.echo(f"{kind}: {r.target}: {text}", err=True)


def as_json(results: list[TargetResult], *, command: str, revision: str,
            status: int) -> str:
    return json.dumps({"command": command, "revision": revision, "exitStatus": status,
                       "targets": [r.as_json() for r in results]}, indent=2)


def finish(results: list[TargetResult], verb: str, revision: str, output: str) -> int:
    """The table (or JSON) and the error lines; the run's exit status."""
    from kubectl_gitops.engine import fleet  # noqa: PLC0415

    status = fleet.exit_status(results)
    if output == "json":
        click.echo(as_json(results, command=verb, revision=revision, status=status))
        return status
    click.echo(table(results, verb), err=verb == "diff" and output == "diff")
    errors(results)
    return status


# GitHub refuses comments over 65536 characters; leave room for a CI's own words.
MARKDOWN_LIMIT = 60000
_MARK = {"differs": "changes", "in sync": "no changes", "failed": "failed", "skipped": "skipped"}


def markdown(results: list[TargetResult], src: Source, *, limit: int = MARKDOWN_LIMIT) -> str:
    """One report for a pull request: a table of the targets (counts and
    outcome), then each changed target's diff in a collapsible block.
    Secret values are masked as in every diff (unless --show-secrets);
    diffs are cut to fit ``limit`` characters, saying what was left out."""
    rev = src.sha[:7] if src.sha else src.revision
    changed = [r for r in results if r.rendered]
    failed = [r for r in results if not r.ok]
    head = [f"### kubectl gitops diff: `{src.ref}` ({rev}) against {len(results)} "
            f"target{'s' if len(results) != 1 else ''}", "",
            f"{len(changed)} with changes, {len(results) - len(changed) - len(failed)} "
            f"unchanged, {len(failed)} failed.", "",
            "| target | cluster | create | update | prune | unchanged | result |",
            "|---|---|---:|---:|---:|---:|---|"]
    for r in results:
        c = r.counts
        counts = [str(c[k]) if k in c else "-" for k in ("create", "update", "prune",
                                                          "unchanged")]
        result = _MARK.get(r.result, r.result)
        if r.error:
            result += f": {_cell(r.error)}"
        head.append(f"| {_cell(r.target)} | {_cell(r.context)} | " + " | ".join(counts)
                    + f" | {result} |")
    out = "\n".join(head) + "\n"
    blocks = []
    for r in changed:
        text = "".join((f"# {one.item.id}: {one.item.note}\n" if one.item.note else "")
                       + one.text for one in r.rendered)
        blocks.append((r, text))
    room = max(0, limit - len(out))
    share = room // max(1, len(blocks))
    for r, text in blocks:
        shell = (f"\n<details><summary><b>{_cell(r.target)}</b>: {r.counts.get('create', 0)} "
                 f"to create, {r.counts.get('update', 0)} to update, "
                 f"{r.counts.get('prune', 0)} to delete</summary>\n\n```diff\n")
        tail = "```\n\n</details>\n"
        budget = share - len(shell) - len(tail) - 120
        if len(text) > budget:
            cut = text[:max(0, budget)]
            cut = cut[:cut.rfind("\n") + 1] if "\n" in cut else ""
            left = text[len(cut):].count("\n")
            text = cut + (f"... {left} more lines; kubectl gitops diff --target {r.target} "
                          "shows them all\n")
        out += shell + text.replace("```", "`\u200b``") + tail
    return out


def _cell(text: str) -> str:
    """Text as one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
