"""Turning module choices and budgets into a :class:`~sloserve.planning.plan.Plan`.

Shared by every planner so that they report plans the same way. The rate split is ours (spec): the
module's rate is spread over its tuples at equal utilization, except that a tuple whose batches
would not fill in time at that share first receives enough real requests to fill them; only when
the module's whole rate cannot fill every tuple in time are dummy requests added.
"""

from __future__ import annotations

from collections.abc import Sequence

from sloserve.core.app import App
from sloserve.planning.choice import ModuleChoice, floor_stream
from sloserve.planning.latency import REL_TOL
from sloserve.planning.plan import DispatchPolicy, ModulePlan, Plan, PlanTuple
from sloserve.planning.problem import ModuleTable
from sloserve.policies.params import MACHINE_LIMIT


def split_rate(rate: float, capacity: Sequence[float], floor: Sequence[float]) -> list[tuple[float, float]]:
    """(real rate, dummy rate) per tuple for a module rate ``rate``.

    ``capacity`` is what each tuple may serve; ``floor`` the stream each needs so its batches fill in
    time. Real rates are ``max(floor_i, ρ·capacity_i)`` with one ``ρ`` chosen so they sum to
    ``rate``; if even the floors exceed ``rate``, the rate is spread in proportion to the floors and
    each tuple pads up to its floor with dummies.
    """
    if not capacity:
        return []
    need = sum(floor)
    if need >= rate:
        scale = rate / need if need > 0 else 0.0
        return [(f * scale, f * (1 - scale)) for f in floor]
    # Solve sum(max(f_i, rho * c_i)) = rate for rho: piecewise linear and increasing.
    order = sorted(range(len(capacity)), key=lambda i: floor[i] / capacity[i])
    fixed = need  # tuples still at their floor contribute their floor
    share = 0.0  # capacity of tuples already above their floor
    rho = 0.0
    for pos, i in enumerate(order):
        fixed -= floor[i]
        share += capacity[i]
        rho = (rate - fixed) / share
        nxt = order[pos + 1] if pos + 1 < len(order) else None
        if nxt is None or rho <= floor[nxt] / capacity[nxt]:
            break
    return [(max(f, rho * c), 0.0) for f, c in zip(floor, capacity, strict=True)]


def module_plan(
    table: ModuleTable, choice: ModuleChoice, budget: float, dispatch: DispatchPolicy = "harpagon"
) -> ModulePlan:
    """The plan of one module running ``choice`` under ``budget``."""
    caps = [float(table.capacity[t.config]) * t.count for t in choice.tuples]
    floors = [floor_stream(table, t.config, t.count, budget) for t in choice.tuples]
    tuples = []
    for t, (real, dummy) in zip(choice.tuples, split_rate(table.rate, caps, floors), strict=True):
        tuples.append(
            PlanTuple(
                hardware=table.hardware[int(table.hw[t.config])],
                batch=int(table.batch[t.config]),
                count=t.count,
                rate=real,
                dummy_rate=dummy if dummy > REL_TOL * max(real, 1.0) else 0.0,
                exec_time=float(table.latency[t.config]),
                wait=float(table.latency[t.config] * table.wait[t.config]) / t.count,
                design_utilization=float(table.utilization[t.config]),
                price_per_hour=float(table.price[t.config]),
            )
        )
    return ModulePlan(table.name, table.model, table.rate, budget, dispatch, tuple(tuples))


def assemble_plan(
    app: App,
    planner: str,
    tables: Sequence[ModuleTable],
    choices: Sequence[ModuleChoice],
    budgets: Sequence[float],
    dispatch: DispatchPolicy = "harpagon",
) -> Plan:
    """A feasible plan from one choice and one budget per module (in ``tables`` order)."""
    modules = tuple(module_plan(t, c, b, dispatch) for t, c, b in zip(tables, choices, budgets, strict=True))
    return Plan(app.name, planner, app.slo, app.rate, True, modules, app.edges)


def infeasible_plan(app: App, planner: str, reason: str) -> Plan:
    """The plan a planner returns when no configuration meets the SLO."""
    return Plan(app.name, planner, app.slo, app.rate, False, edges=app.edges, reason=reason)


def within_machine_limit(plan: Plan) -> Plan:
    """``plan``, or an infeasible one when a tuple needs more than ``MACHINE_LIMIT`` machines
    (more than one tuple or a plan file may hold)."""
    for m in plan.modules:
        for t in m.tuples:
            if t.count > MACHINE_LIMIT:
                why = f"module {m.name!r} needs {t.count} {t.hardware} machines in one tuple"
                why += f"; at most {MACHINE_LIMIT}"
                return Plan(plan.app, plan.planner, plan.slo, plan.rate, False, edges=plan.edges, reason=why)
    return plan
