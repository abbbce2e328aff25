"""SOPS-encrypted files: recognised, checked without keys, decrypted in memory.

Decryption runs the real ``sops`` (found on PATH at run time, as kubectl is
for kustomize) with the encrypted file on its stdin and the plaintext on its
stdout: nothing decrypted is ever written to a file. Keys come from sops's
own environment (``SOPS_AGE_KEY_FILE``, ``SOPS_AGE_KEY``, a PGP keyring), or
from :class:`Keys` (``--decryption-key-file``; the agent's key Secret, handed
over as ``SOPS_AGE_KEY`` in the child's environment only).

A failure is one line naming the file, never sops's own report (which lists
key locations and recipients over many lines).
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kubectl_gitops.errors import ManifestError

# An encrypted leaf: ENC[AES256_GCM,data:...,iv:...,tag:...,type:...].
ENC = re.compile(r"^ENC\[AES256_GCM,data:[A-Za-z0-9+/=]*,iv:[A-Za-z0-9+/=]+,"
                 r"tag:[A-Za-z0-9+/=]+,type:(?:str|int|float|bool|bytes|comment)\]$")
CONFIG_FILE = ".sops.yaml"
# Key groups sops can wrap the data key for; at least one must be present.
_KEY_TYPES = ("age", "pgp", "kms", "gcp_kms", "azure_kv", "hc_vault", "key_groups")
# sops's exit statuses (getsops/sops cmd/sops/codes).
_MAC_MISMATCH = 51
_NO_KEY = 128
_MARKERS = (b"\nsops:", b'"sops":', b"\nsops :")


@dataclass(frozen=True)
class Keys:
    """Where sops finds its age key: a file, or the key itself (from a Secret).
    Neither: sops's own environment decides (``SOPS_AGE_KEY_FILE``...)."""

    key_file: str | None = None
    key: str | None = field(default=None, repr=False)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.key_file:
            env["SOPS_AGE_KEY_FILE"] = self.key_file
        if self.key:
            env["SOPS_AGE_KEY"] = self.key
        return env


def encrypted(data: bytes) -> bool:
    """Whether the file is SOPS-encrypted: a top-level ``sops`` key holding
    its metadata. A byte search first: plain manifests never pay a parse."""
    if not (data.startswith((b"sops:", b"{")) or any(m in data for m in _MARKERS)):
        return False
    if b"ENC[AES256_GCM" not in data:
        return False
    return any(isinstance(doc, dict) and isinstance(doc.get("sops"), dict)
               and "mac" in doc["sops"] for doc in _load_all(data))


def _load_all(data: bytes) -> list[Any]:
    """Every document (sops encrypts each document of a YAML stream on its
    own); a file that is not valid YAML has none."""
    import yaml  # noqa: PLC0415

    try:
        return list(yaml.load_all(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    except yaml.YAMLError:
        return []


def _load(data: bytes) -> Any:
    docs = _load_all(data)
    return docs[0] if len(docs) == 1 else None


def _format(path: str) -> str:
    return "json" if path.endswith(".json") else "yaml"


def binary() -> str | None:
    return shutil.which("sops")


def decrypt(path: str, data: bytes, keys: Keys | None = None) -> bytes:
    """The plaintext of an encrypted file, from ``sops decrypt`` on a pipe.
    Raises :class:`ManifestError` (one line, naming the file) on failure."""
    exe = binary()
    if exe is None:
        raise ManifestError(path, None, "SOPS-encrypted, and sops was not found on PATH; "
                            "install sops to decrypt it")
    fmt = _format(path)
    try:
        proc = subprocess.run([exe, "decrypt", "--input-type", fmt, "--output-type", fmt],
                              input=data, capture_output=True, env=(keys or Keys()).env())
    except OSError as e:
        raise ManifestError(path, None, f"SOPS-encrypted; running sops failed: "
                            f"{e.strerror}") from None
    if proc.returncode == 0:
        return proc.stdout
    raise ManifestError(path, None, _failure(proc.returncode, proc.stderr))


def _failure(status: int, stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace")
    if status == _MAC_MISMATCH or "MAC mismatch" in text:
        return "SOPS MAC does not verify: the file was changed after it was encrypted " \
               "(edit it with sops, or encrypt it again)"
    if status == _NO_KEY or "Failed to get the data key" in text:
        return "cannot decrypt with SOPS: no key given fits its recipients (set " \
               "SOPS_AGE_KEY_FILE or --decryption-key-file)"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"cannot decrypt with SOPS (sops exited {status}: {first[:200]})"


# --- without keys ---------------------------------------------------------------

def check(path: str, data: bytes) -> list[ManifestError]:
    """What can be checked of an encrypted file without its key: the sops
    metadata (a MAC, at least one key group) and every encrypted value well
    formed. Values under ``*_unencrypted`` keys, or outside
    ``encrypted_regex``, are plaintext by the file's own rules."""
    docs = [d for d in _load_all(data) if d is not None]
    if not docs:
        return [ManifestError(path, None, "SOPS: not a SOPS-encrypted YAML or JSON file")]
    problems: list[str] = []
    for doc in docs:
        if not isinstance(doc, dict) or not isinstance(doc.get("sops"), dict):
            problems.append("a document has no sops metadata (encrypt the whole file)")
            continue
        meta = doc["sops"]
        if not isinstance(meta.get("mac"), str) or not ENC.match(meta["mac"]):
            problems.append("its sops.mac is missing or malformed")
        if not any(meta.get(k) for k in _KEY_TYPES):
            problems.append("its sops metadata names no key (age, pgp, kms...)")
        bad = next((".".join(where) for where, v in _leaves(doc, ())
                    if isinstance(v, str) and v.startswith("ENC[") and not ENC.match(v)), None)
        if bad:
            problems.append(f"the encrypted value at {bad} is malformed")
    if not any(isinstance(v, str) and v.startswith("ENC[") for d in docs for _, v in _leaves(d, ())):
        problems.append("it holds no encrypted value")
    seen: list[str] = []
    for p in problems:
        if p not in seen:
            seen.append(p)
    return [ManifestError(path, None, f"SOPS: {p}") for p in seen]


def _leaves(node: Any, where: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            if not where and k == "sops":
                continue
            yield from _leaves(v, (*where, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*where, str(i)))
    else:
        yield where, node


def visible(data: bytes) -> list[Any]:
    """The documents with their ``sops`` metadata removed: what can be read
    of an encrypted file without its key (names, kinds; values ENC[...])."""
    docs = [d for d in _load_all(data) if d is not None]
    for doc in docs:
        if isinstance(doc, dict):
            doc.pop("sops", None)
    return docs


def plaintexts(encrypted: bytes, decrypted: bytes) -> dict[str, Any]:
    """Each ENC[...] string of a file to the value it decrypts to (same
    place in both). Every ENC string is unique (a random IV), so output that
    carries them through unchanged (kustomize, which never sees the
    plaintext) can be decrypted by replacing them."""
    found: dict[str, Any] = {}

    def walk(enc: Any, dec: Any) -> None:
        if isinstance(enc, dict) and isinstance(dec, dict):
            for k, v in enc.items():
                if k != "sops" and k in dec:
                    walk(v, dec[k])
        elif isinstance(enc, list) and isinstance(dec, list):
            for a, b in zip(enc, dec):
                walk(a, b)
        elif isinstance(enc, str) and ENC.match(enc):
            found[enc] = dec

    for enc_doc, dec_doc in zip(_load_all(encrypted), _load_all(decrypted)):
        walk(enc_doc, dec_doc)
    return found


def substitute(node: Any, table: dict[str, Any]) -> Any:
    """``node`` with every ENC[...] string of ``table`` replaced by its value."""
    if isinstance(node, dict):
        return {k: substitute(v, table) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, table) for v in node]
    if isinstance(node, str) and node in table:
        return table[node]
    return node


# --- .sops.yaml -------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    path_regex: str | None


def rules(data: bytes) -> list[Rule]:
    """The ``creation_rules`` of a ``.sops.yaml`` (malformed: none)."""
    doc = _load(data)
    out = []
    for rule in (doc.get("creation_rules") or []) if isinstance(doc, dict) else []:
        if isinstance(rule, dict):
            regex = rule.get("path_regex")
            out.append(Rule(regex if isinstance(regex, str) and regex else None))
    return out


def must_encrypt(rules_: list[Rule], relpath: str, holds_secret: bool) -> bool:
    """Whether ``.sops.yaml`` requires this (repo-relative) file encrypted.
    sops applies the first rule that matches: one with a ``path_regex``
    names the files it covers, each of which must be encrypted; a rule
    without one covers every file, and then Secrets must be encrypted."""
    for rule in rules_:
        if rule.path_regex is None:
            return holds_secret
        try:
            if re.search(rule.path_regex, relpath) or \
                    re.search(rule.path_regex, posixpath.basename(relpath)):
                return True
        except re.error:
            continue
    return False
