"""A fleet without clusters: ``targets:`` as read from ``.gitops.yaml``,
patterns expanded against contexts, selectors, and the order and stopping
rule of waves (engine.fleet.run with a work function that records)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from kubectl_gitops import exitcodes
from kubectl_gitops.errors import ConfigError, UsageError
from kubectl_gitops.source import config
from kubectl_gitops.source.config import Target
from kubectl_gitops.source.tree import Source
from kubectl_gitops.engine import fleet

FLEET = """\
name: shop
targets:
- name: staging
  context: kind-staging
  path: overlays/staging
  labels: {env: staging}
- contextPattern: "prod-*"
  path: overlays/{{name}}
  namespace: "shop-{{ context }}"
  labels: {env: prod, tier: 1}
  wave: 1
- name: edge
  context: prod-edge
  appName: shop-edge
  labels: {env: prod, edge: true}
  wave: 2
"""


def load(text: str) -> config.RepoConfig:
    return config.load(Path("."), text.encode())


def source(text: str) -> Source:
    cfg = load(text)
    return Source(root=Path("."), path="", mode="commit", ref="HEAD", sha="a" * 40, name="",
                  namespace=None, targets=cfg.targets)


def test_targets_and_a_pattern_expand_against_the_contexts() -> None:
    targets = fleet.expand(load(FLEET).targets, ["kind-staging", "prod-eu", "prod-edge",
                                                 "prod-us", "dev"])
    assert [(t.name, t.context, t.path, t.namespace, t.app, t.wave) for t in targets] == [
        ("staging", "kind-staging", "overlays/staging", None, None, 0),
        # prod-edge is named by its own entry: the pattern leaves it alone
        ("prod-eu", "prod-eu", "overlays/prod-eu", "shop-prod-eu", None, 1),
        ("prod-us", "prod-us", "overlays/prod-us", "shop-prod-us", None, 1),
        ("edge", "prod-edge", None, None, "shop-edge", 2)]
    assert dict(targets[3].labels) == {"env": "prod", "edge": "true", }
    assert dict(targets[1].labels)["tier"] == "1"


@pytest.mark.parametrize(("text", "error"), [
    ("targets: {a: b}\n", ".gitops.yaml: targets must be a list of mappings"),
    ("targets: [{name: a}]\n", ".gitops.yaml: targets[0] (a): give either context"),
    ("targets: [{name: a, context: x, contextPattern: 'y*'}]\n",
     "targets[0] (a): give either context (a kubeconfig context) or contextPattern"),
    ("targets: [{context: x}, {context: y, name: x}]\n",
     ".gitops.yaml: targets[1] (x): a second target named x (the first is targets[0])"),
    ("targets: [{context: x, wave: first}]\n", "targets[0] (x): wave must be an integer"),
    ("targets: [{context: x, labels: [a]}]\n", "labels must be a mapping"),
    ("targets: [{context: x, cluster: y}]\n", "targets[0]: unknown key(s) cluster"),
    ("targets: [{contextPattern: 'p-*', wave: 1.5}]\n", "targets[0]: wave must be an integer"),
    ("targets: [{contextPattern: 'p-*', name: p}]\n", "remove name"),
    ("targets: [{context: 'a b'}]\n", "is not a valid target name"),
])
def test_a_bad_target_is_one_line_naming_the_file_and_the_entry(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(text)
    assert error in str(e.value)
    assert "\n" not in str(e.value)


def test_selectors_read_as_kubectl_reads_equality_selectors() -> None:
    labels = {"env": "prod", "tier": "1"}
    assert fleet.selector("env=prod")(labels)
    assert fleet.selector("env==prod,tier")(labels)
    assert not fleet.selector("env=prod,tier!=1")(labels)
    assert fleet.selector("!edge")(labels)
    assert not fleet.selector("edge")(labels)
    with pytest.raises(UsageError, match="cannot read"):
        fleet.selector("env in (a)")


def test_select_by_name_and_label_and_what_is_refused() -> None:
    src = source(FLEET)
    contexts = ["kind-staging", "prod-eu", "prod-edge"]
    assert [t.name for t in fleet.select(src, contexts)] == ["staging", "prod-eu", "edge"]
    assert [t.name for t in fleet.select(src, contexts, label_selector="env=prod,!edge")] == \
        ["prod-eu"]
    assert [t.name for t in fleet.select(src, contexts, names=("edge", "staging"))] == \
        ["staging", "edge"]
    with pytest.raises(UsageError, match=r"no target named nope in \.gitops\.yaml"):
        fleet.select(src, contexts, names=("nope",))
    with pytest.raises(UsageError, match="no target matches -l env=dev"):
        fleet.select(src, contexts, label_selector="env=dev")
    with pytest.raises(ConfigError, match="declares no targets"):
        fleet.select(source("name: x\n"), contexts)


def _targets(*waves: int) -> list[Target]:
    return [Target(name=f"t{i}", where=f"targets[{i}]", context=f"c{i}", wave=w)
            for i, w in enumerate(waves)]


def test_waves_run_in_order_and_a_failure_skips_the_later_ones() -> None:
    seen: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def work(t: Target, gate: bool, r: fleet.TargetResult) -> None:
        with lock:
            seen.append((t.name, gate))
        if t.name == "t1":
            raise ConfigError("Deployment shop/web: timed out waiting")
        r.result = fleet.SUCCEEDED

    results = fleet.run(_targets(0, 1, 1, 2), work, revision="abc", max_parallel=4,
                        staged=True)
    assert seen[0] == ("t0", True)  # wave 0 alone, first, and it gates the next
    assert sorted(seen[1:]) == [("t1", True), ("t2", True)]  # wave 2 never started
    assert [r.result for r in results] == ["succeeded", "failed", "succeeded", "skipped"]
    assert results[3].error == ("skipped: wave 1 failed at target t1: Deployment shop/web: "
                                "timed out waiting")
    assert results[3].revision == "abc"
    assert fleet.exit_status(results) == exitcodes.ERROR

    seen.clear()
    results = fleet.run(_targets(0, 1, 1, 2), work, revision="abc", max_parallel=4,
                        staged=True, continue_on_error=True)
    assert ("t3", False) in seen  # the last wave gates nothing
    assert [r.result for r in results] == ["succeeded", "failed", "succeeded", "succeeded"]


def test_the_exit_status_of_a_diff_over_a_fleet() -> None:
    rows = [fleet.TargetResult("a", "a", result=fleet.IN_SYNC),
            fleet.TargetResult("b", "b", result=fleet.IN_SYNC)]
    assert fleet.exit_status(rows) == exitcodes.OK
    rows[1].result = fleet.DIFFERS
    assert fleet.exit_status(rows) == exitcodes.DIFFERENT
    rows[0].result = fleet.FAILED
    assert fleet.exit_status(rows) == exitcodes.ERROR


def test_ctrl_c_starts_no_further_target() -> None:
    ran: list[str] = []
    release = threading.Event()

    def work(t: Target, _gate: bool, r: fleet.TargetResult) -> None:
        ran.append(t.name)
        if t.name == "t0":
            raise KeyboardInterrupt
        release.wait(10)  # t1, if it started, holds the one worker until after the run

    with pytest.raises(KeyboardInterrupt):
        fleet.run(_targets(0, 0, 0, 0), work, revision="abc", max_parallel=1)
    release.set()
    assert "t2" not in ran and "t3" not in ran
