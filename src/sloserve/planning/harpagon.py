"""The Harpagon planner (Zhao, Hu et al., INFOCOM 2025): the cheapest plan that meets the SLO.

Composes the three levels: the batch-aware latency model (:mod:`~sloserve.planning.latency`), the
module scheduler with multi-tuple configurations and dummy requests
(:mod:`~sloserve.planning.module_search`) and latency splitting
(:mod:`~sloserve.planning.splitting`). Called by the ``plan`` command, the benchmark and tests.
"""

from __future__ import annotations

from sloserve.planning.assemble import assemble_plan, infeasible_plan
from sloserve.planning.choice import CostTable
from sloserve.planning.module_search import harpagon_cost_table
from sloserve.planning.plan import Plan
from sloserve.planning.problem import PlanningProblem, module_tables, path_indices
from sloserve.planning.splitting import split_budgets


def plan_harpagon(problem: PlanningProblem) -> Plan:
    """Harpagon's plan for ``problem``; ``feasible`` is false (with a reason) when none fits."""
    app = problem.app
    tables = module_tables(problem)
    budgets = problem.budgets()
    cost_tables = [harpagon_cost_table(t, budgets) for t in tables]
    paths = path_indices(app, [t.name for t in tables])
    ks = split_budgets([c.cost.tolist() for c in cost_tables], paths, problem.grid_steps)
    if ks is None:
        plan = infeasible_plan(app, "harpagon", _why_infeasible(problem, cost_tables, paths))
    else:
        choices = [c.choice(k) for c, k in zip(cost_tables, ks, strict=True)]
        plan = assemble_plan(app, "harpagon", tables, choices, [float(budgets[k]) for k in ks])
    return plan


def _why_infeasible(
    problem: PlanningProblem, cost_tables: list[CostTable], paths: list[tuple[int, ...]]
) -> str:
    names = problem.app.topological_order()
    firsts = [c.first_feasible for c in cost_tables]
    hopeless = [n for n, f in zip(names, firsts, strict=True) if f is None]
    if hopeless:
        return f"no configuration of {hopeless} fits even the whole SLO ({problem.app.slo * 1e3:g} ms)"
    step_ms = problem.step * 1e3
    worst = max(paths, key=lambda p: sum(firsts[i] or 0 for i in p))
    need = sum(firsts[i] or 0 for i in worst) * step_ms
    chain = " -> ".join(names[i] for i in worst)
    return f"path {chain} needs at least {need:g} ms, over the SLO of {problem.app.slo * 1e3:g} ms"
