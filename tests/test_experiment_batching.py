"""``sloserve experiment batching --quick`` runs end to end and reports what it promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sloserve.cli import main
from sloserve.experiments.batching import BUILTIN_PROFILES, Case, Settings, capacity, make_slo, make_triton


@pytest.mark.slow
def test_quick_run_writes_table_json_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "batching", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "Capacity at 99% attainment" in printed and "targets" in printed
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["experiment"] == "batching" and "machine" in doc
    assert {r["model"] for r in doc["rows"]} == {p.model for p in BUILTIN_PROFILES}
    for row in doc["rows"]:
        caps = row["capacity"]
        assert set(caps) == {
            "slo",
            "triton default",
            "triton best",
            "ray default",
            "ray best",
            "clipper aimd",
        }
        assert all(v >= 0 for v in caps.values())
        assert row["ratio_vs_triton_default"] == pytest.approx(caps["slo"] / caps["triton default"])
        assert row["settings"]["triton best"]["max_batch_size"] >= 1
    pngs = sorted(p.name for p in tmp_path.glob("attainment_*.png"))
    assert len(pngs) == len(doc["rows"])


def test_capacity_search_ranks_a_sensible_policy_above_a_bad_one() -> None:
    # batch 1 cannot exploit batching: its capacity is far below the SLO-aware batcher's
    p = BUILTIN_PROFILES[0]
    case = Case(p, "loose", (16 * p.tail_latency(1),))
    s = Settings(duration=3.0, seeds=(0,), tol=0.1)
    good = capacity(case, make_slo(p, case.slo), s, seeds=s.seeds, tol=s.tol)
    bad = capacity(case, make_triton(1), s, seeds=s.seeds, tol=s.tol)
    assert good > 2 * bad > 0
