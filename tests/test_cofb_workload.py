"""``sloserve experiment cofb``: the trace-driven service's workload (found by review: past the
trace's length every rate sent the same requests, squeezed into the run's first seconds)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sloserve.experiments.cofb import SERVICES, Settings, make_workload, workload_text

DOC = next(s for s in SERVICES if s.trace_payload_bytes_per_unit is not None)


def trace_file(tmp_path: Path, n: int) -> Path:
    """A trace of ``n`` requests whose opening is sparse (10 requests over 900 s, then a burst),
    ``ContextTokens`` = the row number."""
    sparse = np.arange(10) * 100.0
    dense = 1000.0 + np.sort(np.random.default_rng(0).uniform(0, 100, n - 10))
    path = tmp_path / "trace.csv"
    rows = [f"{t:.6f},{i}" for i, t in enumerate(np.concatenate([sparse, dense]))]
    path.write_text("TIMESTAMP,ContextTokens\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("rate", [20.0, 40.0])
def test_each_rate_replays_its_own_window_at_that_rate(tmp_path: Path, rate: float) -> None:
    settings = replace(Settings(), duration=5.0, trace=trace_file(tmp_path, 1000))
    w = make_workload(DOC, rate, 0, settings)
    assert len(w) == rate * 5.0 and w.mean_rate == pytest.approx(rate, rel=0.02)
    assert np.all(np.isfinite(w.deadline_array)) and np.allclose(w.slos, DOC.slo)
    # the payloads are those of the replayed requests: ContextTokens (the row) x bytes per unit
    rows = w.payload_bytes / DOC.trace_payload_bytes_per_unit
    assert np.array_equal(rows, rows[0] + np.arange(len(w)))
    starts = {int(make_workload(DOC, rate, seed, settings).payload_bytes[0]) for seed in range(4)}
    assert len(starts) > 1  # the seed picks the window


def test_a_trace_shorter_than_the_run_is_replayed_whole_at_each_rate(tmp_path: Path) -> None:
    settings = replace(Settings(), duration=60.0, trace=trace_file(tmp_path, 200))
    slow, fast = (make_workload(DOC, rate, 0, settings) for rate in (20.0, 40.0))
    assert len(slow) == len(fast) == 200
    assert slow.mean_rate == pytest.approx(20.0, rel=0.02) and fast.mean_rate == pytest.approx(40.0, rel=0.02)


def test_the_report_says_what_the_trace_service_replays() -> None:
    text = workload_text(SERVICES, Settings(duration=10.0))
    assert "Poisson arrivals with lognormal or fixed payloads (video-detect" in text
    assert "doc-trace" not in text.split(";")[0]
    assert "doc-trace: windows of rate x 10 s consecutive requests of trace" in text
    assert "ContextTokens x 1024 bytes" in text
