"""Man pages written from the click commands, so they never drift from ``--help``.

``setup.py`` calls :func:`write_all` when a wheel is built; the pages are
installed in ``share/man/man1``, where man finds them beside any PATH
directory (``<venv>/bin`` -> ``<venv>/share/man``). That matters for git:
``git gitops --help`` runs ``man gitops`` before our executable starts.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from kubectl_gitops import __version__

MANUAL = "kubectl-gitops manual"
HOME = "https://github.com/kubectl-gitops/kubectl-gitops"


def pages() -> dict[str, str]:
    """``{file name: roff text}`` for both groups and every subcommand."""
    from kubectl_gitops.cli import dispatch  # noqa: PLC0415

    groups = (("kubectl-gitops", "kubectl gitops", dispatch.kubectl_group,
               dispatch.KUBECTL_COMMANDS),
              ("git-gitops", "git gitops", dispatch.git_group, dispatch.GIT_COMMANDS))
    out: dict[str, str] = {}
    for page, prog, group, table in groups:
        see = [n for n in ("kubectl-gitops", "git-gitops") if n != page]
        out[f"{page}.1"] = render(group, page, prog, subcommands=table,
                                  see_also=see + [f"{page}-{s}" for s in table])
        for sub in table:
            cmd = group.get_command(click.Context(group), sub)
            if cmd is not None:
                out[f"{page}-{sub}.1"] = render(cmd, f"{page}-{sub}", f"{prog} {sub}",
                                                see_also=[page])
    # git maps `git gitops --help` to `man gitops`, not `man git-gitops`: it
    # takes any command name starting with "git" for a page name as it is.
    out["gitops.1"] = out["git-gitops.1"]
    return out


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in sorted(pages().items()):
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def render(cmd: click.Command, page: str, prog: str, *,
           subcommands: dict[str, tuple[str, str]] | None = None,
           see_also: list[str]) -> str:
    # make_context applies the command's context_settings (-h as well as --help).
    ctx = cmd.make_context(prog, [], resilient_parsing=True)
    summary = (cmd.help or "").strip().split("\n")[0].rstrip(".")
    lines = [f'.TH "{page.upper()}" "1" "" "kubectl-gitops {__version__}" "{MANUAL}"',
             ".SH NAME", f"{_esc(page)} \\- {_esc(summary)}",
             ".SH SYNOPSIS", f".B {_esc(prog)}", _esc(" ".join(cmd.collect_usage_pieces(ctx))),
             ".SH DESCRIPTION", *_paragraphs(cmd.help or "")]
    if subcommands:
        lines.append(".SH COMMANDS")
        for sub, (_, short) in subcommands.items():
            lines += [".TP", f"\\fB{_esc(sub)}\\fR", _esc(short),
                      f"See \\fB{_esc(page)}-{_esc(sub)}\\fR(1)."]
    lines += [".SH OPTIONS", *_options(cmd, ctx)]
    lines += [".SH SEE ALSO",
              ", ".join(f"\\fB{_esc(n)}\\fR(1)" for n in see_also) + f", {_esc(HOME)}"]
    return "\n".join(lines) + "\n"


def _paragraphs(text: str) -> list[str]:
    """click's docstring conventions: blank-line paragraphs, ``\\b`` keeps lines."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", click.unstyle(text).strip()):
        block_lines = block.split("\n")
        if block_lines[0].strip() == "\b":
            out += [".PP", ".nf", *(_esc(line.rstrip()) for line in block_lines[1:]), ".fi"]
        else:
            out += [".PP", _esc(" ".join(line.strip() for line in block_lines))]
    return out


def _options(cmd: click.Command, ctx: click.Context) -> list[str]:
    out: list[str] = []
    for param in cmd.get_params(ctx):
        if not isinstance(param, click.Option):
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        out += [".TP", f"\\fB{_esc(names)}\\fR", _esc(help_text or "")]
    return out


def _esc(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    # A line starting with . or ' would be read as a request.
    return "\\&" + text if text[:1] in (".", "'") else text
