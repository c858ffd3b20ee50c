"""The brute-force reference against naive enumeration: it must be exact, or the benchmark lies."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from sloserve.core.app import App, Edge, Module
from sloserve.core.hardware import Hardware
from sloserve.core.profiles import AffineProfile, ProfileSet
from sloserve.planning.bruteforce import best_split, exact_module_choice, plan_bruteforce
from sloserve.planning.check import plan_problems
from sloserve.planning.problem import ModuleTable, PlanningProblem, module_tables
from sloserve.planning.workloads import random_problem

MS = 1e-3


def tiny_table(seed: int) -> ModuleTable:
    """Two hardware types, batches 1..3, two utilization levels; rates needing a few machines."""
    rng = np.random.default_rng(seed)
    hw = (Hardware("a", 4, float(rng.uniform(0.5, 1.0))), Hardware("b", 4, float(rng.uniform(1.0, 2.5))))
    ps = ProfileSet()
    for h, speed in zip(hw, (1.0, float(rng.uniform(1.5, 3.0))), strict=True):
        alpha, beta = float(rng.uniform(2, 10)) * MS, float(rng.uniform(1, 5)) * MS
        ps.add(AffineProfile("m", alpha / speed, beta / speed, hardware=h.name, max_batch=3))
    app = App("t", (Module("m", "m"),), (), slo=1.0, rate=float(rng.uniform(50, 300)))
    p = PlanningProblem(app, hw, ps, utilizations=(0.6, 0.9))
    return module_tables(p)[0]


def naive_module_cost(table: ModuleTable, budget: float) -> float | None:
    """Every assignment of machines to every config (the definition of the optimum), or None when
    that enumeration would be too large. No count can exceed the cost of the best single config
    divided by the cheapest price, which bounds the enumeration without assuming anything else."""
    nmin = table.min_machines(np.array(budget))
    single = np.maximum(nmin, np.ceil(table.rate / table.capacity - 1e-9)) * table.price
    if not np.isfinite(single).any():
        return math.inf
    bound = int(single.min() / table.price.min() + 1e-9)
    if (bound + 1) ** len(table) > 400_000:
        return None
    n = np.array(list(itertools.product(range(bound + 1), repeat=len(table))), dtype=float)
    ok = np.all((n == 0) | (n >= nmin), axis=1) & (n @ table.capacity >= table.rate * (1 - 1e-9))
    return float((n[ok] @ table.price).min()) if ok.any() else math.inf


@pytest.mark.parametrize("seed", range(6))
def test_exact_module_choice_matches_naive_enumeration(seed: int) -> None:
    table = tiny_table(seed)
    table = table.subset(np.flatnonzero(table.batch != 2)[:5])  # at most 5 configs
    checked = 0
    for factor in (1.3, 1.6, 2.0, 3.5, 8.0, 20.0):
        budget = float(table.latency.min() * factor)
        naive = naive_module_cost(table, budget)
        if naive is None:
            continue
        got = exact_module_choice(table, budget)
        assert got.cost == pytest.approx(naive, rel=1e-9), (seed, budget)
        if math.isfinite(got.cost):
            assert sum(t.count * table.price[t.config] for t in got.tuples) == pytest.approx(got.cost)
        checked += 1
    assert checked >= 3


def test_best_split_matches_itertools_over_the_grid() -> None:
    rng = np.random.default_rng(3)
    steps = 9
    paths = [(0, 1), (0, 2)]  # a detector feeding two classifiers
    for _ in range(20):
        costs = [np.sort(rng.uniform(1, 10, steps + 1))[::-1].copy() for _ in range(3)]
        for c in costs:
            c[: rng.integers(0, 3)] = np.inf
        want = math.inf
        for k in itertools.product(range(steps + 1), repeat=3):
            if all(sum(k[i] for i in p) <= steps for p in paths):
                want = min(want, sum(float(c[i]) for c, i in zip(costs, k, strict=True)))
        got = best_split(costs, paths, steps)
        if math.isinf(want):
            assert got is None
        else:
            assert got is not None
            assert all(sum(got[i] for i in p) <= steps for p in paths)
            assert sum(float(c[i]) for c, i in zip(costs, got, strict=True)) == pytest.approx(want)


def test_bruteforce_plans_are_valid_and_consistent() -> None:
    for seed in range(4):
        p = random_problem(seed, modules=3, hardware=2, grid_steps=20)
        plan = plan_bruteforce(p)
        assert plan.feasible
        assert plan_problems(plan) == []
        assert all(m.budget / p.step == pytest.approx(round(m.budget / p.step)) for m in plan.modules)


def test_bruteforce_reports_infeasible_when_the_slo_is_too_short() -> None:
    p = random_problem(1, modules=2, hardware=2, grid_steps=20)
    app = App(p.app.name, p.app.modules, p.app.edges, slo=1e-4, rate=p.app.rate)
    plan = plan_bruteforce(PlanningProblem(app, p.hardware, p.profiles, grid_steps=20))
    assert not plan.feasible and plan.reason
    assert math.isinf(plan.cost_per_hour)


def test_tree_apps_constrain_every_path() -> None:
    p = random_problem(0, modules=1, hardware=2)
    app = App(
        "tree",
        (Module("d", "m0"), Module("c1", "m0"), Module("c2", "m0")),
        (Edge("d", "c1", 1.5), Edge("d", "c2", 0.5)),
        slo=p.app.slo * 3,
        rate=p.app.rate,
    )
    plan = plan_bruteforce(PlanningProblem(app, p.hardware, p.profiles, grid_steps=24))
    assert plan.feasible and plan_problems(plan) == []
    budgets = {m.name: m.budget for m in plan.modules}
    assert budgets["d"] + budgets["c1"] <= app.slo + 1e-12
    assert budgets["d"] + budgets["c2"] <= app.slo + 1e-12
