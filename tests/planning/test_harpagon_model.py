"""The shared latency model, problem tables and rate split that every planner builds on."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from sloserve.core.app import App, Edge, Module
from sloserve.core.hardware import Hardware
from sloserve.core.profiles import AffineProfile, ProfileSet
from sloserve.planning.assemble import split_rate
from sloserve.planning.latency import (
    min_machines,
    min_stream_rate,
    tuple_fits,
    tuple_latency,
    wait_factor,
)
from sloserve.planning.problem import PlanningProblem, module_tables, path_indices

MS = 1e-3


def problem(**kw: object) -> PlanningProblem:
    app = App(
        "a", (Module("det", "det"), Module("cls", "cls")), (Edge("det", "cls", 2.0),), slo=0.2, rate=100
    )
    hw = (Hardware("slow", 4, 0.5), Hardware("fast", 4, 2.0))
    ps = ProfileSet()
    for model, alpha in (("det", 10 * MS), ("cls", 3 * MS)):
        ps.add(AffineProfile(model, alpha, 2 * MS, hardware="slow", max_batch=8))
        ps.add(AffineProfile(model, alpha / 2, 0.5 * MS, hardware="fast", max_batch=8, tail_factor=1.2))
    return PlanningProblem(app, hw, ps, **kw)  # type: ignore[arg-type]


def test_wait_factor_is_the_p99_tail_of_erlang_batches() -> None:
    # A(b, rho) = ln(1/(1-q)) / (2 b (1 - rho)); n machines wait d * A / n.
    assert wait_factor(4, 0.75, 0.99) == pytest.approx(math.log(100) / (2 * 4 * 0.25))
    assert wait_factor(1, 0.5, 0.9) == pytest.approx(math.log(10) / 1.0)
    assert wait_factor(8, 0.9, None) == 0.0  # the paper's model: no allowance
    assert wait_factor(8, 1.0, 0.99) == math.inf


@pytest.mark.parametrize("seed", range(5))
def test_min_machines_is_the_least_count_that_fits_at_full_load(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(200):
        d = float(rng.uniform(1, 50)) * MS
        b = int(rng.integers(1, 33))
        rho = float(rng.choice([0.6, 0.75, 0.9]))
        a = wait_factor(b, rho, 0.99)
        cap = rho * b / d
        budget = d * float(rng.uniform(1.05, 20))
        n = min_machines(d, a, cap, b, budget)
        assert n >= 1 and math.isfinite(n)
        n = int(n)
        assert tuple_fits(d, d * a / n, b, n, cap, budget, stream=n * cap)
        if n > 1:
            assert not tuple_fits(d, d * a / (n - 1), b, n - 1, cap, budget, stream=(n - 1) * cap)
    assert min_machines(0.01, 1.0, 100.0, 1, 0.01) == math.inf  # d(b) >= budget: never


def test_tuple_latency_and_min_stream_rate_agree() -> None:
    d, q, b, budget = 0.02, 0.005, 8, 0.1
    s = min_stream_rate(d, q, b, budget)
    assert tuple_latency(d, q, b, s) == pytest.approx(budget)
    assert min_stream_rate(d, q, b, d + q - 1e-9) == math.inf


def test_module_tables_follow_topology_rates_and_prune_dominated_levels() -> None:
    p = problem()
    det, cls = module_tables(p)
    assert (det.name, cls.name) == ("det", "cls")
    assert (det.rate, cls.rate) == (100, 200)
    # latencies are the profiles' tail latencies on each hardware's cores
    fast = p.profiles.get("det", "fast")
    j = int(np.flatnonzero((det.hw == 1) & (det.batch == 4))[0])
    assert det.latency[j] == pytest.approx(fast.tail_latency(4, 4))
    # configs are grouped by hardware (the module search relies on it)
    assert np.all(np.diff(det.hw) >= 0)
    # a kept level is never beaten by a higher level of the same batch needing no more fill time
    need = det.latency * det.wait + det.batch / det.capacity
    for h in (0, 1):
        for b in range(1, 9):
            rows = np.flatnonzero((det.hw == h) & (det.batch == b))
            assert len(rows) >= 1
            for lo, hi in itertools.pairwise(rows):
                assert need[hi] > need[lo]
    assert path_indices(p.app, ["det", "cls"]) == [(0, 1)]


def test_problem_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match="utilizations"):
        problem(utilizations=(0.5, 1.0))  # 1.0 needs wait_quantile=None
    problem(utilizations=(1.0,), wait_quantile=None)
    with pytest.raises(ValueError, match="grid_steps"):
        problem(grid_steps=0)
    p = problem()
    with pytest.raises(ValueError, match="no profile"):
        PlanningProblem(App("x", (Module("m", "unknown"),), (), slo=0.1, rate=1), p.hardware, p.profiles)
    with pytest.raises(ValueError, match="rate > 0"):
        PlanningProblem(App("x", (Module("m", "det"),), (), slo=0.1, rate=0), p.hardware, p.profiles)
    with pytest.raises(ValueError, match="price_per_hour"):
        PlanningProblem(p.app, (Hardware("slow", 4, 0.0), Hardware("fast", 4, 1.0)), p.profiles)


def test_split_rate_balances_load_and_pads_only_what_real_requests_cannot_fill() -> None:
    # Plenty of rate: equal utilization above each floor, no dummies.
    out = split_rate(90.0, [100.0, 50.0], [10.0, 10.0])
    assert sum(r for r, _ in out) == pytest.approx(90.0)
    assert out[0][0] / 100 == pytest.approx(out[1][0] / 50)
    assert all(u == 0 for _, u in out)
    # A tuple whose share would not fill its batches gets its floor first.
    out = split_rate(100.0, [100.0, 50.0], [10.0, 45.0])
    assert out[1][0] == pytest.approx(45.0) and out[0][0] == pytest.approx(55.0)
    # Not enough real requests for all floors: spread by floor, pad the rest with dummies.
    out = split_rate(10.0, [100.0, 50.0], [20.0, 5.0])
    assert [r for r, _ in out] == pytest.approx([8.0, 2.0])
    assert [r + u for r, u in out] == pytest.approx([20.0, 5.0])
