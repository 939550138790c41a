"""The jepsen_style membership nemesis: voters replaced under load, and the
run stays valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from jepsen_style.history import read_history
from jepsen_style.nemesis.kinds import NemesisChoiceError, parse_nemeses
from jepsen_style.runner import RunConfig, run


def test_membership_is_native_only_and_not_with_link_proxies() -> None:
    assert parse_nemeses("membership,kill", "native") == ["membership", "kill"]
    assert "membership" not in parse_nemeses("all", "native")
    with pytest.raises(NemesisChoiceError, match="link-proxy"):
        parse_nemeses("membership,partition", "native")
    with pytest.raises(NemesisChoiceError):
        parse_nemeses("membership", "pysyncobj")


@pytest.mark.timeout(120)
def test_register_run_with_voters_replaced_is_valid(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = RunConfig(workload="register", nemeses=["membership"], time_s=14, concurrency=4, rate=30,
                       nodes=3, engine="native", seed=7, out=out, quiet_s=(1.0, 2.0), fault_s=(2.0, 3.0))
    result = run(config)
    assert result.exit_code == 0, result.summary
    assert result.results["valid"] is True
    events = read_history(out / "history.jsonl")
    starts = [e for e in events if e.is_nemesis and e.f == "membership" and e.extra.get("phase") == "start"]
    ends = [e for e in events if e.is_nemesis and e.f == "membership" and e.extra.get("phase") == "end"]
    replaced = [e.value for e in starts if isinstance(e.value, dict) and "added" in e.value]
    assert len(replaced) >= 2, [e.value for e in starts]
    assert all("promoted" in e.value for e in ends if isinstance(e.value, dict) and e.value.get("nodes")), \
        [e.value for e in ends]
    assert result.results["counts"]["ok"] > 50
    # The removed nodes' logs are kept with the run.
    for change in replaced:
        assert (out / "logs" / f"{change['removed']}.log").stat().st_size > 0
