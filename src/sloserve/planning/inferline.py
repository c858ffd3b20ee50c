"""InferLine-style greedy planning (Crankshaw et al., SoCC 2020), a second baseline.

Paper: start every model on its fastest hardware with batch 1 and enough replicas for the rate;
then repeatedly apply the cost-reducing action that keeps the pipeline within the SLO — increase
a model's batch size, remove a replica, or move a model to cheaper hardware — until none is left.
Each model has one centralized batched queue that idle replicas pull from.

Spec (ours): latencies come from the shared model (:mod:`~sloserve.planning.latency`) instead of
InferLine's simulator: one tuple per module, collected from the module's whole stream, so its
latency is ``d(b) + b / r`` and it needs ``ceil(r / c)`` machines. Replicas are always the fewest
that carry the rate, so "remove a replica" is part of the other two actions; "increase batch"
jumps to the smallest larger batch that saves a replica (a step of one would rarely change the
cost, and the greedy only takes cost-reducing steps). Budgets are the modules' latencies with the
slack left on each path spread in proportion.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

from sloserve.planning.assemble import infeasible_plan, module_plan
from sloserve.planning.choice import ModuleChoice, TupleChoice
from sloserve.planning.latency import REL_TOL
from sloserve.planning.plan import Plan
from sloserve.planning.problem import ModuleTable, PlanningProblem, module_tables, path_indices


@dataclass(frozen=True, slots=True)
class _State:
    """One module's configuration in the greedy search."""

    config: int
    count: int
    latency: float
    cost: float


def _state(table: ModuleTable, j: int) -> _State:
    n = max(1, math.ceil(table.rate / float(table.capacity[j]) * (1 - REL_TOL)))
    lat = float(table.latency[j]) + int(table.batch[j]) / table.rate
    return _State(j, n, lat, n * float(table.price[j]))


def _actions(table: ModuleTable, s: _State) -> Iterator[_State]:
    """Configurations one action away from ``s``: a larger batch, or the next cheaper hardware."""
    hw, batch = int(table.hw[s.config]), int(table.batch[s.config])
    same = [j for j in range(len(table)) if table.hw[j] == hw and table.batch[j] > batch]
    for j in sorted(same, key=lambda j: int(table.batch[j])):
        nxt = _state(table, j)
        if nxt.count < s.count:
            yield nxt
            break
    price = float(table.price[s.config])
    cheaper = sorted({float(table.price[j]) for j in range(len(table)) if table.price[j] < price})
    if cheaper:
        target = cheaper[-1]
        options = [j for j in range(len(table)) if table.price[j] == target and table.batch[j] <= batch]
        if options:
            yield _state(table, max(options, key=lambda j: int(table.batch[j])))


def plan_inferline(problem: PlanningProblem) -> Plan:
    """InferLine-style plan of ``problem``."""
    start = time.perf_counter()
    app = problem.app
    if app.rate <= 0:
        raise ValueError(f"app {app.name!r}: planning needs an input rate > 0, got {app.rate}")
    tables = module_tables(problem)
    paths = path_indices(app, [t.name for t in tables])
    slo = app.slo * (1 + REL_TOL)

    def fits(states: list[_State]) -> bool:
        return all(sum(states[i].latency for i in p) <= slo for p in paths)

    states = []
    for t in tables:
        fastest = min((j for j in range(len(t)) if t.batch[j] == 1), key=lambda j: float(t.latency[j]))
        states.append(_state(t, fastest))
    if not fits(states):
        plan = infeasible_plan(app, "inferline", "batch 1 on the fastest hardware already misses the SLO")
        return replace(plan, planning_time=time.perf_counter() - start)
    while True:
        best: tuple[float, float, int, _State] | None = None  # (saving, latency, module, state)
        for m, (t, s) in enumerate(zip(tables, states, strict=True)):
            for nxt in _actions(t, s):
                trial = [*states[:m], nxt, *states[m + 1 :]]
                saving = s.cost - nxt.cost
                if saving > REL_TOL * s.cost and fits(trial):
                    key = (saving, -nxt.latency, m, nxt)
                    if best is None or key[:2] > best[:2]:
                        best = key
        if best is None:
            break
        states[best[2]] = best[3]

    # Budgets: each module's latency, with every path's slack shared in proportion.
    scale = [min(app.slo / sum(states[i].latency for i in p) for p in paths if m in p) for m in range(len(states))]
    modules = tuple(
        module_plan(t, ModuleChoice(s.cost, (TupleChoice(s.config, s.count),)), s.latency * f)
        for t, s, f in zip(tables, states, scale, strict=True)
    )
    plan = Plan(app.name, "inferline", app.slo, app.rate, True, modules, app.edges)
    return replace(plan, planning_time=time.perf_counter() - start)
