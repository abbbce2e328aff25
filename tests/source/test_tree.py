"""Source resolution: commit, working tree and index, and ``.gitops.yaml``.

Every test works on a real repository in a temp dir with isolated git config.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from kubectl_gitops.engine import desired
from kubectl_gitops.errors import ConfigError, GitError
from kubectl_gitops.source import manifests, tree
from testing.git import commit, git, make_repo, status, write


def cm(name: str, value: str = "v", namespace: str | None = None) -> str:
    ns = f"\n  namespace: {namespace}" if namespace else ""
    return (f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}{ns}\n"
            f"data:\n  key: {value}\n")


@pytest.fixture
def repo(git_env: dict[str, str], tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def contents(src: tree.Source) -> dict[str, bytes]:
    return {f.path: f.data for f in src.files()}


def values(src: tree.Source) -> dict[str, str]:
    """``name -> data.key`` of every ConfigMap the source yields."""
    return {m.name: m.obj["data"]["key"] for m in manifests.load(src)}


def index_fingerprint(repo: Path) -> tuple[str, int]:
    index = repo / ".git" / "index"
    return hashlib.sha256(index.read_bytes()).hexdigest(), index.stat().st_mtime_ns


# --- commit mode ---------------------------------------------------------------


def test_older_ref_is_read_from_git_objects_leaving_worktree_and_index_alone(repo: Path) -> None:
    write(repo, "app/a.yaml", cm("a", "one"))
    write(repo, "app/b.yaml", cm("b", "one"))
    write(repo, "base/kustomization.yaml", "resources: [cm.yaml]\n")
    write(repo, "base/cm.yaml", cm("k", "one"))
    first = commit(repo, "one")
    for n in ("two", "three", "four"):
        write(repo, "app/a.yaml", cm("a", n))
        write(repo, "base/cm.yaml", cm("k", n))
        commit(repo, n)
    write(repo, "app/new.yaml", cm("new", "staged"))
    git(repo, "add", "app/new.yaml")                  # a dirty index
    write(repo, "app/a.yaml", cm("a", "worktree"))    # a dirty working tree
    (repo / "app" / "b.yaml").unlink()
    write(repo, "untracked.yaml", cm("u"))
    before_status, before_index = status(repo), index_fingerprint(repo)
    before_head = git(repo, "rev-parse", "HEAD")

    src = tree.resolve(repo=repo, ref="HEAD~3")

    assert src.sha == first and src.revision == f"git@{first[:7]}"
    # The kustomize directory is rendered from an export of that revision too.
    assert values(src) == {"a": "one", "b": "one", "k": "one"}
    assert {m.name for m in desired.load(src)} == {"a", "b", "k"}
    assert status(repo) == before_status
    assert index_fingerprint(repo) == before_index
    assert git(repo, "rev-parse", "HEAD") == before_head
    assert (repo / "app" / "a.yaml").read_text() == cm("a", "worktree")


def test_any_commit_ish_and_a_missing_revision(repo: Path) -> None:
    write(repo, "a.yaml", cm("a", "tagged"))
    commit(repo, "one")
    git(repo, "tag", "v1")
    write(repo, "a.yaml", cm("a", "later"))
    commit(repo, "two")
    assert values(tree.resolve(repo=repo, ref="v1")) == {"a": "tagged"}
    assert values(tree.resolve(repo=repo, ref="main")) == {"a": "later"}
    with pytest.raises(GitError, match=r"^no-such-ref: no such revision in "):
        tree.resolve(repo=repo, ref="no-such-ref")


def test_loose_and_packed_objects_read_alike(repo: Path) -> None:
    write(repo, "a.yaml", cm("a", "one"))
    write(repo, "b.yaml", cm("b", "one"))
    commit(repo, "one")
    git(repo, "gc", "-q")  # everything so far is packed, no loose object left
    assert not list((repo / ".git" / "objects").glob("[0-9a-f][0-9a-f]/*"))
    write(repo, "a.yaml", cm("a", "two"))  # a loose blob beside a packed one
    commit(repo, "two")
    write(repo, "b.yaml", cm("b", "staged"))
    git(repo, "add", "b.yaml")
    assert values(tree.resolve(repo=repo, ref="HEAD~1")) == {"a": "one", "b": "one"}
    assert values(tree.resolve(repo=repo)) == {"a": "two", "b": "one"}
    assert values(tree.resolve(repo=repo, staged=True)) == {"a": "two", "b": "staged"}


def test_a_linked_worktree_reads_the_shared_object_store(repo: Path, tmp_path: Path) -> None:
    write(repo, "a.yaml", cm("a", "main"))
    commit(repo)
    git(repo, "worktree", "add", "-q", "-b", "side", str(tmp_path / "side"))
    side = tmp_path / "side"
    write(side, "a.yaml", cm("a", "side"))
    commit(side)
    assert values(tree.resolve(repo=side)) == {"a": "side"}
    assert values(tree.resolve(repo=side, ref="main")) == {"a": "main"}
    write(side, "a.yaml", cm("a", "side-staged"))
    git(side, "add", "a.yaml")
    assert values(tree.resolve(repo=side, staged=True)) == {"a": "side-staged"}


def test_only_manifest_files_are_read_in_sorted_order(repo: Path) -> None:
    write(repo, "z.yaml", cm("z"))
    write(repo, "dir/m.yml", cm("m"))
    write(repo, "a.json", '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "j"}}')
    write(repo, "README.md", "# not a manifest\n")
    write(repo, "notes.txt", "kind: nope\n")
    write(repo, ".gitops.yaml", "name: app\n")
    commit(repo)
    src = tree.resolve(repo=repo)
    assert sorted(contents(src)) == ["a.json", "dir/m.yml", "z.yaml"]
    assert [m.path for m in manifests.load(src)] == ["a.json", "dir/m.yml", "z.yaml"]


def test_a_link_to_a_file_already_read_is_read_once_in_any_mode(repo: Path) -> None:
    write(repo, "real.yaml", cm("real"))
    os.symlink("real.yaml", repo / "link.yaml")
    commit(repo)
    for kw in ({}, {"working_tree": True}, {"staged": True}):
        src = tree.resolve(repo=repo, **kw)
        assert list(contents(src)) == ["real.yaml"], kw
        assert values(src) == {"real": "v"}


# --- three modes -----------------------------------------------------------------


def test_a_file_changed_after_git_add_reads_differently_in_each_mode(repo: Path) -> None:
    write(repo, "app/cm.yaml", cm("cm", "committed"))
    commit(repo)
    write(repo, "app/cm.yaml", cm("cm", "staged"))
    git(repo, "add", "app/cm.yaml")
    write(repo, "app/cm.yaml", cm("cm", "worktree"))
    before = index_fingerprint(repo)

    assert values(tree.resolve(repo=repo)) == {"cm": "committed"}
    assert values(tree.resolve(repo=repo, staged=True)) == {"cm": "staged"}
    assert values(tree.resolve(repo=repo, working_tree=True)) == {"cm": "worktree"}
    assert index_fingerprint(repo) == before


def test_worktree_mode_sees_untracked_but_not_ignored_or_deleted_files(repo: Path) -> None:
    write(repo, "keep.yaml", cm("keep"))
    write(repo, "gone.yaml", cm("gone"))
    write(repo, ".gitignore", "ignored.yaml\n")
    commit(repo)
    (repo / "gone.yaml").unlink()
    write(repo, "new.yaml", cm("new"))
    write(repo, "ignored.yaml", cm("ignored"))
    src = tree.resolve(repo=repo, working_tree=True)
    assert src.revision == "working-tree" and src.sha is None
    assert sorted(values(src)) == ["keep", "new"]


def test_index_mode_reads_staged_blobs_only(repo: Path) -> None:
    write(repo, "keep.yaml", cm("keep"))
    write(repo, "unstaged-delete.yaml", cm("still-staged"))
    commit(repo)
    write(repo, "added.yaml", cm("added"))
    git(repo, "add", "added.yaml")
    (repo / "unstaged-delete.yaml").unlink()
    write(repo, "untracked.yaml", cm("untracked"))
    src = tree.resolve(repo=repo, staged=True)
    assert src.revision == "index"
    assert sorted(values(src)) == ["added", "keep", "still-staged"]


def test_index_mode_refuses_an_unmerged_index(repo: Path) -> None:
    write(repo, "a.yaml", cm("a", "base"))
    commit(repo)
    git(repo, "checkout", "-q", "-b", "other")
    write(repo, "a.yaml", cm("a", "other"))
    commit(repo)
    git(repo, "checkout", "-q", "main")
    write(repo, "a.yaml", cm("a", "main"))
    commit(repo)
    proc_ok = True
    try:
        git(repo, "merge", "-q", "other")
    except AssertionError:
        proc_ok = False
    assert not proc_ok  # the merge conflicted
    with pytest.raises(GitError, match=r"^a\.yaml: unmerged in the index"):
        tree.resolve(repo=repo, staged=True).files()


def test_mode_options_that_exclude_each_other(repo: Path) -> None:
    write(repo, "a.yaml", cm("a"))
    commit(repo)
    with pytest.raises(ConfigError, match="exclude each other"):
        tree.resolve(repo=repo, working_tree=True, staged=True)
    with pytest.raises(ConfigError, match="--ref cannot be combined"):
        tree.resolve(repo=repo, working_tree=True, ref="HEAD~1")


# --- odd file names ----------------------------------------------------------------

ODD_NAMES = ["with space.yaml", "it's \"quoted\".yaml", "ünïcødé/日本語.yaml",
             "tab\there.yaml", "back\\slash.yml", "star*[x].yaml"]


@pytest.mark.parametrize("kw", [{}, {"working_tree": True}, {"staged": True}],
                         ids=["commit", "worktree", "index"])
def test_spaces_quotes_and_unicode_in_file_names(repo: Path, kw: dict[str, bool]) -> None:
    for i, name in enumerate(ODD_NAMES):
        write(repo, name, cm(f"cm{i}"))
    write(repo, "plain.yaml", cm("plain"))
    commit(repo)
    src = tree.resolve(repo=repo, **kw)
    assert sorted(contents(src)) == sorted([*ODD_NAMES, "plain.yaml"])
    by_path = {m.path: m.name for m in manifests.load(src)}
    assert by_path == {**{n: f"cm{i}" for i, n in enumerate(ODD_NAMES)}, "plain.yaml": "plain"}


@pytest.mark.parametrize("kw", [{}, {"working_tree": True}, {"staged": True}],
                         ids=["commit", "worktree", "index"])
def test_a_path_with_glob_characters_is_taken_literally(repo: Path, kw: dict[str, bool]) -> None:
    write(repo, "app*/a.yaml", cm("star"))
    write(repo, "apps/b.yaml", cm("other"))
    commit(repo)
    assert values(tree.resolve(repo=repo, path="app*", **kw)) == {"star": "v"}


# --- path ------------------------------------------------------------------------------


def test_path_limits_what_is_read(repo: Path) -> None:
    write(repo, "apps/web/a.yaml", cm("a"))
    write(repo, "apps/web/sub/b.yaml", cm("b"))
    write(repo, "apps/webber/c.yaml", cm("c"))
    write(repo, "other.yaml", cm("o"))
    commit(repo)
    for kw in ({}, {"working_tree": True}, {"staged": True}):
        src = tree.resolve(repo=repo, path="apps/web", **kw)
        assert src.path == "apps/web"
        assert sorted(values(src)) == ["a", "b"], kw


def test_path_relative_to_the_current_directory(repo: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    write(repo, "apps/web/a.yaml", cm("a"))
    write(repo, "apps/db/b.yaml", cm("b"))
    commit(repo)
    monkeypatch.chdir(repo / "apps")
    src = tree.resolve(path="web")
    assert src.root.resolve() == repo.resolve() and src.path == "apps/web"
    assert values(src) == {"a": "v"}
    assert tree.resolve(path=str(repo / "apps" / "db")).path == "apps/db"


def test_bad_paths(repo: Path) -> None:
    write(repo, "apps/a.yaml", cm("a"))
    commit(repo)
    with pytest.raises(ConfigError, match=r"^\.\./elsewhere: outside the repository"):
        tree.resolve(repo=repo, path="../elsewhere")
    with pytest.raises(ConfigError, match=r"^nope: no such directory at HEAD$"):
        tree.resolve(repo=repo, path="nope").files()
    with pytest.raises(ConfigError, match=r"^apps/a\.yaml: not a directory at HEAD$"):
        tree.resolve(repo=repo, path="apps/a.yaml").files()
    for kw, where in (({"staged": True}, "in the index"),
                      ({"working_tree": True}, "in the working tree")):
        with pytest.raises(ConfigError, match=f"^nope: no such directory {where}$"):
            tree.resolve(repo=repo, path="nope", **kw).files()
        with pytest.raises(ConfigError, match=rf"^apps/a\.yaml: not a directory {where}$"):
            tree.resolve(repo=repo, path="apps/a.yaml", **kw).files()


def test_not_a_repository(tmp_path: Path, git_env: dict[str, str]) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(GitError, match="not inside a git repository"):
        tree.resolve(repo=tmp_path / "plain")


# --- .gitops.yaml ------------------------------------------------------------------------


def test_gitops_yaml_path_name_namespace_and_exclude(repo: Path) -> None:
    write(repo, ".gitops.yaml", "path: deploy\nname: shop\nnamespace: shop-ns\n"
                                "exclude: ['*.secret.yaml', 'deploy/tmp/*']\n")
    write(repo, "deploy/a.yaml", cm("a"))
    write(repo, "deploy/db.secret.yaml", cm("secret"))
    write(repo, "deploy/tmp/t.yaml", cm("tmp"))
    write(repo, "deploy/sub/x.secret.yaml", cm("nested-secret"))
    write(repo, "outside.yaml", cm("outside"))
    commit(repo)
    src = tree.resolve(repo=repo)
    assert (src.path, src.name, src.namespace) == ("deploy", "shop", "shop-ns")
    assert sorted(values(src)) == ["a"]
    assert [m.namespace for m in desired.load(src)] == ["shop-ns"]
    # Options given on the command line win over the file.
    src = tree.resolve(repo=repo, path="", name="other", namespace="cli-ns")
    assert (src.path, src.name, src.namespace) == ("", "other", "cli-ns")
    assert sorted(values(src)) == ["a", "outside"]


def test_without_gitops_yaml_the_name_is_left_to_the_app(repo: Path) -> None:
    # Not the checkout directory's name: app.default_name derives it from the
    # repo's remote and the path (tests/test_identity.py).
    write(repo, "a.yaml", cm("a"))
    commit(repo)
    src = tree.resolve(repo=repo)
    assert (src.path, src.name, src.namespace, src.exclude) == ("", "", None, ())


def test_exclude_may_be_a_single_string(repo: Path) -> None:
    write(repo, ".gitops.yaml", "exclude: 'skip/*'\n")
    write(repo, "skip/a.yaml", cm("skipped"))
    write(repo, "b.yaml", cm("b"))
    commit(repo)
    assert values(tree.resolve(repo=repo)) == {"b": "v"}


@pytest.mark.parametrize(("text", "error"), [
    ("path: [a\n", r"^\.gitops\.yaml:\d+: not valid YAML$"),
    ("- a\n- b\n", r"^\.gitops\.yaml: expected a mapping"),
    ("paht: deploy\nnme: x\n", r"^\.gitops\.yaml: unknown key\(s\) nme, paht$"),
    ("namespace: 42\n", r"^\.gitops\.yaml: namespace must be a string$"),
])
def test_a_bad_gitops_yaml_is_one_clear_line(repo: Path, text: str, error: str) -> None:
    write(repo, ".gitops.yaml", text)
    commit(repo)
    with pytest.raises(ConfigError, match=error):
        tree.resolve(repo=repo)
