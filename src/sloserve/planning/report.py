"""Plans as terminal tables (``rich``); used by ``sloserve plan`` and the benchmark."""

from __future__ import annotations

from rich.table import Table

from sloserve.planning.plan import Plan


def plan_table(plan: Plan) -> Table:
    """One row per tuple: module, budget, hardware, batch, count, rates, latency bound and price."""
    title = f"{plan.planner} plan for {plan.app}: SLO {plan.slo * 1e3:g} ms at {plan.rate:g} req/s — " + (
        f"${plan.cost_per_hour:.3f}/h" if plan.feasible else f"infeasible: {plan.reason}"
    )
    t = Table(title=title, title_justify="left")
    for col in (
        "module",
        "budget ms",
        "dispatch",
        "hardware",
        "batch",
        "machines",
        "req/s",
        "dummy/s",
        "exec ms",
        "bound ms",
        "util",
        "$/h",
    ):
        t.add_column(col, justify="left" if col in ("module", "dispatch", "hardware") else "right")
    for m in plan.modules:
        first = True
        for tup in m.tuples:
            t.add_row(
                m.name if first else "",
                f"{m.budget * 1e3:.1f}" if first else "",
                m.dispatch if first else "",
                tup.hardware,
                str(tup.batch),
                str(tup.count),
                f"{tup.rate:.1f}",
                f"{tup.dummy_rate:.1f}" if tup.dummy_rate else "",
                f"{tup.exec_time * 1e3:.1f}",
                f"{tup.worst_case_latency * 1e3:.1f}" if m.dispatch == "harpagon" else "",
                f"{tup.utilization:.2f}",
                f"{tup.cost_per_hour:.3f}",
            )
            first = False
        if first:  # a module served only by shared nodes
            t.add_row(m.name, f"{m.budget * 1e3:.1f}", m.dispatch, "(shared)", "", "", "", "", "", "", "", "")
    for g in plan.shared:
        names = ", ".join(f"{x.module}×{x.batch}" for x in g.members)
        rate = sum(x.rate for x in g.members)
        busy = sum(x.exec_time for x in g.members)
        t.add_row(
            "[shared]",
            f"cycle {g.duty_cycle * 1e3:.1f}",
            "duty cycle",
            g.hardware,
            names,
            "1",
            f"{rate:.1f}",
            "",
            f"{busy * 1e3:.1f}",
            "",
            "",
            f"{g.price_per_hour:.3f}",
        )
    return t
