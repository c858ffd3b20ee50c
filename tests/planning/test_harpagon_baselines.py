"""The Nexus-style and InferLine-style baselines."""

from __future__ import annotations

import math

import pytest

from sloserve.core.app import App, Edge, Module
from sloserve.core.hardware import Hardware
from sloserve.core.profiles import AffineProfile, ProfileSet
from sloserve.planning.bruteforce import plan_bruteforce
from sloserve.planning.check import plan_problems
from sloserve.planning.harpagon import plan_harpagon
from sloserve.planning.inferline import plan_inferline
from sloserve.planning.nexus import plan_nexus
from sloserve.planning.problem import PlanningProblem
from sloserve.planning.workloads import random_problem

MS = 1e-3
ALPHA, BETA = 5 * MS, 1 * MS  # d(b) = 5 + b ms


def paper_problem(app: App, hardware: tuple[Hardware, ...] = (Hardware("gpu", 4, 1.0),)) -> PlanningProblem:
    """Nexus's own setting: machines loaded fully, no wait allowance, one hardware type."""
    ps = ProfileSet()
    for m in {m.model for m in app.modules}:
        for h in hardware:
            ps.add(AffineProfile(m, ALPHA, BETA, hardware=h.name, max_batch=64))
    return PlanningProblem(app, hardware, ps, grid_steps=20, utilizations=(1.0,), wait_quantile=None)


def test_nexus_batch_is_the_largest_that_runs_in_half_the_budget() -> None:
    app = App("one", (Module("m", "m"),), (), slo=0.1, rate=1000.0)
    plan = plan_nexus(paper_problem(app))
    assert plan.feasible and plan_problems(plan) == []
    (t,) = plan.module("m").tuples
    assert t.batch == 45  # 2 * (5 + 45) ms = 100 ms
    throughput = 45 / (50 * MS)
    assert t.count == math.floor(1000 / throughput)
    assert t.rate == pytest.approx(t.count * throughput)
    assert plan.module("m").dispatch == "round_robin"
    # the rest runs on a duty-cycle node
    (node,) = plan.shared
    assert node.members[0].rate == pytest.approx(1000 - t.rate)
    assert node.duty_cycle + node.members[0].exec_time <= 0.1 + 1e-12


def test_nexus_packs_residuals_of_two_modules_onto_one_machine() -> None:
    app = App("pair", (Module("a", "x"), Module("b", "y")), (Edge("a", "b", 1.0),), slo=0.2, rate=950.0)
    plan = plan_nexus(paper_problem(app))
    assert plan.feasible and plan_problems(plan) == []
    assert len(plan.shared) == 1 and {x.module for x in plan.shared[0].members} == {"a", "b"}
    full = sum(m.cost_per_hour for m in plan.modules)
    assert plan.cost_per_hour == pytest.approx(full + 1.0)  # one shared machine for both residuals


def test_nexus_even_split_gives_each_module_its_share_of_the_longest_path() -> None:
    app = App(
        "tree",
        (Module("d", "x"), Module("c1", "y"), Module("c2", "y")),
        (Edge("d", "c1", 2.0), Edge("d", "c2", 1.0)),
        slo=0.2,
        rate=300.0,
    )
    plan = plan_nexus(paper_problem(app), split="even")
    assert plan.feasible and plan.planner == "nexus-even"
    assert {m.name: round(m.budget * 1e3, 6) for m in plan.modules} == {"d": 100.0, "c1": 100.0, "c2": 100.0}


@pytest.mark.parametrize("seed", range(12))
def test_baseline_plans_meet_the_model(seed: int) -> None:
    p = random_problem(seed, grid_steps=30)
    for plan in (plan_nexus(p), plan_nexus(p, "even"), plan_inferline(p)):
        if plan.feasible:
            assert plan_problems(plan) == [], plan.planner
        else:
            assert plan.reason and plan.modules == ()


@pytest.mark.parametrize("seed", range(12))
def test_the_exact_optimum_is_never_above_nexus_without_shared_nodes(seed: int) -> None:
    # Nexus's dedicated machines are also a valid batch-aware plan on the same grid, so the brute
    # force can only be cheaper; shared nodes are outside that space.
    p = random_problem(seed, grid_steps=20)
    nexus, best = plan_nexus(p), plan_bruteforce(p)
    if nexus.feasible and not nexus.shared:
        assert best.cost_per_hour <= nexus.cost_per_hour * (1 + 1e-9)


def test_inferline_downgrades_to_cheaper_hardware_when_it_suffices() -> None:
    app = App("one", (Module("m", "m"),), (), slo=0.2, rate=200.0)
    hw = (Hardware("cheap", 4, 0.5), Hardware("dear", 4, 3.0))
    ps = ProfileSet()
    ps.add(AffineProfile("m", 6 * MS, 1 * MS, hardware="cheap", max_batch=32))
    ps.add(AffineProfile("m", 3 * MS, 0.5 * MS, hardware="dear", max_batch=32))
    plan = plan_inferline(PlanningProblem(app, hw, ps))
    assert plan.feasible and plan_problems(plan) == []
    assert {t.hardware for t in plan.module("m").tuples} == {"cheap"}
    assert plan.module("m").tuples[0].batch > 1  # it also grew the batch


def test_inferline_reports_infeasible_start() -> None:
    app = App("one", (Module("m", "m"),), (), slo=0.004, rate=200.0)
    plan = plan_inferline(paper_problem(app))
    assert not plan.feasible and "SLO" in plan.reason


@pytest.mark.parametrize(("slo", "nexus_over_harpagon"), [(0.03, 13 / 7), (0.05, 6.5 / 5.5), (0.15, 1.0)])
def test_batch_aware_dispatch_pays_off_under_tight_slos(slo: float, nexus_over_harpagon: float) -> None:
    # detector -> classifier needing many machines: batch-aware dispatch fits larger batches into a
    # tight budget; with a loose one both reach the throughput plateau of d(b) = 5 + b ms.
    app = App(
        "va", (Module("det", "x"), Module("cls", "y")), (Edge("det", "cls", 3.0),), slo=slo, rate=2000.0
    )
    p = paper_problem(app, (Hardware("t4", 4, 0.5), Hardware("a10", 4, 1.0)))
    ratio = plan_nexus(p).cost_per_hour / plan_harpagon(p).cost_per_hour
    assert ratio == pytest.approx(nexus_over_harpagon)
