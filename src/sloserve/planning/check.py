"""Checks a plan against the latency model it claims to meet; tests and ``sloserve plan`` use it.

A plan carries its own execution times, so the check needs no profiles: every module's tuples
carry its rate, every tuple meets the module budget under its dispatch policy and keeps up with
its stream, budgets fit the SLO along every path, and shared nodes fit their duty cycles.
"""

from __future__ import annotations

from collections.abc import Iterator

from sloserve.core.app import App, Edge, Module
from sloserve.planning.latency import REL_TOL, tuple_fits, tuple_latency
from sloserve.planning.plan import ModulePlan, Plan


def _module_problems(m: ModulePlan, shared_rate: float) -> Iterator[str]:
    served = sum(t.rate for t in m.tuples) + shared_rate
    if abs(served - m.rate) > REL_TOL * max(m.rate, 1.0) * 10:
        yield f"module {m.name}: tuples serve {served:g} req/s of its {m.rate:g}"
    for t in m.tuples:
        what = f"module {m.name}: tuple ({t.hardware}, b={t.batch}, n={t.count})"
        stream = t.rate + t.dummy_rate
        if m.dispatch == "harpagon":
            ok = tuple_fits(t.exec_time, t.wait, t.batch, t.count, t.capacity / t.count, m.budget, stream)
            if not ok:
                yield f"{what} misses its {m.budget * 1e3:g} ms budget or cannot keep up"
        else:  # round-robin: each machine collects its own batch from rate / count
            if tuple_latency(t.exec_time, t.wait, t.batch, stream / t.count) > m.budget * (1 + REL_TOL):
                yield f"{what} misses its {m.budget * 1e3:g} ms budget under round-robin dispatch"
            if stream > t.capacity * (1 + REL_TOL):
                yield f"{what} cannot keep up with its stream"


def plan_problems(plan: Plan) -> list[str]:
    """What is wrong with ``plan`` (empty when it meets the model); infeasible plans have no tuples."""
    if not plan.feasible:
        return [] if not plan.modules else ["an infeasible plan lists modules"]
    out: list[str] = []
    shared_rate = {m.name: 0.0 for m in plan.modules}
    for g in plan.shared:
        busy = sum(x.exec_time for x in g.members)
        if busy > g.duty_cycle * (1 + REL_TOL):
            out.append(
                f"shared {g.hardware} node: batches take {busy * 1e3:g} ms of a "
                f"{g.duty_cycle * 1e3:g} ms cycle"
            )
        for x in g.members:
            shared_rate[x.module] += x.rate
            budget = plan.module(x.module).budget
            if g.duty_cycle + x.exec_time > budget * (1 + REL_TOL):
                out.append(f"shared {g.hardware} node: module {x.module} misses its budget")
    for m in plan.modules:
        out.extend(_module_problems(m, shared_rate[m.name]))
    app = App(
        plan.app,
        tuple(Module(m.name, m.model) for m in plan.modules),
        tuple(Edge(e.parent, e.child, e.fanout) for e in plan.edges),
        slo=plan.slo,
        rate=plan.rate,
    )
    budgets = {m.name: m.budget for m in plan.modules}
    for path in app.paths():
        total = sum(budgets[n] for n in path)
        if total > plan.slo * (1 + REL_TOL):
            chain = " -> ".join(path)
            out.append(f"path {chain}: budgets sum to {total * 1e3:g} ms > SLO {plan.slo * 1e3:g} ms")
    return out
