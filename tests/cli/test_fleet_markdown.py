"""``diff --fleet -o markdown``'s report without clusters: a table row per
target, one collapsible block per changed target, Secret values masked, and
a size limit kept by cutting each diff to its share, saying so."""

from __future__ import annotations

from pathlib import Path

from kubectl_gitops.cli import fleet as fleet_cli
from kubectl_gitops.engine import diff
from kubectl_gitops.engine.fleet import DIFFERS, FAILED, IN_SYNC, TargetResult
from kubectl_gitops.engine.model import Item
from kubectl_gitops.kube.resources import ObjectId
from kubectl_gitops.source.tree import Source


def _item(kind: str, name: str, before: dict, after: dict) -> Item:
    def obj(data: dict) -> dict:
        return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "s"},
                "data": data}

    return Item(ObjectId("", kind, "s", name), "update", None, desired=obj(after),
                live=obj(before), predicted=obj(after))


def _row(target: str, items: list[Item], result: str = DIFFERS, error: str = "") \
        -> TargetResult:
    rendered = [diff.render(i, "git@abc1234") for i in items]
    return TargetResult(target, target, counts={"create": 0, "update": len(items), "prune": 0,
                                                "unchanged": 3},
                        result=result, error=error, rendered=rendered)


SRC = Source(root=Path("."), path="", mode="commit", ref="pr-42", sha="abc1234" + "0" * 33,
             name="", namespace=None)


def test_one_block_per_changed_target_and_secret_values_masked() -> None:
    secret = _item("Secret", "creds", {"password": "b2xk"}, {"password": "bmV3LXMzY3JldA=="})
    rows = [_row("eu", [secret]), TargetResult("us", "us", counts={
        "create": 0, "update": 0, "prune": 0, "unchanged": 4}, result=IN_SYNC),
        TargetResult("edge", "edge", result=FAILED, error="cannot reach | the cluster")]
    md = fleet_cli.markdown(rows, SRC)
    assert md.startswith("### kubectl gitops diff: `pr-42` (abc1234) against 3 targets\n")
    assert "1 with changes, 1 unchanged, 1 failed." in md
    assert "| eu | eu | 0 | 1 | 0 | 3 | changes |" in md
    assert "| us | us | 0 | 0 | 0 | 4 | no changes |" in md
    assert "| edge | edge | - | - | - | - | failed: cannot reach \\| the cluster |" in md
    assert md.count("<details>") == 1
    assert "*** (after)" in md and "bmV3" not in md and "b2xk" not in md


def test_the_report_stays_within_the_limit_and_says_what_it_left_out() -> None:
    big = {f"key{i}": "x" * 60 for i in range(400)}
    rows = [_row(t, [_item("ConfigMap", "big", {}, big)]) for t in ("a", "b")]
    md = fleet_cli.markdown(rows, SRC, limit=8000)
    assert len(md) <= 8000
    assert md.count("<details>") == 2 and md.count("```diff") == 2 and md.count("\n```\n") == 2
    assert "more lines; kubectl gitops diff --target a shows them all" in md
    assert "more lines; kubectl gitops diff --target b shows them all" in md
    full = fleet_cli.markdown(rows, SRC)  # the default limit holds the whole of both
    assert "more lines" not in full and full.count("+  key399: ") == 2
