#!/usr/bin/env python3
"""Benchmark: the pre-commit hook on a commit of N manifests, and kubeconform
on the same files with the same schemas.

For each N (default 10 and 1,000 objects: ConfigMaps, Deployments and
Services, three to a file, as bench/common.py renders them) a repository is
generated with everything staged and nothing committed, then timed over
several rounds, tools interleaved:

  hook          gitops-pre-commit run in the repo exactly as git runs
                it (cwd the work tree, GIT_INDEX_FILE set): the hook's whole cost
  git commit    a real `git commit` with the hook installed (undone after each
                round), and `git commit --no-verify` to show git's own share
  kubeconform   the same files from disk, -strict, against the same strict
                schemas for 1.37 (kubernetes-validate's files with their $refs
                made file-relative, since kubeconform would fetch
                https://kubernetes.io/api/_definitions.json otherwise)

The package's bytecode is compiled first, as pip does when it installs a
package (an editable install in an environment with PYTHONDONTWRITEBYTECODE
would otherwise compile every module on every run, which no user pays).
Schema definitions are cached in ~/.cache/kubectl-gitops/schemas after the
first run, as on a user's machine after their first commit.

Prints wall-time medians (min, max) per tool, the hook's CPU seconds, the
ratio kubeconform / hook, and whether the targets are met: 10 manifests
under 0.5 s, 1,000 under 5 s.

    .venv/bin/python bench/validate.py
    .venv/bin/python bench/validate.py -n 10 -n 1000 -n 5000 --rounds 9
    .venv/bin/python bench/validate.py --no-kubeconform
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TARGETS = {10: 0.5, 1000: 5.0}
CACHE = Path.home() / ".cache" / "kubectl-gitops"
KUBECONFORM_MODULE = "github.com/yannh/kubeconform/cmd/kubeconform@latest"
HOOK, COMMIT, NO_VERIFY, KUBECONFORM = ("hook", "git commit", "git commit --no-verify",
                                        "kubeconform")


def make_staged_repo(env: dict[str, str], root: Path, n_objects: int) -> list[str]:
    """A new repo with N objects staged under apps/; the files, relative to apps/."""
    apps = root / common.APPS_DIR
    apps.mkdir(parents=True)
    files = common.render(n_objects, common.namespace_set("bench"), set())
    for name, text in files.items():
        (apps / name).write_text(text)
    (root / ".gitops.yaml").write_text(f"path: {common.APPS_DIR}\n")
    common.git(env, root, "init", "-q", "-b", "main")
    common.git(env, root, "add", "-A")
    common.run(["git", "gitops", "install-hooks"], env, cwd=root)
    return sorted(files)


def time_hook(env: dict[str, str], root: Path) -> common.Timing:
    """Wall and CPU seconds of one run of the hook, as git runs it."""
    hook_env = {**env, "GIT_INDEX_FILE": str(root / ".git" / "index")}
    return common.timed(["gitops-pre-commit"], hook_env, cwd=root)


def time_commit(env: dict[str, str], root: Path, *flags: str) -> common.Timing:
    t = common.timed(["git", "commit", "-q", "-m", "bench", *flags], env, cwd=root)
    common.git(env, root, "update-ref", "-d", "HEAD")  # unborn again, index kept
    return t


# --- kubeconform -------------------------------------------------------------

def kubeconform_binary(build: bool) -> tuple[Path | None, str]:
    """The binary (building it from the Go module proxy when missing), or why not."""
    exe = CACHE / "bin" / "kubeconform"
    if exe.is_file():
        return exe, f"{exe}"
    if not build:
        return None, f"{exe} is missing and --no-build was given"
    go = shutil.which("go")
    if not go:
        return None, "go is not installed, so kubeconform cannot be built"
    common.say(f"building kubeconform: go install {KUBECONFORM_MODULE}")
    proc = subprocess.run([go, "install", KUBECONFORM_MODULE], capture_output=True, text=True,
                          env={**os.environ, "GOBIN": str(exe.parent)})
    if proc.returncode != 0 or not exe.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"go install {KUBECONFORM_MODULE} failed: {last}"
    return exe, f"{exe} (built now)"


def kubeconform_schemas() -> tuple[Path, str]:
    """kubernetes-validate's strict schemas, rewritten once for kubeconform:
    ``$id`` dropped and ``/api/_definitions.json#`` made relative, so every
    reference resolves to the file beside it instead of the network."""
    from kubectl_gitops.kube import schema  # noqa: PLC0415

    release, source = schema.schema_dir(common_version())
    dest_root = CACHE / "kubeconform-schemas"
    dest = dest_root / source.name
    stamp = dest / ".complete"
    if not stamp.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        for f in source.glob("*.json"):
            if f.name == "_definitions.json":
                shutil.copyfile(f, dest / f.name)
                continue
            doc = json.loads(f.read_text())
            doc.pop("$id", None)
            (dest / f.name).write_text(json.dumps(doc).replace('"/api/_definitions.json#',
                                                               '"_definitions.json#'))
        stamp.write_text(str(source))
    template = f"{dest_root}/{{{{ .NormalizedKubernetesVersion }}}}-local-strict/" \
               "{{ .ResourceKind }}{{ .KindSuffix }}.json"
    return Path(template), source.name.split("-")[0].removeprefix("v")


def common_version() -> str:
    from kubectl_gitops.versions import KUBERNETES_VERSION  # noqa: PLC0415

    return KUBERNETES_VERSION


def time_kubeconform(env: dict[str, str], exe: Path, template: Path, version: str,
                     apps: Path, files: list[str]) -> common.Timing:
    return common.timed([str(exe), "-strict", "-summary", "-kubernetes-version", version,
                         "-schema-location", str(template), *files], env, cwd=apps)


# --- main --------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--objects", type=int, action="append",
                    help="objects per repository (repeatable; default 10 and 1000)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-kubeconform", action="store_true", help="do not time kubeconform")
    ap.add_argument("--no-build", action="store_true",
                    help="do not build kubeconform when it is missing")
    args = ap.parse_args()
    sizes = args.objects or [10, 1000]

    exe, why = (None, "skipped (--no-kubeconform)") if args.no_kubeconform \
        else kubeconform_binary(not args.no_build)
    tools = [HOOK, COMMIT, NO_VERIFY] + ([KUBECONFORM] if exe else [])
    table = common.Table(tools)
    cpu: dict[str, list[float]] = {}
    print(f"# {common.machine()}")
    print(f"# kubeconform: {why}")
    subprocess.run([str(common.PYTHON), "-m", "compileall", "-q",
                    str(common.ROOT / "kubectl_gitops")], check=True)
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        env = common.environment(Path(os.devnull), Path(tmp))
        template, version = kubeconform_schemas() if exe else (Path(), "")
        for n in sizes:
            root = Path(tmp) / f"repo-{n}"
            files = make_staged_repo(env, root, n)
            scenario = f"{n} objects"
            common.say(f"{scenario} in {len(files)} files, {args.rounds} rounds")
            for k in range(args.rounds):
                for tool in common.rotate(tools, k):
                    if tool == HOOK:
                        t = time_hook(env, root)
                        cpu.setdefault(scenario, []).append(t.cpu)
                    elif tool == COMMIT:
                        t = time_commit(env, root)
                    elif tool == NO_VERIFY:
                        t = time_commit(env, root, "--no-verify")
                    else:
                        assert exe is not None
                        t = time_kubeconform(env, exe, template, version,
                                             root / common.APPS_DIR, files)
                    table.add(scenario, tool, t)
    print(table.render())
    print()
    for n in sizes:
        scenario = f"{n} objects"
        hook = table.median(scenario, HOOK)
        line = f"{scenario}: hook median {hook:.3f} s wall, {statistics.median(cpu[scenario]):.3f}" \
               " s CPU"
        if n in TARGETS:
            met = "met" if hook < TARGETS[n] else "MISSED"
            line += f"; target < {TARGETS[n]:g} s: {met}"
        if exe:
            line += f"; kubeconform / hook = {table.median(scenario, KUBECONFORM) / hook:.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
