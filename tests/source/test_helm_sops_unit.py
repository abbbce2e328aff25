"""``helm:`` of .gitops.yaml, values merging and the SOPS helpers: no cluster,
no helm, no sops."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubectl_gitops.source import config, helm, sops
from kubectl_gitops.errors import ConfigError


def spec(**doc: object) -> helm.Spec:
    return helm.parse_spec(doc, ".gitops.yaml")


@pytest.mark.parametrize(("doc", "message"), [
    ({}, ".gitops.yaml: helm.chart is required (a path in the repository, a chart name with "
         "helm.repo, or oci://...)"),
    ({"chart": "podinfo", "repo": "https://c.example.com"},
     ".gitops.yaml: helm.version is required for https://c.example.com/podinfo"),
    ({"chart": "podinfo", "repo": "https://c.example.com", "version": "^6.0.0"},
     ".gitops.yaml: helm.version '^6.0.0' must be one exact version (a range is not pinned "
     "by the revision)"),
    ({"chart": "podinfo", "repo": "ftp://c.example.com", "version": "1.0.0"},
     ".gitops.yaml: helm.repo must be an https://, http:// or oci:// URL"),
    ({"chart": "../elsewhere"}, ".gitops.yaml: helm.chart '../elsewhere': a local chart is a "
                                "path inside the repository (else give helm.repo or oci://)"),
    ({"chart": "c", "valuesFiles": ["/etc/values.yaml"]},
     ".gitops.yaml: helm.valuesFiles: '/etc/values.yaml' must be a path inside the repository"),
    ({"chart": "c", "valuesFile": "v.yaml"}, ".gitops.yaml: helm: unknown key(s) valuesFile"),
    ({"chart": "c", "releaseName": "Web_1"},
     ".gitops.yaml: helm.releaseName 'Web_1' is not a valid release name (lower-case DNS "
     "name, at most 53 characters)"),
    ({"chart": "c", "includeCRDs": "yes"}, ".gitops.yaml: helm.includeCRDs must be true or false"),
])
def test_a_bad_helm_section_is_one_line(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        spec(**doc)
    assert str(e.value) == message


def test_the_three_kinds_of_chart() -> None:
    local = spec(chart="./charts/web/", valuesFiles=["./deploy/values.yaml"])
    assert (local.kind, local.chart, local.values_files) == \
        ("local", "charts/web", ("deploy/values.yaml",))
    repo = spec(chart="podinfo", repo="https://user:pw@c.example.com/", version="6.9.2")
    assert (repo.kind, repo.reference, repo.label) == \
        ("repo", "https://c.example.com/podinfo", "podinfo@6.9.2")
    oci = spec(chart="oci://r.example.com/charts/podinfo", version="v6.9.2")
    assert (oci.kind, oci.name) == ("oci", "podinfo")


def test_helm_in_gitops_yaml_reaches_the_source(tmp_path: Path) -> None:
    cfg = config.load(tmp_path, b"path: deploy\nhelm:\n  chart: charts/web\n")
    assert cfg.helm is not None and cfg.helm.chart == "charts/web"
    with pytest.raises(ConfigError, match=r"^\.gitops\.yaml: helm must be a mapping"):
        config.load(tmp_path, b"helm: charts/web\n")


def test_values_merge_as_helm_merges_values_files() -> None:
    merged = helm.merge_values([
        {"image": {"repository": "a", "tag": "1"}, "ports": [80], "keep": True},
        None,
        {"image": {"tag": "2"}, "ports": [443], "keep": None},
        {"extra": {"x": 1}},
    ])
    assert merged == {"image": {"repository": "a", "tag": "2"}, "ports": [443], "keep": None,
                      "extra": {"x": 1}}


def test_hooks_are_named_crd_install_is_not_a_hook() -> None:
    def obj(hook: str) -> dict[str, object]:
        return {"metadata": {"annotations": {"helm.sh/hook": hook}}}

    assert helm.hook_of(obj("pre-install, pre-upgrade")) == "pre-install,pre-upgrade"
    assert helm.hook_of(obj("crd-install")) is None
    assert helm.hook_of({"metadata": {}}) is None


ENCRYPTED = b"""\
apiVersion: v1
kind: Secret
metadata:
    name: db
stringData:
    password: ENC[AES256_GCM,data:j//7+g+HiA==,iv:1iyZNK7rrBo8jhryB10Jb0Vsywz4XOaVq0TsDBHrgaM=,tag:kdDmeesFjIUM7LvWDzuiMA==,type:str]
sops:
    age:
        - recipient: age17l06jq84cvm8cnl9tjuj9qxrqscf6c3sz9seghy389tyvu53s52s6f5uuh
          enc: x
    mac: ENC[AES256_GCM,data:5wwg,iv:aqxbnKj2pKmbh5f0qvuPQB7s9oThJETl098qW+MlLuU=,tag:ggrXL1AEbGUrgVSOm/RCNw==,type:str]
    version: 3.11.0
"""


def test_sops_files_are_recognised_without_a_parse_of_plain_ones() -> None:
    assert sops.encrypted(ENCRYPTED)
    assert not sops.encrypted(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: sops\n")
    assert not sops.encrypted(b"sops: {}\n")
    assert sops.check("db.enc.yaml", ENCRYPTED) == []
    assert [d["kind"] for d in sops.visible(ENCRYPTED)] == ["Secret"]


def test_plaintexts_replace_encrypted_values_carried_through_a_render() -> None:
    decrypted = ENCRYPTED.split(b"sops:")[0].replace(
        ENCRYPTED.split(b"password: ")[1].split(b"\n")[0], b"hunter2")
    table = sops.plaintexts(ENCRYPTED, decrypted)
    assert list(table.values()) == ["hunter2"]
    rendered = {"metadata": {"name": "p-db"}, "stringData": {"password": list(table)[0]}}
    assert sops.substitute(rendered, table)["stringData"] == {"password": "hunter2"}


@pytest.mark.parametrize(("rules", "path", "secret", "must"), [
    ([sops.Rule(r"secrets/.*")], "secrets/db.yaml", False, True),
    ([sops.Rule(r"secrets/.*")], "app/db.yaml", True, False),
    ([sops.Rule(None)], "app/db.yaml", True, True),
    ([sops.Rule(None)], "app/cm.yaml", False, False),
    ([sops.Rule(r"\.enc\.yaml$"), sops.Rule(None)], "app/db.yaml", True, True),
    ([], "app/db.yaml", True, False),
])
def test_which_files_sops_yaml_requires_encrypted(rules: list[sops.Rule], path: str,
                                                  secret: bool, must: bool) -> None:
    assert sops.must_encrypt(rules, path, secret) is must
