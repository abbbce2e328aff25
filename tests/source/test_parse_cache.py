"""The parsed-manifest cache (manifests.ParseCache): an unchanged file is
read back instead of parsed again; only clean, Secret-free results are
kept, privately; anything odd in the cache is a miss, never an error."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from kubectl_gitops.source import manifests
from kubectl_gitops.source.manifests import ParseCache

DEPLOY = b"""\
# a comment first, so the object starts on line 2
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {tier: "1"}
spec:
  replicas: 3
  template:
    spec:
      containers:
        - name: web
          image: nginx:1.27
          env:
            - {name: RATIO, value: "0.5"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {mode: "yes", big: "12345678901234567890"}
"""


def _shown(result: tuple[list, list]) -> tuple[list, list[str]]:
    manifests_, errors = result
    return [(m.obj, m.path, m.line, m.repeated_keys, m.go_meanings) for m in manifests_], \
        [str(e) for e in errors]


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*.json"))


def test_an_unchanged_file_is_read_back_not_parsed(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    store = ParseCache(str(tmp_path / "c"))
    first, errors = store.parse("deploy/app.yaml", DEPLOY)
    assert errors == [] and len(_entries(tmp_path / "c")) == 1

    def no_parsing(path: str, data: bytes) -> None:
        raise AssertionError(f"{path} parsed again")

    monkeypatch.setattr(manifests, "parse_file", no_parsing)
    again, errors = store.parse("other/place.yaml", DEPLOY)  # same content elsewhere
    assert errors == []
    assert [(m.obj, m.line) for m in again] == [(m.obj, m.line) for m in first]
    assert [m.path for m in again] == ["other/place.yaml"] * 2
    assert again[0].obj["spec"]["replicas"] == 3 and again[0].line == 2
    assert again[1].obj["data"] == {"mode": "yes", "big": "12345678901234567890"}


def test_entries_are_private(tmp_path: Path) -> None:
    store = ParseCache(str(tmp_path / "c"))
    store.parse("a.yaml", DEPLOY)
    (entry,) = _entries(tmp_path / "c")
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    for folder in (tmp_path / "c", entry.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


@pytest.mark.parametrize("text", [
    # a Secret's values stay in git alone
    b"apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {password: hunter2}\n",
    # a repeated key: diff and sync refuse it, validate reports it
    b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '1'}\ndata: {b: '2'}\n",
    # a scalar YAML 1.1 reads otherwise (validate's yaml-meaning check)
    b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {x: 0o17}\n",
    # an error
    b"apiVersion: v1\nkind: ConfigMap\nmetadata: [not, a, mapping]\n",
    # invalid YAML
    b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c\n",
])
def test_only_clean_secret_free_results_are_kept(tmp_path: Path, text: bytes) -> None:
    store = ParseCache(str(tmp_path / "c"))
    assert _shown(store.parse("x.yaml", text)) == _shown(manifests.parse_file("x.yaml", text))
    assert _entries(tmp_path / "c") == []
    assert b"hunter2" not in b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_odd_entries_are_misses(tmp_path: Path) -> None:
    store = ParseCache(str(tmp_path / "c"))
    want = [(m.obj, m.line) for m in store.parse("a.yaml", DEPLOY)[0]]
    (entry,) = _entries(tmp_path / "c")
    for bad in (b"{not json", json.dumps({"v": "another parser", "m": []}).encode(),
                json.dumps({"v": store.version, "m": [["a string", 1]]}).encode()):
        entry.write_bytes(bad)
        assert [(m.obj, m.line) for m in store.parse("a.yaml", DEPLOY)[0]] == want
    # a symlink planted in place of an entry is not followed
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"v": store.version, "m": [[{"kind": "Evil"}, 1]]}))
    entry.unlink()
    os.symlink(target, entry)
    assert [(m.obj, m.line) for m in store.parse("a.yaml", DEPLOY)[0]] == want
    # a cache directory that is not private is not used
    os.chmod(tmp_path / "c", 0o755)
    os.chown(tmp_path / "c", os.getuid(), os.getgid())
    assert [(m.obj, m.line) for m in store.parse("a.yaml", DEPLOY)[0]] == want


def test_the_key_covers_the_parser(tmp_path: Path) -> None:
    store = ParseCache(str(tmp_path / "c"))
    store.parse("a.yaml", DEPLOY)
    other = ParseCache(str(tmp_path / "c"))
    other.version = "a newer parser"
    other.parse("a.yaml", DEPLOY)
    assert len(_entries(tmp_path / "c")) == 2


def test_no_cache_home_means_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")
    store = ParseCache.default()
    assert store.directory is None
    assert _shown(store.parse("a.yaml", DEPLOY)) == _shown(manifests.parse_file("a.yaml", DEPLOY))
