"""``sloserve experiment batching --quick`` runs end to end and reports what it promises."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sloserve.cli import main
from sloserve.experiments.batching import BUILTIN_PROFILES, Case, Settings, capacity, make_slo, make_triton


@pytest.mark.slow
def test_quick_run_writes_table_json_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "batching", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "Capacity at 99% attainment" in printed and "targets" in printed
    assert "rows where no scheduler reaches 1.5x Triton default" in printed
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
        # the clairvoyant bound sits above every policy (within the searches' tolerance)
        bound = row["bound"]
        assert bound["kind"] == "clairvoyant" and bound["capacity"] >= 0.95 * max(caps.values()) > 0
        assert bound["vs_triton_default"] == pytest.approx(bound["capacity"] / caps["triton default"])
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


def test_scenarios_add_rows_with_their_conditions() -> None:
    from sloserve.experiments.batching import COLOCATED_SLOWDOWN, SCENARIOS, load_cases

    quick, _ = load_cases(None, quick=True)
    assert {c.scenario.key for c in quick} == {"base"} and len(quick) == 6
    full, _ = load_cases(None, quick=False)
    assert {c.scenario.key for c in full} == set(SCENARIOS)
    extra = [c for c in full if c.scenario.key != "base"]
    assert {c.label for c in extra} == {"tight", "loose"}
    coloc = [c for c in full if c.scenario.key == "coloc4"]
    assert all(
        c.profile.latency(1, 1, 4) == pytest.approx(COLOCATED_SLOWDOWN[3] * c.profile.latency(1))
        for c in coloc
    )
    # runs: as many requests as a one-instance run per instance; bursty ones at least 4000
    assert SCENARIOS["base"].duration(100.0, 20.0) == 20.0
    assert SCENARIOS["inst4"].duration(100.0, 20.0) == 5.0
    assert SCENARIOS["gamma3"].duration(10.0, 20.0) == 400.0
    # the SLOs stay those of the plain profile (4 and 16 times its batch-1 tail)
    base = {(c.profile.model, c.label): c.slos for c in full if c.scenario.key == "base"}
    assert all(c.slos == base[(c.profile.model, c.label)] for c in coloc)


def test_trace_arrivals_are_scaled_to_the_rate_under_test() -> None:
    from sloserve.experiments.batching import AZURE_CODE_TRACE, trace_arrivals

    if not AZURE_CODE_TRACE.exists():
        pytest.skip(f"{AZURE_CODE_TRACE} not present")
    a = trace_arrivals(200.0, 0, 5.0)
    b = trace_arrivals(200.0, 1, 5.0)
    assert len(a) == len(b) == 1000
    assert (len(a) - 1) / a.arrivals[-1] == pytest.approx(200.0 * (999 / 1000), rel=0.01)
    assert not np.array_equal(np.diff(a.arrivals), np.diff(b.arrivals))  # seeds pick other windows
    # bursty: inter-arrival CV far above Poisson's 1
    gaps = np.diff(a.arrivals)
    assert gaps.std() / gaps.mean() > 2


def test_four_instances_serve_what_one_cannot() -> None:
    from sloserve.experiments.batching import SCENARIOS, run_once

    p = BUILTIN_PROFILES[1]
    slo = 16 * p.tail_latency(1)
    one_max = p.max_batch / p.latency(p.max_batch)  # one instance's best throughput
    rate = 2.5 * one_max
    one = Case(p, "loose", (slo,))
    four = Case(p, "loose", (slo,), SCENARIOS["inst4"])
    assert run_once(one, make_slo(p, slo), rate, 0, 2.0).attainment < 0.6
    assert run_once(four, make_slo(p, slo), rate, 0, 2.0).attainment >= 0.99
