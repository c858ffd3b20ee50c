"""Harpagon's latency splitting (level 3): module budgets on the grid from the modules' cost tables.

Paper: start every module at its smallest feasible budget, give latency to the module whose cost
falls most per millisecond ("latency-cost efficiency") until the SLO is used, then refine locally.
Spec (ours):

- budgets are grid indices ``k_m`` (budget ``k_m · step``); every app path must keep
  ``sum(k_m) <= grid_steps``;
- a *grant* gives module ``m`` ``j`` more steps, for any ``j`` up to the slack of its tightest path;
  efficiency is ``(cost_m(k_m) − cost_m(k_m + j)) / j``, so a drop two steps away is seen (cost
  tables are step functions);
- *refinement* (the paper's pair moves, generalised so a branch can feed several children): take
  budget back from one module down to the start of one of its cost plateaus, or push one module
  up to its next cost drops while taking the steps this needs from the others; re-grant the freed
  slack greedily and keep the best move that lowers the total cost; repeat until none does;
- finally any slack left is granted in module order (it costs nothing and gives dispatchers room).

Called by :mod:`sloserve.planning.harpagon` with the tables of :mod:`~sloserve.planning.module_search`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sloserve.planning.latency import REL_TOL

Costs = Sequence[Sequence[float]]
"""``costs[m][k]``: price of module m at budget index k (``inf`` when nothing fits)."""


class _Splitter:
    """State of one split: current indices and the paths through each module."""

    def __init__(self, costs: Costs, paths: Sequence[tuple[int, ...]], steps: int) -> None:
        self.costs = costs
        self.paths = paths
        self.steps = steps
        self.through = [[j for j, p in enumerate(paths) if m in p] for m in range(len(costs))]
        # Budget indices where each module's cost drops: the only grants worth considering.
        self.drops = [[k for k in range(1, len(c)) if c[k] < c[k - 1]] for c in costs]

    def slack(self, k: Sequence[int], m: int) -> int:
        return self.steps - max(sum(k[i] for i in self.paths[j]) for j in self.through[m])

    def total(self, k: Sequence[int]) -> float:
        return sum(c[i] for c, i in zip(self.costs, k, strict=True))

    def grant(self, k: list[int], blocked: int = -1) -> None:
        """Greedy grants by latency-cost efficiency until no grant lowers the cost."""
        while True:
            best = (0.0, 0, -1)  # (efficiency, -steps, module)
            used = [sum(k[i] for i in p) for p in self.paths]
            for m, cost in enumerate(self.costs):
                if m == blocked:
                    continue
                room = self.steps - max(used[j] for j in self.through[m])
                here = cost[k[m]]
                for target in self.drops[m]:
                    j = target - k[m]
                    if j <= 0:
                        continue
                    if j > room:
                        break
                    eff = (here - cost[target]) / j
                    if (eff, -j) > best[:2]:
                        best = (eff, -j, m)
            if best[2] < 0:
                return
            k[best[2]] -= best[1]

    def release(self, k: list[int], keep: int, floor: Sequence[int]) -> bool:
        """Take steps from modules other than ``keep`` until every path fits, cheapest per step
        first; False when the floors do not allow it."""
        while True:
            over = [p for p in self.paths if sum(k[i] for i in p) > self.steps]
            if not over:
                return True
            p = over[0]
            excess = sum(k[i] for i in p) - self.steps
            best = (float("inf"), -1, 0)  # (cost increase per freed step, module, new index)
            for i in p:
                if i == keep or k[i] <= floor[i]:
                    continue
                cost = self.costs[i]
                levels = {max(floor[i], k[i] - excess), *(t for t in self.drops[i] if floor[i] <= t < k[i])}
                for t in levels:
                    freed = min(k[i] - t, excess)
                    per_step = (cost[t] - cost[k[i]]) / freed
                    if per_step < best[0]:
                        best = (per_step, i, t)
            if best[1] < 0:
                return False
            k[best[1]] = best[2]

    def refine(self, k: list[int], floor: Sequence[int]) -> None:
        """Local moves while one lowers the total cost, best move first.

        A *take* move lowers one module to the start of one of its cost plateaus and re-grants
        the freed slack; a *give* move raises one module to one of its next cost drops, frees the
        steps this needs from the others (cheapest per step first) and re-grants what is left.
        """
        current = self.total(k)
        while True:
            best_cost, best_k = current, k
            for m in range(len(k)):
                for t in [floor[m], *self.drops[m]]:
                    if t == k[m] or t < floor[m]:
                        continue
                    trial = list(k)
                    trial[m] = t
                    if t > k[m] and not self.release(trial, m, floor):
                        continue
                    self.grant(trial, blocked=m if t < k[m] else -1)
                    cost = self.total(trial)
                    if cost < best_cost * (1 - REL_TOL):
                        best_cost, best_k = cost, trial
            if best_k is k:
                return
            k[:] = best_k
            current = best_cost

    def fill(self, k: list[int]) -> None:
        """Grant the slack that is left, module by module (cost-neutral)."""
        for m in range(len(k)):
            k[m] += max(0, self.slack(k, m))


def split_budgets(costs: Costs, paths: Sequence[tuple[int, ...]], steps: int) -> list[int] | None:
    """Budget indices (one per module) by latency-cost efficiency, or None if the SLO cannot fit."""
    first = []
    for c in costs:
        feasible = [k for k, v in enumerate(c) if v < float("inf")]
        if not feasible:
            return None
        first.append(feasible[0])
    s = _Splitter(costs, paths, steps)
    if any(sum(first[i] for i in p) > steps for p in paths):
        return None
    k = list(first)
    s.grant(k)
    s.refine(k, first)
    s.fill(k)
    return k
