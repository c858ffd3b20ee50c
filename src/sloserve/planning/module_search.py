"""Harpagon's module scheduler (level 2): one module's configuration at every grid budget.

Paper: rank configurations ``(h, b)`` by throughput per price ``(b / d(b)) / price(h)``, replicate
the best over the bulk of the rate, serve the residual rate with the cheapest further tuple, and
pad that tuple's stream with dummy requests where a larger batch then fills within the budget
(the dummy generator).

Spec (ours, as SEEDS.md §1 asks), in the terms of :mod:`~sloserve.planning.latency`:

- With batch-aware dispatch, ``n`` machines of a config fill its batches in time once
  ``n >= min_machines``; so each (hardware type, count) has a best-ranked config: the usable one
  with the most throughput (hence the most throughput per price on that type), dummies allowed.
- *Single tuple*: per type, the fewest machines that carry the whole rate.
- *Bulk + residual*: per type ``h``, replicate its best config over the bulk with ``v = 1..V``
  machines fewer than the single tuple needs, or with any small count ``1..S``; the residual rate
  goes to the cheapest tuple on another type. With two to four types every type is tried as the
  bulk, not only the first-ranked one: ranking alone misses plans where a slightly worse ratio
  leaves a cheaper residual, and small counts matter because a config's capacity per machine grows
  with the count (more machines fill larger batches in time).
- The cheapest candidate wins (ties keep a single tuple);
  :func:`~sloserve.planning.choice.choose_batches` then drops dummies wherever a smaller batch
  carries the same machines' load.

All budgets are evaluated at once with numpy (configs are grouped by hardware type, so per-type
minima and maxima are ``reduceat``s); this keeps planning in milliseconds. Called by
:mod:`sloserve.planning.harpagon` once per module.
"""

from __future__ import annotations

import math

import numpy as np

from sloserve.planning.choice import CostTable, ModuleChoice, choose_batches, monotone_envelope
from sloserve.planning.latency import REL_TOL, FloatArray, IntArray
from sloserve.planning.problem import ModuleTable

BULK_STEPS = 3
"""V: how many machines fewer than a single tuple the bulk may run."""
SMALL_BULK = 6
"""S: bulk counts 1..S are always tried."""
RESIDUAL_MACHINES = 16
"""Most machines a residual tuple may have (a power of two; beyond it a larger bulk wins)."""


def _fewest(nmin: FloatArray, capacity: FloatArray, need: FloatArray, starts: IntArray) -> FloatArray:
    """Fewest machines per hardware group carrying ``need`` (``need[..., None]`` vs configs)."""
    per_config = np.maximum(nmin, np.ceil(need[..., None] * (1 - REL_TOL) / capacity))
    return np.minimum.reduceat(per_config, starts, axis=-1)


def _first_usable(table: ModuleTable, nmin: FloatArray, rows: FloatArray, n: IntArray) -> IntArray:
    """First budget row where ``n`` machines of each config fill their batches in time, per
    (count, config); the row count when none. ``rows`` are grid budgets ``k · step``. The closed
    form ``B >= d + E/n`` is corrected by one row either way against ``nmin`` itself, so the two
    always agree."""
    n_k, n_c = nmin.shape
    need = table.latency * table.wait + table.batch / table.capacity
    step = float(rows[1] - rows[0]) if n_k > 1 else float(rows[0])
    with np.errstate(invalid="ignore"):
        est = np.ceil((table.latency + need / (n[:, None] + REL_TOL) - rows[0]) / step)
    first: IntArray = np.clip(np.nan_to_num(est, nan=n_k, posinf=n_k), 0, n_k).astype(np.int64)
    cols = np.broadcast_to(np.arange(n_c), first.shape)
    first -= (first > 0) & (nmin[np.maximum(first - 1, 0), cols] <= n[:, None])
    first += (first < n_k) & (nmin[np.minimum(first, n_k - 1), cols] > n[:, None])
    return first


def _capacity_by_count(
    table: ModuleTable, nmin: FloatArray, rows: FloatArray, group_of: IntArray, n_groups: int, n_max: int
) -> FloatArray:
    """``cap[k, g, n-1]``: what ``n`` machines of type ``g`` carry at budget row ``k`` (best config).

    Per count, configs sorted by the row from which they are usable, with a running maximum of
    capacity, give every row's best config without a rows x configs x counts array.
    """
    n_k = nmin.shape[0]
    n = np.arange(1, n_max + 1)
    key = group_of * (n_k + 1) + _first_usable(table, nmin, rows, n)  # (N, C)
    order = np.argsort(key, axis=1, kind="stable")
    skey = np.take_along_axis(key, order, axis=1)
    top = float(table.capacity.max()) + 1.0  # lifts each group above the previous ones
    run = np.maximum.accumulate(
        np.take_along_axis(table.capacity + group_of * top, order.ravel()).reshape(order.shape), axis=1
    )
    stride = n_groups * (n_k + 1)
    flat = (skey + (np.arange(n_max) * stride)[:, None]).ravel()
    base = np.arange(n_max)[:, None, None] * stride + np.arange(n_groups)[None, None, :] * (n_k + 1)
    pos = np.searchsorted(flat, base + np.arange(n_k)[None, :, None], side="right") - 1  # (N, K, G)
    found = (pos >= 0) & (flat[np.maximum(pos, 0)] >= base)
    best = np.where(found, run.ravel()[np.maximum(pos, 0)] - np.arange(n_groups) * top, 0.0)
    return np.asarray((best * n[:, None, None]).transpose(1, 2, 0), dtype=np.float64)


def _first_count(capn: FloatArray, need: FloatArray) -> FloatArray:
    """Fewest machines of each type whose capacity reaches ``need`` (``inf`` past the table).

    ``capn`` is ``(K, G', N)``, non-decreasing along N (N a power of two); ``need`` broadcasts to
    ``(B, K, G, G')``. A branch-free binary search per cell, log2(N) gathers instead of N compares.
    """
    n_max = capn.shape[-1]
    shape = np.broadcast_shapes(need.shape, (1, capn.shape[0], 1, capn.shape[1]))
    k = np.arange(capn.shape[0])[None, :, None, None]
    g = np.arange(capn.shape[1])[None, None, None, :]
    below = np.zeros(shape, dtype=np.int64)  # entries of capn < need, found so far
    step = n_max // 2
    while step:
        below += step * (capn[k, g, below + step - 1] < need)
        step //= 2
    below += capn[k, g, below] < need
    return np.where(below < n_max, below + 1.0, np.inf)


def harpagon_cost_table(table: ModuleTable, budgets: FloatArray, bulk_steps: int = BULK_STEPS) -> CostTable:
    """Harpagon's configuration and its price for ``table``'s module at each of ``budgets``.

    ``budgets`` is the grid ``k · step`` for k = 0..K; rows where no batch runs in time cost ``inf``.
    """
    r, cap = table.rate, table.capacity
    skip = int(np.searchsorted(budgets, table.latency.min(), side="right"))  # nothing fits below
    rows = budgets[skip:]
    n_k = len(rows)
    if n_k == 0:
        return CostTable(np.full(len(budgets), np.inf), lambda k: ModuleChoice(math.inf, ()))
    change = np.r_[True, table.hw[1:] != table.hw[:-1]]
    starts = np.flatnonzero(change)
    group_of = np.cumsum(change) - 1  # config -> group
    group_hw, group_price = table.hw[starts], table.price[starts]
    n_groups = len(starts)
    nmin = table.min_machines(rows)  # (K, C)

    # Single tuple: machines per type (K, G).
    single_n = _fewest(nmin, cap, np.full(n_k, r), starts)
    capn = _capacity_by_count(table, nmin, rows, group_of, n_groups, RESIDUAL_MACHINES)  # (K, G, N)
    # Bulk counts (B, K, G): 1..S, then v = 1..V fewer than the single tuple (if above S).
    small = np.broadcast_to(np.arange(1.0, SMALL_BULK + 1)[:, None, None], (SMALL_BULK, *single_n.shape))
    large = single_n[None] - np.arange(1, bulk_steps + 1)[:, None, None]
    large = np.where(large > SMALL_BULK, large, np.nan)
    with np.errstate(invalid="ignore"):
        usable = nmin[None] <= large[..., group_of]  # (V, K, C); NaN compares false
        large_cap = large * np.maximum.reduceat(np.where(usable, cap, 0.0), starts, axis=-1)
    bulk_n = np.concatenate([small, large])
    bulk_cap = np.concatenate([capn[..., :SMALL_BULK].transpose(2, 0, 1), large_cap])
    with np.errstate(invalid="ignore"):  # a bulk must leave a residual and carry something
        residual = np.where((bulk_n < single_n) & (bulk_cap > 0), r - bulk_cap, np.inf)
    # Residual tuple on type g' (B, K, G, G'): the first count whose capacity carries it.
    res_n = _first_count(capn, residual[..., None] * (1 - REL_TOL))
    res_n[..., np.arange(n_groups), np.arange(n_groups)] = np.inf  # the residual goes elsewhere
    bulk_price = np.nan_to_num(bulk_n, nan=np.inf, posinf=np.inf)[..., None] * group_price[:, None]
    pair = bulk_price + res_n * group_price

    # Cheapest per budget row; single tuples come first, so ties keep one tuple.
    flat = np.concatenate([single_n * group_price, pair.transpose(1, 0, 2, 3).reshape(n_k, -1)], axis=1)
    pick = np.argmin(flat, axis=1)
    cost = np.concatenate([np.full(skip, np.inf), flat[np.arange(n_k), pick]])
    env, src = monotone_envelope(cost)

    def counts_at(k: int) -> dict[int, int]:
        j, p = k - skip, int(pick[k - skip])
        if p < n_groups:
            return {int(group_hw[p]): int(single_n[j, p])}
        vi, g, g2 = np.unravel_index(p - n_groups, (len(bulk_n), n_groups, n_groups))
        return {int(group_hw[g]): int(bulk_n[vi, j, g]), int(group_hw[g2]): int(res_n[vi, j, g, g2])}

    def choice(k: int) -> ModuleChoice:
        if not math.isfinite(env[k]):
            return ModuleChoice(math.inf, ())
        return ModuleChoice(float(env[k]), choose_batches(table, float(budgets[k]), counts_at(int(src[k]))))

    return CostTable(env, choice)
