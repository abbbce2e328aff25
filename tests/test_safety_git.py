"""Issue 13 items 4, 5, 8, 9: symlinks, the kustomize sandbox, rollback's
safety, and Secret values kept out of every output and file."""

from __future__ import annotations

import base64
import os
import stat
import tempfile
from pathlib import Path

import pytest
from cliutil import BIN, env, run  # noqa: F401
from gitutil import commit, git, git_env, make_repo, write  # noqa: F401

from kubectl_gitops import manifests, secrets, source
from kubectl_gitops.errors import ManifestErrors

PIN = "48213579"
PASSWORD = "correct-horse-battery-staple-9321"
TOKEN = "tok3n-Zq81vXw0p4LmN7yRs2Kd5"


def secret(name: str, body: str) -> str:
    return f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n{body}"


# --- the redaction helper ------------------------------------------------------

def test_redact_masks_every_spelling_of_a_value() -> None:
    obj = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
           "data": {"p": base64.b64encode(PASSWORD.encode()).decode()},
           "stringData": {"pin": int(PIN), "t": TOKEN}}
    message = (f'.stringData.pin: expected string, got &value.valueUnstructured{{Value:{PIN}}}; '
               f'password {PASSWORD!r}; "{TOKEN[:20]}…"; {obj["data"]["p"]}')
    out = secrets.redact(message, obj)
    for value in (PIN, PASSWORD, TOKEN[:20], obj["data"]["p"]):
        assert value not in out
    assert out.startswith(".stringData.pin: expected string")


def test_redact_leaves_other_objects_and_short_values_in_words_alone() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "visible"}}
    assert secrets.redact("value visible", cm) == "value visible"
    s = {"apiVersion": "v1", "kind": "Secret", "stringData": {"a": "1"}}
    assert secrets.redact("line 1 of version 1.21", s) == "line *** of version 1.21"
    assert secrets.redact_field_message("expected string, got integer 42") \
        == "expected string, got integer (value hidden)"


# --- symlinks (item 4) ----------------------------------------------------------

def cm(name: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"


MODES = ({}, {"working_tree": True}, {"staged": True})


@pytest.fixture
def repo(git_env: dict[str, str], tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def names(src: source.Source) -> list[str]:
    return sorted(m.name for m in manifests.load(src))


def test_in_repo_symlinks_are_followed_in_every_mode(repo: Path) -> None:
    """A file turned into a link (to outside PATH), a link to a directory, a
    chain of links, and a link through a linked directory all read as kubectl
    reads a checkout; a file reached twice is read once."""
    write(repo, "shared/web.yaml", cm("web"))
    write(repo, "shared/more/db.yaml", cm("db"))
    write(repo, "deploy/own.yaml", cm("own"))
    os.symlink("../shared/web.yaml", repo / "deploy/web.yaml")
    os.symlink("../shared/more", repo / "deploy/more")
    os.symlink("web.yaml", repo / "deploy/chain.yaml")          # a chain: chain -> web -> shared
    os.symlink("own.yaml", repo / "deploy/again.yaml")          # the same file twice
    os.symlink("../deploy/more/db.yaml", repo / "shared/through.yaml")  # through a dir link
    os.symlink("../shared/through.yaml", repo / "deploy/through.yaml")
    commit(repo)
    for kw in MODES:
        src = source.resolve(repo=repo, path="deploy", **kw)
        assert names(src) == ["db", "own", "web"], kw
        # Links in name order: chain.yaml reaches shared/web.yaml before web.yaml does.
        assert sorted(f.path for f in src.files()) == \
            ["deploy/chain.yaml", "deploy/more/db.yaml", "deploy/own.yaml"], kw


@pytest.mark.parametrize(("target", "problem"), [
    ("/etc/hostname", "symlink to /etc/hostname points outside the repository"),
    ("../../outside.yaml", "symlink to ../../outside.yaml points outside the repository"),
    ("missing.yaml", "symlink to missing.yaml cannot be followed: deploy/missing.yaml: no such"),
    ("loop.yaml", "symlink to loop.yaml cannot be followed: more than 40 links"),
    ("..", "symlink to .. leads to a directory that contains it"),
])
def test_a_symlink_that_cannot_be_followed_is_an_error_at_its_path(
        repo: Path, tmp_path: Path, target: str, problem: str) -> None:
    write(tmp_path / "outside.yaml", "", cm("outside"))
    write(repo, "deploy/ok.yaml", cm("ok"))
    link = "deploy/loop.yaml" if target in ("loop.yaml", "..") else "deploy/bad.yaml"
    os.symlink(target, repo / link)
    commit(repo)
    for kw in MODES:
        src = source.resolve(repo=repo, path="deploy", **kw)
        with pytest.raises(ManifestErrors) as e:
            src.files()
        assert [line.split(": ", 1)[0] for line in e.value.lines()] == [link], kw
        assert problem in e.value.lines()[0], (kw, e.value.lines())


def test_validate_and_the_hook_report_a_link_outside_by_its_path(repo: Path, env: dict) -> None:
    write(repo, "deploy/ok.yaml", cm("ok"))
    os.symlink("/etc/passwd", repo / "deploy/passwd.yaml")
    git(repo, "add", "-A")
    for args in (["--staged"], ["--working-tree"]):
        proc = run([str(BIN / "git-gitops-validate"), *args, "deploy"], repo, env)
        assert proc.returncode == 2
        assert proc.stderr.startswith("error: deploy/passwd.yaml: symlink to /etc/passwd points "
                                      "outside the repository"), proc.stderr


# --- the kustomize sandbox (item 5) ----------------------------------------------

def plant(where: Path) -> None:
    """A kustomization another local user could leave in the shared temp dir."""
    write(where / "planted", "kustomization.yaml", "resources: [evil.yaml]\n")
    write(where / "planted", "evil.yaml", cm("planted-by-a-neighbour"))


@pytest.mark.parametrize(("ref", "refused"), [
    ("../../planted", "../../planted: outside the repository"),
    ("../../../../../../../../../tmp", "outside the repository"),
    ("https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v5.0.0",
     "remote resources are refused"),
    ("git@github.com:org/repo.git", "remote resources are refused"),
])
def test_kustomize_never_reads_outside_the_repo(repo: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                ref: str, refused: str) -> None:
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    plant(shared)
    monkeypatch.setenv("TMPDIR", str(shared))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    write(repo, "deploy/kustomization.yaml", f"resources:\n- ../base\n- {ref}\n")
    write(repo, "base/kustomization.yaml", "resources: [cm.yaml]\n")
    write(repo, "base/cm.yaml", cm("base"))
    commit(repo)
    for kw in MODES:
        src = source.resolve(repo=repo, path="deploy", **kw)
        ms, errors = manifests.read(src)
        assert ms == [], kw
        assert [e.path for e in errors] == ["deploy/kustomization.yaml"], kw
        assert refused in errors[0].message and ref in errors[0].message, kw


def test_every_kind_of_kustomize_file_reference_is_checked(repo: Path) -> None:
    outside = "../../etc/hostname"
    write(repo, "deploy/kustomization.yaml", "\n".join([
        "resources: [../base]",
        f"components: [{outside}]",
        f"patches: [{{path: {outside}}}]",
        f"patchesStrategicMerge: [{outside}]",
        f"configMapGenerator: [{{name: a, files: [k={outside}], envs: [{outside}]}}]",
        f"secretGenerator: [{{name: b, files: [{outside}]}}]",
        f"transformers: [{outside}]",
        f"crds: [{outside}]", ""]))
    write(repo, "base/kustomization.yaml", f"resources: [cm.yaml]\nbases: [{outside}]\n")
    write(repo, "base/cm.yaml", cm("base"))
    os.symlink("/etc", repo / "base/linked-out")
    write(repo, "base/kustomization.yaml",
          f"resources: [cm.yaml, linked-out/hostname]\nbases: [{outside}]\n")
    commit(repo)
    for kw in MODES:
        _, errors = manifests.read(source.resolve(repo=repo, path="deploy", **kw))
        where = [e.path for e in errors]
        assert where.count("deploy/kustomization.yaml") == 8, (kw, errors)
        assert where.count("base/kustomization.yaml") == 2, (kw, errors)
        assert all("outside the repository" in e.message for e in errors)


def test_kustomize_renders_bases_and_in_repo_links_from_a_private_export(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    monkeypatch.setenv("TMPDIR", str(shared))
    monkeypatch.setattr(tempfile, "tempdir", None)
    write(repo, "deploy/overlay/kustomization.yaml", "resources: [../../base, linked]\n"
          "namePrefix: dev-\n")
    write(repo, "base/kustomization.yaml", "resources: [cm.yaml]\n")
    write(repo, "base/cm.yaml", cm("base"))
    write(repo, "other/kustomization.yaml", "resources: [o.yaml]\n")
    write(repo, "other/o.yaml", cm("other"))
    os.symlink("../../other", repo / "deploy/overlay/linked")
    commit(repo)
    seen: list[int] = []
    real_render = manifests._render_kustomization

    def spy(base: Path, kfile: str) -> object:
        # The export: private, unpredictable, one level below the temp dir's entry.
        seen.append(stat.S_IMODE(base.parent.stat().st_mode))
        assert base.parent.parent == shared or kw.get("working_tree")
        return real_render(base, kfile)

    monkeypatch.setattr(manifests, "_render_kustomization", spy)
    for kw in MODES:
        assert names(source.resolve(repo=repo, path="deploy", **kw)) == \
            ["dev-base", "dev-other"], kw
    assert seen[0] == 0o700 and seen[2] == 0o700
    assert list(shared.iterdir()) == []  # nothing left behind
