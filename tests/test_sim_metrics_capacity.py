"""Streaming latency histogram, metrics round trip, capacity search, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sloserve.core.profiles import AffineProfile
from sloserve.policies.triton import TritonDynamicBatcher
from sloserve.sim import ModelSetup, simulate
from sloserve.sim import workload as wl
from sloserve.sim.capacity import capacity_search
from sloserve.sim.metrics import LatencyHistogram, Metrics, MetricsCollector


def test_histogram_quantiles_are_within_a_tenth_of_a_percent() -> None:
    rng = np.random.default_rng(1)
    x = rng.lognormal(np.log(0.02), 0.8, 50_000)
    h = LatencyHistogram()
    for part in np.array_split(x, 7):
        h.add(part)
    for q in (0.5, 0.95, 0.99):
        assert h.quantile(q) == pytest.approx(np.quantile(x, q), rel=2e-3)
    assert h.max == x.max() and h.mean == pytest.approx(x.mean()) and h.count == len(x)
    xs, ys = h.cdf(100)
    assert len(xs) <= 100 and ys[-1] == pytest.approx(1.0) and np.all(np.diff(ys) >= 0)


def test_collector_counts_drops_as_misses_and_round_trips() -> None:
    c = MetricsCollector(flush_every=2)
    c.arrived(4)
    c.completed(1.0, [0.5, 0.9], [1.2, 0.95])  # one met, one late
    c.batch(2)
    c.dropped(1.1, "queue_timeout")
    c.dropped(1.2, "queue_timeout")
    m = c.result(duration=2.0)
    assert (m.requests, m.completed, m.met, m.dropped) == (4, 2, 1, 2)
    assert m.attainment == 0.25 and m.goodput == 0.5 and m.throughput == 1.0
    assert m.drops_by_reason == {"queue_timeout": 2} and m.batch_sizes == {2: 1}
    assert m.latency_max == pytest.approx(0.5)
    again = Metrics.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again == m


def _run(rate: float, seed: int) -> Metrics:
    p = AffineProfile("m", alpha=0.005, beta=0.001, max_batch=16)
    w = wl.with_slo(wl.poisson(rate, 8, seed=seed), 0.05)
    return simulate(ModelSetup("m", p, TritonDynamicBatcher(16)), w, seed=seed).metrics


def test_capacity_search_brackets_the_knee() -> None:
    res = capacity_search(_run, target=0.99, lo=50, hi=400, seeds=(0, 1), tol=0.02)
    assert res.bounded and res.lo <= res.rate < res.hi <= res.lo / (1 - 0.02) + 1e-9
    # capacity at full batches is 16 / 21 ms = 762 req/s; the 50 ms SLO allows less
    assert 300 < res.rate < 762
    passed = [p for p in res.probes if p.passed]
    assert all(p.score >= 0.99 for p in passed) and max(p.rate for p in passed) == res.rate
    assert _run(res.rate * 1.3, 0).attainment < 0.99
    # doubling hi when it still passes
    grown = capacity_search(_run, target=0.5, lo=10, hi=20, seeds=(0,), tol=0.1)
    assert grown.bounded and grown.rate > 20
    with pytest.raises(ValueError, match="target"):
        capacity_search(_run, target=1.5)
    with pytest.raises(ValueError, match="lo < hi"):
        capacity_search(_run, lo=10, hi=5)
    nothing = capacity_search(lambda r, s: _run(5000, s), lo=4000, hi=8000, seeds=(0,))
    assert nothing.rate == 0.0


def test_reports_write_json_and_pngs(tmp_path: Path) -> None:
    from sloserve.sim import report

    p = AffineProfile("m", alpha=0.005, beta=0.001, max_batch=16)
    r = simulate(ModelSetup("m", p, TritonDynamicBatcher(16)), wl.with_slo(wl.poisson(300, 5, seed=1), 0.05))
    path = report.write_json(
        tmp_path / "r.json", {"run": r.metrics, "tl": r.timeline}, seed=1, workload=r.workload
    )
    doc = json.loads(path.read_text())
    assert doc["seed"] == 1 and doc["machine"]["cores"] >= 1 and doc["run"]["requests"] == r.metrics.requests
    assert r.histogram is not None
    for f in (
        report.plot_latency_cdf({"a": r.histogram}, tmp_path / "cdf.png", slo=0.05),
        report.plot_attainment_vs_load({"a": [(100, 1.0), (200, 0.9)]}, tmp_path / "att.png"),
        report.plot_timeline({"a": r.timeline}, tmp_path / "tl.png"),
    ):
        assert f.read_bytes()[:4] == b"\x89PNG"
    table = report.metrics_table({"a": r.metrics}, slo=0.05)
    assert table.row_count == 1
