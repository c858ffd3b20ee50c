"""Harpagon's module scheduler (level 2): one module's configuration at every grid budget.

Paper: rank configurations ``(h, b)`` by throughput per price ``(b / d(b)) / price(h)``, replicate
the best over the bulk of the rate, serve the residual rate with the cheapest further tuple, and
pad that tuple's stream with dummy requests where a larger batch then fills within the budget
(the dummy generator).

Spec (ours, as SEEDS.md §1 asks), in the terms of :mod:`~sloserve.planning.latency`:

- With batch-aware dispatch, ``n`` machines of type ``h`` fill a batch ``b`` in time once
  ``n >= min_machines(b)``; so each (type, count) has a best-ranked config: the usable batch with
  the most throughput (hence the most throughput per price on that type), dummies allowed.
- *Single tuple*: per type, the fewest machines that carry the whole rate.
- *Bulk + residual*: per type ``h``, replicate its best config over the bulk with ``v = 1..V``
  machines fewer than the single tuple needs; the residual rate goes to the cheapest tuple on
  another type. With two to four types every type is tried as the bulk, not only the first-ranked
  one: ranking alone misses plans where a slightly worse ratio leaves a cheaper residual.
- The cheapest candidate wins; :func:`~sloserve.planning.choice.choose_batches` then drops dummies
  wherever a smaller batch carries the same machines' load (ties keep no dummies).

All budgets are evaluated at once with numpy (configs are grouped by hardware type, so per-type
minima and maxima are ``reduceat``s); this keeps planning in milliseconds. Called by
:mod:`sloserve.planning.harpagon` once per module.
"""

from __future__ import annotations

import math

import numpy as np

from sloserve.planning.choice import CostTable, ModuleChoice, choose_batches, monotone_envelope
from sloserve.planning.latency import REL_TOL, min_machines_array, min_stream_rate_array
from sloserve.planning.latency import FloatArray
from sloserve.planning.problem import ModuleTable

BULK_STEPS = 3
"""V: how many machines fewer than a single tuple the bulk may run (3 reaches ~99.9% of optima)."""


def _fewest(nmin: FloatArray, capacity: FloatArray, need: FloatArray, starts: np.ndarray) -> FloatArray:
    """Fewest machines per hardware group carrying ``need`` (``need[..., None]`` vs configs)."""
    per_config = np.maximum(nmin, np.ceil(need[..., None] * (1 - REL_TOL) / capacity))
    return np.minimum.reduceat(per_config, starts, axis=-1)


def harpagon_cost_table(table: ModuleTable, budgets: FloatArray, bulk_steps: int = BULK_STEPS) -> CostTable:
    """Harpagon's configuration and its price for ``table``'s module at each of ``budgets``."""
    r, cap = table.rate, table.capacity
    starts = np.flatnonzero(np.r_[True, table.hw[1:] != table.hw[:-1]])
    group_hw = table.hw[starts]
    group_price = table.price[starts]
    group_of = np.cumsum(np.r_[0, table.hw[1:] != table.hw[:-1]])  # config -> group
    n_groups = len(starts)
    nmin = min_machines_array(min_stream_rate_array(table.latency, table.batch, budgets), cap)  # (K, C)

    # Single tuple: (K, G) machines per type, and its cost.
    single_n = _fewest(nmin, cap, np.full(len(budgets), r), starts)
    best = single_n * group_price
    # Bulk of v fewer machines on type g: (V, K, G).
    v = np.arange(1, bulk_steps + 1)[:, None, None]
    bulk_n = single_n[None] - v
    bulk_n = np.where(np.isfinite(bulk_n) & (bulk_n >= 1), bulk_n, np.nan)
    per_config_n = bulk_n[..., group_of]  # (V, K, C)
    with np.errstate(invalid="ignore"):
        usable = nmin[None] <= per_config_n
    bulk_cap = bulk_n * np.maximum.reduceat(np.where(usable, cap, 0.0), starts, axis=-1)
    with np.errstate(invalid="ignore"):
        residual = np.where(bulk_cap > 0, r - bulk_cap, np.inf)  # (V, K, G); NaN compares false
    res_n = _fewest(nmin[None, :, None, :], cap, residual, starts)  # (V, K, G, G')
    res_n[..., np.arange(n_groups), np.arange(n_groups)] = np.inf  # the residual goes elsewhere
    pair = np.nan_to_num(bulk_n, nan=np.inf)[..., None] * group_price[:, None] + res_n * group_price

    # Cheapest per budget: single tuples first, so ties keep one tuple.
    n_k = len(budgets)
    flat = np.concatenate(
        [best, pair.transpose(1, 0, 2, 3).reshape(n_k, -1)], axis=1
    )  # (K, G + V*G*G')
    pick = np.argmin(flat, axis=1)
    cost = flat[np.arange(n_k), pick]
    env, src = monotone_envelope(cost)

    def counts_at(j: int) -> dict[int, int]:
        p = int(pick[j])
        if p < n_groups:
            return {int(group_hw[p]): int(single_n[j, p])}
        vi, g, g2 = np.unravel_index(p - n_groups, (bulk_steps, n_groups, n_groups))
        return {int(group_hw[g]): int(bulk_n[vi, j, g]), int(group_hw[g2]): int(res_n[vi, j, g, g2])}

    def choice(k: int) -> ModuleChoice:
        if not math.isfinite(env[k]):
            return ModuleChoice(math.inf, ())
        return ModuleChoice(float(env[k]), choose_batches(table, float(budgets[k]), counts_at(int(src[k]))))

    return CostTable(env, choice)
