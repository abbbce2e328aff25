"""Installing kubectl-gitops as a user would, outside the checkout.

Once per session, ``make release`` runs in a copy of this working tree (a
fresh git repository in a temp dir, version 9.9.9, so the version's one
source is checked too): the sdist, the wheel built from it and the krew
archive. The wheel is then installed into a fresh virtualenv and, separately,
with ``pip install --user`` into a temporary HOME, and used through kubectl,
git and man with nothing of the checkout or the test environment on PATH.

Dependencies come from a wheelhouse in ~/.cache/kubectl-gitops/wheelhouse,
filled from PyPI the first time, so an install does not download them again.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubectl_gitops.cli.dispatch import KUBECTL_COMMANDS
from kubectl_gitops.versions import KUBERNETES_VERSION
from testing.kube import configmap, docs

ROOT = Path(__file__).resolve().parent.parent
DEV_BIN = Path(sys.executable).parent
BASE_PYTHON = Path(getattr(sys, "_base_executable", sys.executable))
WHEELHOUSE = Path.home() / ".cache" / "kubectl-gitops" / "wheelhouse"
VERSION = "9.9.9"
GIT_ID = {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.com",
          "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.com"}


def sh(args: list[str | Path], *, cwd: Path | None = None, env: dict[str, str] | None = None,
       ok: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=timeout)
    if ok and out.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({out.returncode}):\n"
                             f"{out.stdout}\n{out.stderr}")
    return out


@dataclass(frozen=True)
class Release:
    dist: Path
    src: Path

    @property
    def wheel(self) -> Path:
        return next(self.dist.glob("kubectl_gitops-*.whl"))


def _git_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / ".gitconfig"
    cfg.write_text("[user]\n\tname = T\n\temail = t@example.com\n[init]\n\tdefaultBranch = main\n")
    return {"HOME": str(home), "GIT_CONFIG_GLOBAL": str(cfg), "GIT_CONFIG_NOSYSTEM": "1",
            "LANG": "C.UTF-8"}


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """``make release VERSION=9.9.9`` in a copy of this working tree."""
    src = tmp_path_factory.mktemp("release") / "kubectl-gitops"
    files = sh(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
               cwd=ROOT).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    env = {**os.environ, **_git_env(src.parent / "home")}
    env.pop("MAKEFLAGS", None)
    sh(["git", "init", "-q"], cwd=src, env=env)
    sh(["git", "add", "-A"], cwd=src, env=env)
    sh(["git", "commit", "-q", "-m", "snapshot"], cwd=src, env=env)
    sh(["make", "release", f"VERSION={VERSION}", f"PY={sys.executable}", "DIST_DEPS="],
       cwd=src, env=env)
    return Release(src / "dist", src)


@pytest.fixture(scope="session")
def wheelhouse(release: Release) -> Path:
    """Every dependency of the wheel and of building it from source, as files;
    PyPI is asked only when one is missing."""
    pyproject = (release.src / "pyproject.toml").read_text()
    build_reqs = re.findall(r'"([^"]+)"', pyproject.split("requires", 1)[1].split("]", 1)[0])
    wanted = [str(release.wheel), *build_reqs, "pip"]  # pipx upgrades its own pip
    probe = [sys.executable, "-m", "pip", "download", "--quiet", "--no-index",
             "--find-links", str(WHEELHOUSE), "--dest", str(release.dist / "probe"), *wanted]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        sh([sys.executable, "-m", "pip", "download", "--quiet", "--dest", WHEELHOUSE, *wanted])
        (WHEELHOUSE / release.wheel.name).unlink(missing_ok=True)
    return WHEELHOUSE


def readme_blocks(readme: Path, heading: str) -> list[str]:
    """The fenced code blocks between ``heading`` and the next heading."""
    text = readme.read_text()
    start = text.index(f"\n{heading}\n")
    section = text[start + len(heading) + 2:]
    section = re.split(r"\n#+ ", section, maxsplit=1)[0]
    return re.findall(r"```\w*\n(.*?)```", section, flags=re.S)


def offline_pip(wheelhouse: Path) -> dict[str, str]:
    """pip (wherever a README command runs it) takes every package from the wheelhouse."""
    # PIP_COMPILE=0 is --no-compile (bytecode is written on first import
    # anyway): compiling all of the kubernetes package would double the time.
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse), "PIP_COMPILE": "0",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def kubectl_only(tmp: Path) -> Path:
    """A directory holding just the real kubectl (the test venv's other
    executables, ours among them, must not be on PATH)."""
    d = tmp / "kubectl-bin"
    d.mkdir(exist_ok=True)
    if not (d / "kubectl").exists():
        (d / "kubectl").symlink_to(DEV_BIN / "kubectl")
    return d


@dataclass(frozen=True)
class Installed:
    bin: Path
    python: Path
    env: dict[str, str]


def install_by_readme(block: str, release: Release, wheelhouse: Path, tmp: Path,
                      extra_path: str = "", **extra_env: str) -> tuple[Path, str]:
    """Run a README install block as written, in the release's checkout (its
    dist/ holds the files `make dist` wrote); the bin directory it put on PATH
    and what it printed."""
    env = {**_git_env(tmp / "home"), **offline_pip(wheelhouse), **extra_env,
           "PATH": os.pathsep.join(filter(None, [extra_path, str(kubectl_only(tmp)),
                                                 "/usr/bin", "/bin"]))}
    out = sh(["bash", "-euo", "pipefail", "-c", block + "command -v kubectl-gitops\n"],
             cwd=release.src, env=env).stdout
    return Path(out.splitlines()[-1]).parent, out


def install_venv(release: Release, wheelhouse: Path, tmp: Path) -> Installed:
    block = readme_blocks(release.src / "README.md", "## Install")[1]
    assert "python3 -m venv" in block
    bin_dir, out = install_by_readme(block, release, wheelhouse, tmp)
    assert f"Version: v{VERSION}" in out.splitlines()  # the block's own check
    return Installed(bin_dir, bin_dir / "python", _git_env(tmp / "home"))


def install_pipx(release: Release, wheelhouse: Path, tmp: Path) -> Installed:
    block = readme_blocks(release.src / "README.md", "## Install")[0]
    assert block.startswith("pipx install ")
    tools = tmp / "pipx-bin"
    tools.mkdir()
    (tools / "pipx").symlink_to(DEV_BIN / "pipx")
    # ~/.local/bin on PATH, as `pipx ensurepath` leaves it.
    user_bin = tmp / "home" / ".local" / "bin"
    bin_dir, _ = install_by_readme(block, release, wheelhouse, tmp,
                                   os.pathsep.join([str(user_bin), str(tools)]),
                                   PIPX_DEFAULT_PYTHON=str(BASE_PYTHON))  # not this venv
    assert bin_dir == user_bin
    python = next((tmp / "home").glob(".local/*/pipx/venvs/kubectl-gitops/bin/python"))
    return Installed(bin_dir, python, _git_env(tmp / "home"))


def install_user(release: Release, wheelhouse: Path, tmp: Path) -> Installed:
    env = _git_env(tmp / "home")
    sh([BASE_PYTHON, "-m", "pip", "install", "--user", "--quiet", "--no-compile", "--no-index",
        "--find-links", wheelhouse, release.wheel],
       env={"HOME": env["HOME"], "PATH": os.environ["PATH"]})
    return Installed(tmp / "home" / ".local" / "bin", BASE_PYTHON, env)


INSTALLERS = {"venv": install_venv, "user": install_user, "pipx": install_pipx}


@pytest.mark.parametrize("layout", ["venv", "user", pytest.param("pipx", marks=pytest.mark.slow)])
def test_installed_wheel_works_through_kubectl_git_and_man(
        layout: str, release: Release, wheelhouse: Path, tmp_path: Path,
        control_plane: object, namespace: str) -> None:
    """venv and pipx: the README's install commands as written; user: pip --user."""
    inst = INSTALLERS[layout](release, wheelhouse, tmp_path)
    env = {**inst.env, "PATH": os.pathsep.join([str(inst.bin), str(kubectl_only(tmp_path)),
                                                 "/usr/bin", "/bin"]),
           "KUBECONFIG": str(control_plane.kubeconfig)}  # type: ignore[attr-defined]
    work = tmp_path / "work"
    work.mkdir()

    # The package imported is the installed one, not the checkout.
    where = sh([inst.python, "-c", "import kubectl_gitops; print(kubectl_gitops.__file__)"],
               cwd=work, env=env).stdout
    assert where.startswith(str(tmp_path)) and not where.startswith(str(ROOT))
    # The local control plane and the test helpers (testing/) are not installed.
    cp = sh([inst.python, "-c", "import importlib.util as u; "
             "print(u.find_spec('testing'))"], cwd=work, env=env).stdout
    assert cp == "None\n"

    _plugin_list_shows_exactly_our_plugins(inst, env, work)
    _hook_blocks_a_bad_commit(inst, env, work)
    _git_help_finds_the_man_page(env, work)

    version = sh(["kubectl", "gitops", "version"], cwd=work, env=env).stdout.splitlines()
    assert version[0] == f"Version: v{VERSION}"
    assert version[-1] == f"Server Version: v{KUBERNETES_VERSION}"

    completion = sh(["kubectl", "__complete", "gitops", "sy"], cwd=work, env=env).stdout
    assert completion.splitlines()[-1] == ":4"
    assert "sync\tConverge the cluster to a git revision (--prune)." in completion.splitlines()

    repo = work / "app"
    (repo / "deploy").mkdir(parents=True)
    (repo / "deploy" / "cm.yaml").write_text(docs(configmap("settings")))
    sh(["git", "init", "-q"], cwd=repo, env=env)
    sh(["git", "add", "-A"], cwd=repo, env=env)
    sh(["git", "commit", "-q", "--no-verify", "-m", "app"], cwd=repo, env=env)
    diff = sh(["kubectl", "gitops", "diff", "deploy", "-n", namespace], cwd=repo, env=env,
              ok=False)
    assert diff.returncode == 1, diff.stderr
    assert "+++ git@" in diff.stdout and f"ConfigMap {namespace}/settings" in diff.stdout
    assert "1 to create, 0 to update, 0 to delete, 0 unchanged" in diff.stdout + diff.stderr


def test_the_wheel_holds_the_product_package_only(release: Release) -> None:
    names = zipfile.ZipFile(release.wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"kubectl_gitops", f"kubectl_gitops-{VERSION}.dist-info",
                    f"kubectl_gitops-{VERSION}.data"}
    assert not [n for n in names if "controlplane" in n or n.startswith("testing/")]
    # The data files the package reads through importlib.resources.
    assert {"kubectl_gitops/validate/git_hooks/pre-commit",
            "kubectl_gitops/cli/completion/gitops.bash"} <= set(names)


def _plugin_list_shows_exactly_our_plugins(inst: Installed, env: dict[str, str],
                                           work: Path) -> None:
    out = sh(["kubectl", "plugin", "list"], cwd=work, env=env)
    assert out.stderr == ""  # no warnings (a plugin overshadowed, not executable...)
    paths = [Path(line) for line in out.stdout.splitlines() if line.startswith("/")]
    names = {p.name for p in paths}
    assert {p.parent for p in paths} == {inst.bin}
    assert {"kubectl-gitops", "kubectl-gitops-diff", "kubectl-gitops-sync"} <= names
    assert names <= {"kubectl-gitops"} | {f"kubectl-gitops-{c}" for c in KUBECTL_COMMANDS}


def _hook_blocks_a_bad_commit(inst: Installed, env: dict[str, str], work: Path) -> None:
    repo = work / "hooked"
    repo.mkdir()
    sh(["git", "init", "-q"], cwd=repo, env=env)
    out = sh(["git", "gitops", "install-hooks"], cwd=repo, env=env)
    assert out.stdout == "installed the kubectl-gitops pre-commit hook at .git/hooks/pre-commit\n"
    hook = (repo / ".git" / "hooks" / "pre-commit").read_text()
    # This installation's entry point (pipx: in its venv, which ~/.local/bin links to).
    exe = Path(re.findall(r"(?m)^exe=(.*)$", hook)[0])
    assert exe.name == "gitops-pre-commit"
    assert exe.resolve() == (inst.bin / "gitops-pre-commit").resolve()
    (repo / "cm.yaml").write_text(docs(configmap("Bad_Name")))
    sh(["git", "add", "cm.yaml"], cwd=repo, env=env)
    commit = sh(["git", "commit", "-q", "-m", "bad"], cwd=repo, env=env, ok=False)
    assert commit.returncode == 1
    assert 'cm.yaml:4: ConfigMap default/Bad_Name: metadata.name: "Bad_Name" is not a valid' \
        in commit.stderr
    assert commit.stderr.rstrip().endswith("bypass with git commit --no-verify")
    assert sh(["git", "rev-list", "--all"], cwd=repo, env=env).stdout == ""


def _git_help_finds_the_man_page(env: dict[str, str], work: Path) -> None:
    # man-db maps each PATH directory to ../share/man; MANPATH is not set.
    assert "MANPATH" not in env
    page = sh(["git", "gitops", "--help"], cwd=work, env={**env, "MANPAGER": "cat",
                                                           "MANWIDTH": "100"}).stdout
    assert page.startswith("GIT-GITOPS(1)")
    assert "git gitops [OPTIONS] COMMAND [ARGS]..." in page
    assert "install-hooks" in page and "git-gitops-rollback(1)" in page
    sub = sh(["man", "kubectl-gitops-diff"], cwd=work, env={**env, "MANPAGER": "cat"}).stdout
    assert "--show-secrets" in sub


# --- the krew plugin: manifest, release archive, launcher --------------------------------

def krew_problems(path: Path) -> list[str]:
    """krew's own checks (sigs.k8s.io/krew internal/index/validation and
    cmd/validate-krew-manifest, v0.4.3) of one plugin manifest file."""
    import yaml

    doc = yaml.safe_load(path.read_text())
    spec = doc.get("spec") or {}
    name = path.name.removesuffix(".yaml")
    problems = []
    if doc.get("apiVersion") != "krew.googlecontainertools.github.com/v1alpha2":
        problems.append("apiVersion")
    if doc.get("kind") != "Plugin":
        problems.append("kind")
    if not re.fullmatch(r"[\w-]+", name) or (doc.get("metadata") or {}).get("name") != name:
        problems.append("metadata.name must be the file's name")
    short = spec.get("shortDescription") or ""
    if not short or "\n" in short or "\r" in short:
        problems.append("shortDescription")
    if not re.fullmatch(r"v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", str(spec.get("version", ""))):
        problems.append("version must be semver with a leading v")
    platforms = spec.get("platforms") or []
    if not platforms:
        problems.append("platforms")
    for i, p in enumerate(platforms):
        sel = p.get("selector")
        keys = [*(sel or {}).get("matchLabels", {}),
                *(e.get("key") for e in (sel or {}).get("matchExpressions", []))]
        if not sel or not keys or set(keys) - {"os", "arch"}:
            problems.append(f"platforms[{i}].selector")
        if not p.get("uri") or not p.get("bin"):
            problems.append(f"platforms[{i}] needs uri and bin")
        if not isinstance(p.get("sha256"), str) or not re.fullmatch(r"[a-f0-9]{64}", p["sha256"]):
            problems.append(f"platforms[{i}].sha256")
        files = p.get("files")
        if files is not None and (not files or not all(f.get("from") and f.get("to")
                                                       for f in files)):
            problems.append(f"platforms[{i}].files")
    return problems


def test_krew_manifests_follow_krews_rules(release: Release, tmp_path: Path) -> None:
    ours = ROOT / "plugins" / "gitops.yaml"
    assert krew_problems(ours) == []
    # An unquoted all-digit checksum is a YAML number, which krew rejects.
    broken = tmp_path / "gitops.yaml"
    broken.write_text(re.sub(r'sha256: "(\w+)"', r"sha256: \1", ours.read_text()))
    assert krew_problems(broken) == ["platforms[0].sha256"]
    manifest = release.dist / "gitops.yaml"
    assert krew_problems(manifest) == []
    import yaml

    platform = yaml.safe_load(manifest.read_text())["spec"]["platforms"][0]
    archive = release.dist / f"kubectl-gitops-v{VERSION}.tar.gz"
    assert platform["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert platform["uri"].endswith(f"/v{VERSION}/{archive.name}")
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["kubectl-gitops", release.wheel.name]
    # make release committed the manifest of its archive and tagged that commit.
    env = {**os.environ, **_git_env(release.src.parent / "home")}
    tagged = sh(["git", "show", f"v{VERSION}:plugins/gitops.yaml"], cwd=release.src, env=env)
    assert tagged.stdout == manifest.read_text()
    init = sh(["git", "show", f"v{VERSION}:kubectl_gitops/__init__.py"], cwd=release.src, env=env)
    assert f'__version__ = "{VERSION}"' in init.stdout


def _launcher_env(tmp: Path, bin_dir: Path, wheelhouse: Path) -> dict[str, str]:
    return {**_git_env(tmp / "home"),
            "PATH": os.pathsep.join([str(bin_dir), str(kubectl_only(tmp)), "/usr/bin", "/bin"]),
            "KUBECTL_GITOPS_PYTHON": str(BASE_PYTHON),
            # The launcher's pip reads these: dependencies from the wheelhouse, offline.
            "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}


@pytest.mark.slow
def test_real_krew_installs_the_release_archive(release: Release, wheelhouse: Path,
                                                tmp_path: Path) -> None:
    """krew v0.4.3, built from the Go module proxy (cached; minutes the first
    time): its validator, then `kubectl krew install --manifest --archive`,
    then the plugin through kubectl: the launcher's first run makes its venv."""
    krew_bin = Path(sh([ROOT / "tools" / "build-krew.sh"]).stdout.strip())
    manifest = release.dist / "gitops.yaml"
    for m in (manifest, ROOT / "plugins" / "gitops.yaml"):
        check = sh([krew_bin / "validate-krew-manifest", "-skip-install", "-manifest", m])
        assert "structural validation OK" in check.stderr
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "kubectl-krew").symlink_to(krew_bin / "krew")
    root = tmp_path / "krew-root"
    env = {**_launcher_env(tmp_path, root / "bin", wheelhouse), "KREW_ROOT": str(root)}
    env["PATH"] = os.pathsep.join([env["PATH"], str(tools)])
    sh(["kubectl", "krew", "install", f"--manifest={manifest}",
        f"--archive={release.dist / f'kubectl-gitops-v{VERSION}.tar.gz'}"], cwd=tmp_path, env=env)
    store = root / "store" / "gitops" / f"v{VERSION}"
    first = sh(["kubectl", "gitops", "version", "--client"], cwd=tmp_path, env=env)
    assert first.stdout.splitlines()[0] == f"Version: v{VERSION}"
    assert first.stderr.startswith(f"kubectl-gitops: first run: installing into {store}/venv")
    again = sh(["kubectl", "gitops", "diff", "--help"], cwd=tmp_path, env=env)
    assert again.stderr == "" and "Usage: kubectl gitops diff [OPTIONS] [PATH]" in again.stdout
    listed = sh(["kubectl", "plugin", "list"], cwd=tmp_path, env=env)
    assert listed.stderr == ""
    assert [line for line in listed.stdout.splitlines() if line.startswith("/")] == \
        [str(root / "bin" / "kubectl-gitops"), str(tools / "kubectl-krew")]
    # krew's record of the install (`krew list` would need an index).
    receipt = (root / "receipts" / "gitops.yaml").read_text()
    assert f"version: v{VERSION}" in receipt


# --- the README's pre-commit snippet ------------------------------------------------------

PRE_COMMIT_HEADING = "### With the pre-commit framework"


def test_the_readme_pre_commit_snippet_names_the_current_version() -> None:
    """`make release` tags v<version> and writes that rev into the snippet."""
    from kubectl_gitops import __version__

    (block,) = readme_blocks(ROOT / "README.md", PRE_COMMIT_HEADING)
    assert re.findall(r"(?m)^\s*rev: (\S+)$", block) == [f"v{__version__}"]


@pytest.mark.slow
def test_the_readme_pre_commit_snippet_at_the_release_tag(release: Release, wheelhouse: Path,
                                                          tmp_path: Path) -> None:
    """The snippet as the release left it, with only the repository URL
    pointing at the released checkout: the real pre-commit checks out the
    tag, builds the package into its own virtualenv and blocks a bad commit."""
    (block,) = readme_blocks(release.src / "README.md", PRE_COMMIT_HEADING)
    assert f"rev: v{VERSION}\n" in block
    config = block.replace("https://github.com/kubectl-gitops/kubectl-gitops", str(release.src))
    env = {**_git_env(tmp_path / "home"), **offline_pip(wheelhouse),
           "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
           "PATH": os.pathsep.join([str(DEV_BIN), "/usr/bin", "/bin"])}
    work = tmp_path / "work"
    (work / "deploy").mkdir(parents=True)
    sh(["git", "init", "-q"], cwd=work, env=env)
    (work / ".pre-commit-config.yaml").write_text(config)
    sh(["pre-commit", "install"], cwd=work, env=env)
    (work / "deploy" / "web.yaml").write_text(docs(configmap("Web")))
    (work / "notes.yaml").write_text("not: [a manifest\n")  # outside files: ^deploy/
    sh(["git", "add", "-A"], cwd=work, env=env)
    commit = sh(["git", "commit", "-q", "-m", "bad"], cwd=work, env=env, ok=False)
    assert commit.returncode == 1, commit.stdout + commit.stderr
    output = commit.stdout + commit.stderr
    assert 'deploy/web.yaml:4: ConfigMap default/Web: metadata.name: "Web" is not a valid' \
        in output
    assert "invalid: 1 problem in 1 object in 1 file" in output
