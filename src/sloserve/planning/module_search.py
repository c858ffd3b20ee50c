"""Harpagon's module scheduler (level 2): the configurations of one module at every grid budget.

Paper: configurations ``(h, b)`` are ranked by throughput per price ``(b / d(b)) / price(h)``; the
best one is replicated over the bulk of the rate; the residual rate goes to the cheapest further
tuple, whose stream may be padded with dummy requests so that a larger batch fills within the
budget (the dummy generator). Spec (ours, as SEEDS.md §1 asks):

- *bulk*: the best-ranked config that can run ``N = floor(r / c) >= 1`` fully loaded machines with
  batches that fill in time (``N >= min_machines``);
- *residual* ``r - N·c``: the cheapest of (a) one more machine in the bulk tuple, (b) ``k`` machines
  of any config with no dummies (its own stream ``r_res`` fills a batch in time) and (c) the same
  with dummies (``k = ceil(max(r_res, b / (B − d)) / c)``); ties keep no dummies and fewer tuples;
- with no bulk config, the whole rate is treated as residual.

Everything is evaluated for all grid budgets at once with numpy (one row per budget), which is what
keeps planning in milliseconds. Called by :mod:`sloserve.planning.harpagon` once per module.
"""

from __future__ import annotations

import math

import numpy as np

from sloserve.planning.choice import CostTable, ModuleChoice, TupleChoice, monotone_envelope
from sloserve.planning.latency import REL_TOL, min_machines_array, min_stream_rate_array
from sloserve.planning.problem import FloatArray, ModuleTable


def _row_argmin(values: FloatArray) -> tuple[np.ndarray, FloatArray]:
    idx = np.argmin(values, axis=1)
    return idx, values[np.arange(len(values)), idx]


def harpagon_cost_table(table: ModuleTable, budgets: FloatArray) -> CostTable:
    """Harpagon's configuration and its price for ``table``'s module at each of ``budgets``."""
    r = table.rate
    cap, price = table.capacity, table.price
    n_rows = len(budgets)
    rows = np.arange(n_rows)
    smin = min_stream_rate_array(table.latency, table.batch, budgets)  # (rows, configs)
    nmin = min_machines_array(smin, cap)
    valid = np.isfinite(smin)

    # Bulk: the best throughput-per-price config that fills N >= 1 machines in time.
    n_full = np.floor(r / cap * (1 + REL_TOL))
    eligible = valid & (n_full >= np.maximum(nmin, 1.0))
    score = np.where(eligible, cap / price, -np.inf)
    bulk = np.argmax(score, axis=1)
    has_bulk = eligible[rows, bulk]
    bulk_n = np.where(has_bulk, n_full[bulk], 0.0)
    residual = np.where(has_bulk, r - bulk_n * cap[bulk], r)
    residual[residual <= r * REL_TOL] = 0.0

    # Residual options, each a (cost, config, count) per row.
    extend_cost = np.where(has_bulk, (bulk_n + 1) * price[bulk], np.inf)
    res = residual[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        plain_n = np.where(valid & (res >= smin * (1 - REL_TOL)), np.ceil(res / cap - REL_TOL), np.inf)
        padded_n = np.where(valid, np.ceil(np.maximum(res, smin) / cap - REL_TOL), np.inf)
    plain_idx, plain_cost = _row_argmin(plain_n * price)
    padded_idx, padded_cost = _row_argmin(padded_n * price)

    # Keep the cheapest; ties prefer growing the bulk, then no dummies (order of the stack).
    options = np.stack([extend_cost, plain_cost, padded_cost], axis=1)
    pick = np.argmin(options * (1 + REL_TOL * np.arange(3)), axis=1)
    res_cost = np.where(residual > 0, options[rows, pick], 0.0)
    cost = np.where(has_bulk, bulk_n * price[bulk], 0.0) + res_cost
    env, src = monotone_envelope(cost)

    res_idx = np.where(pick == 1, plain_idx, padded_idx)
    res_n = np.where(pick == 1, plain_n[rows, plain_idx], padded_n[rows, padded_idx])

    def choice(k: int) -> ModuleChoice:
        j = int(src[k])
        if not math.isfinite(env[k]):
            return ModuleChoice(math.inf, ())
        tuples: list[TupleChoice] = []
        n = int(bulk_n[j]) if has_bulk[j] else 0
        if residual[j] > 0 and pick[j] == 0:
            n += 1
        if n:
            tuples.append(TupleChoice(int(bulk[j]), n))
        if residual[j] > 0 and pick[j] != 0:
            idx, count = int(res_idx[j]), int(res_n[j])
            if tuples and tuples[0].config == idx:
                tuples[0] = TupleChoice(idx, tuples[0].count + count)
            else:
                tuples.append(TupleChoice(idx, count))
        return ModuleChoice(float(env[k]), tuple(tuples))

    return CostTable(env, choice)
