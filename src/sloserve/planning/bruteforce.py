"""The brute-force reference: the exact cheapest plan on the planners' discretisation.

Same model and grid as Harpagon (:mod:`~sloserve.planning.latency`, :mod:`~sloserve.planning.problem`):
a module may run any set of tuples ``(h, b, n)``, padded with dummy requests as needed, and budgets
are whole grid steps. Exactness rests on two facts, both checked against naive enumeration in tests:

1. *One tuple per hardware type suffices.* Two tuples on one hardware type, ``(h, b1, n1)`` and
   ``(h, b2, n2)`` with ``b2``'s machine capacity at least ``b1``'s, can be merged into
   ``(h, b2, n1 + n2)``: it costs the same, serves at least as much and still fills its batches in
   time (``n1 + n2 >= n2 >= min_machines(b2)``). So per hardware type only the count ``n`` matters,
   with the best batch for that count: ``cap_h(n) = n · max{c_b : min_machines(b) <= n}``.
2. *Depth-first search with a sound bound.* Counts are enumerated per hardware type; a branch is
   cut only when its cost plus the remaining rate at the best price per capacity cannot beat the
   best plan found, which never cuts an optimum.

Budget splits are enumerated exhaustively over the grid (every vector with every path within the
SLO), vectorised with numpy. Called by the optimality benchmark and tests; exponential in the
number of modules, so meant for small apps (up to about 4 modules).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sloserve.planning.assemble import assemble_plan, infeasible_plan
from sloserve.planning.choice import NO_CHOICE, ModuleChoice, choose_batches
from sloserve.planning.latency import REL_TOL, FloatArray
from sloserve.planning.plan import Plan
from sloserve.planning.problem import (
    ModuleTable,
    PlanningProblem,
    module_tables,
    path_indices,
)


def _per_hardware(table: ModuleTable, budget: float) -> list[tuple[int, float, FloatArray]]:
    """Per hardware type that fits: (hardware index, price, ``cap_h(n)`` for n = 0..N).

    N is the fewest machines of that type that carry the whole rate alone; more are never needed.
    """
    nmin = table.min_machines(np.array(budget))
    out = []
    for h in np.unique(table.hw):
        idx = np.flatnonzero((table.hw == h) & np.isfinite(nmin))
        if not len(idx):
            continue
        idx = idx[np.argsort(nmin[idx], kind="stable")]  # configs by the machines they need
        cap, need = table.capacity[idx], nmin[idx]
        top = int(np.min(np.maximum(need, np.ceil(table.rate / cap - REL_TOL))))
        run_max = np.maximum.accumulate(cap)
        n = np.arange(top + 1)
        pos = np.searchsorted(need, n, side="right") - 1
        best_cap = np.where(pos >= 0, run_max[np.maximum(pos, 0)], 0.0)
        out.append((int(h), float(table.price[idx[0]]), np.asarray(n * best_cap, dtype=np.float64)))
    return out


def exact_module_choice(table: ModuleTable, budget: float) -> ModuleChoice:
    """The cheapest set of tuples that carries ``table.rate`` within ``budget``."""
    hws = _per_hardware(table, budget)
    if not hws:
        return NO_CHOICE
    r = table.rate
    # Price per unit of capacity at its best count, per hardware type; the search visits the
    # cheapest first (good plans early) and bounds a branch by the cheapest type left.
    per_cap = [price / float(np.max(cap[1:] / np.arange(1, len(cap)))) for _, price, cap in hws]
    order = sorted(range(len(hws)), key=lambda i: per_cap[i])
    hws = [hws[i] for i in order]
    bound = [min(per_cap[i] for i in order[j:]) for j in range(len(order))]
    best_cost = math.inf
    best_counts: list[int] = []
    counts = [0] * len(hws)
    last = len(hws) - 1

    def search(i: int, need: float, cost: float) -> None:
        nonlocal best_cost, best_counts
        if need <= r * REL_TOL:
            if cost < best_cost * (1 - REL_TOL):
                best_cost, best_counts = cost, list(counts)
            return
        if i > last or cost + need * bound[i] >= best_cost * (1 - REL_TOL):
            return
        _, price, cap = hws[i]
        fewest = int(np.searchsorted(cap, need * (1 - REL_TOL)))  # cap is non-decreasing in n
        top = min(len(cap) - 1, fewest)
        for n in [top] if i == last else range(top, -1, -1):
            if i == last and n < fewest:
                return
            counts[i] = n
            search(i + 1, need - float(cap[n]), cost + n * price)
        counts[i] = 0

    search(0, r, 0.0)
    if not math.isfinite(best_cost):
        return NO_CHOICE
    chosen = {h: n for (h, _, _), n in zip(hws, best_counts, strict=True)}
    return ModuleChoice(best_cost, choose_batches(table, budget, chosen))


MAX_SPLITS = 200_000_000
"""Most budget splits (grid points to the power of the modules) the search takes on: seconds of
numpy; the next module or a finer grid multiplies it."""


class SearchTooLarge(ValueError):
    """The app and grid ask for more budget splits than :data:`MAX_SPLITS`."""


def best_split(costs: Sequence[FloatArray], paths: Sequence[tuple[int, ...]], steps: int) -> list[int] | None:
    """Budget indices minimising the summed cost over every split with all paths within ``steps``.

    Loops over the first module's index and broadcasts the others (``(steps+1)**(m-1)`` cells);
    raises :class:`SearchTooLarge` before a search of more than :data:`MAX_SPLITS` splits.
    """
    m = len(costs)
    if (steps + 1) ** m > MAX_SPLITS:
        raise SearchTooLarge(
            f"an exhaustive budget split would try {(steps + 1) ** m:.2g} splits ({steps + 1} grid "
            f"points ^ {m} modules; at most {MAX_SPLITS:.0e}): it is meant for small apps; use "
            "harpagon, or fewer planner.grid_steps"
        )
    grid = np.arange(steps + 1)
    shape = (steps + 1,) * (m - 1)
    views = [tuple(steps + 1 if a == j else 1 for a in range(m - 1)) for j in range(m - 1)]
    rest = np.zeros(shape)
    for j in range(1, m):
        rest = rest + np.asarray(costs[j]).reshape(views[j - 1])
    used = []
    for p in paths:
        u = np.zeros(shape, dtype=np.int64)
        for i in p:
            if i:
                u = u + grid.reshape(views[i - 1])
        used.append((u, 0 in p))
    best_total, best = math.inf, None
    for k0 in range(steps + 1):
        if not math.isfinite(costs[0][k0]):
            continue
        ok = np.ones(shape, dtype=bool)
        for u, has0 in used:
            ok &= u + (k0 if has0 else 0) <= steps
        total = np.where(ok, rest + costs[0][k0], np.inf)
        flat = int(np.argmin(total))
        if total.flat[flat] < best_total * (1 - REL_TOL):
            best_total = float(total.flat[flat])
            best = [k0, *(int(v) for v in np.unravel_index(flat, shape))]
    return best if math.isfinite(best_total) else None


def plan_bruteforce(problem: PlanningProblem) -> Plan:
    """The exact optimum of ``problem`` on its grid (see the module docstring); raises
    :class:`SearchTooLarge` before starting a search it would not finish."""
    app = problem.app
    tables = module_tables(problem)
    budgets = problem.budgets()
    choices = [[exact_module_choice(t, float(b)) for b in budgets] for t in tables]
    costs = [np.array([c.cost for c in row]) for row in choices]
    paths = path_indices(app, [t.name for t in tables])
    ks = best_split(costs, paths, problem.grid_steps)
    if ks is None:
        plan = infeasible_plan(app, "bruteforce", "no budget split on the grid meets the SLO")
    else:
        plan = assemble_plan(
            app,
            "bruteforce",
            tables,
            [row[k] for row, k in zip(choices, ks, strict=True)],
            [float(budgets[k]) for k in ks],
        )
    return plan
