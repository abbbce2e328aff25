"""One duration parser: Go's time.ParseDuration grammar, and a bare number as seconds."""

from __future__ import annotations

import pytest

from kubectl_gitops import durations


@pytest.mark.parametrize(("text", "seconds"), [
    ("30", 30), ("1.5", 1.5), ("0", 0), ("+0", 0), ("-0", 0),
    ("30s", 30), ("1m30s", 90), ("2h", 7200), ("500ms", 0.5), ("1.5h", 5400),
    ("2h45m", 9900), ("1h2m3.5s", 3723.5), (".5s", 0.5), ("1.s", 1), ("+5m", 300),
    ("300ms", 0.3), ("1500us", 0.0015), ("1500\u00b5s", 0.0015), ("1500\u03bcs", 0.0015),
    ("2000000ns", 0.002), ("1m1m", 120), (" 5m ", 300),
])
def test_go_grammar_and_bare_seconds(text: str, seconds: float) -> None:
    assert durations.parse(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [
    "", ".", "soon", "s", "1x", "1 m", "1m 30s", "1.2.3s", "m1", "--1s", "1d", "1M", "0x10s",
])
def test_everything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        durations.parse(text)


def test_a_negative_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        durations.parse("-1s")
