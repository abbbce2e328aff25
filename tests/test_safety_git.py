"""Issue 13 items 4, 5, 8, 9: symlinks, the kustomize sandbox, rollback's
safety, and Secret values kept out of every output and file."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cliutil import BIN, env, run  # noqa: F401
from gitutil import commit, git, git_env, make_repo, write  # noqa: F401

from kubectl_gitops import secrets

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
