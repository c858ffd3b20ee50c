"""The batch-aware dispatch latency model every planner here shares (Harpagon's level 1).

A *tuple* ``(h, b, n)`` is ``n`` machines of hardware ``h`` running batches of ``b``. The module's
request stream is split among its tuples; tuple ``i`` receives a real rate ``r_i`` and may pad its
stream with dummy requests at rate ``u_i``, so its stream rate is ``s_i = r_i + u_i``.

- The dispatcher fills one batch at a time from the tuple's stream and hands the full batch to a
  free machine of the tuple, so a batch is collected at ``w = s_i`` and the worst-case module
  latency is ``d(b) + b / s_i`` (paper: ``d(b) + b/w``). Round-robin dispatch of single requests
  over ``n`` machines collects at ``s_i / n`` instead.
- The tuple keeps up when ``s_i <= n · c`` with the machine capacity ``c = ρ · b / d(b)`` (``ρ``
  the problem's ``max_utilization``, 1 by default).

So a tuple fits a budget ``B`` when ``d(b) + b / s_i <= B`` and ``s_i <= n · c``. At full load
(``s_i = n·c``) the first condition reads ``n >= b / ((B − d) · c)`` (:func:`min_machines`; with
``ρ = 1`` that is ``n >= d / (B − d)``).
Which tuples to run, and the dummy rate, are the planners' choices; this module only judges them.
"""

from __future__ import annotations

import math

import numpy as np

from sloserve.planning.problem import FloatArray, IntArray

REL_TOL = 1e-9
"""Relative slack in every feasibility comparison (floating-point noise only)."""


def collection_time(batch: int, stream_rate: float) -> float:
    """Seconds to collect ``batch`` requests from a stream of ``stream_rate`` req/s."""
    return math.inf if stream_rate <= 0 else batch / stream_rate


def worst_case_latency(exec_time: float, batch: int, stream_rate: float) -> float:
    """``d(b) + b / w``: a request may wait for the whole batch to fill, then for it to run."""
    return exec_time + collection_time(batch, stream_rate)


def min_stream_rate(exec_time: float, batch: int, budget: float) -> float:
    """Slowest stream that still fills ``batch`` within ``budget - d(b)`` (``inf`` if none)."""
    slack = budget - exec_time
    return math.inf if slack <= 0 else batch / slack


def min_machines(exec_time: float, batch: int, capacity: float, budget: float) -> float:
    """Fewest machines a fully loaded tuple needs so its batches fill in time (``inf`` if none)."""
    need = min_stream_rate(exec_time, batch, budget)
    return math.inf if math.isinf(need) else float(math.ceil(need / capacity - REL_TOL))


def dummy_rate(exec_time: float, batch: int, budget: float, real_rate: float) -> float:
    """Dummy requests per second a tuple must add to its real stream to fill batches in time."""
    return max(0.0, min_stream_rate(exec_time, batch, budget) - real_rate)


def tuple_fits(
    exec_time: float,
    batch: int,
    count: int,
    budget: float,
    real_rate: float,
    dummies: float,
    max_utilization: float = 1.0,
) -> bool:
    """Whether the tuple meets ``budget`` and keeps up with its stream (real plus dummy)."""
    stream = real_rate + dummies
    if stream <= 0:
        return exec_time <= budget * (1 + REL_TOL)
    in_time = worst_case_latency(exec_time, batch, stream) <= budget * (1 + REL_TOL)
    keeps_up = stream <= count * max_utilization * batch / exec_time * (1 + REL_TOL)
    return in_time and keeps_up


def min_stream_rate_array(latency: FloatArray, batch: IntArray, budget: FloatArray) -> FloatArray:
    """:func:`min_stream_rate` for every (budget, config) pair: shape ``budget.shape + latency.shape``.

    ``budget`` is a 1-d array of budgets (or a 0-d one); ``inf`` where ``d(b) >= budget``.
    """
    slack = np.subtract.outer(budget, latency)
    out = np.full(slack.shape, np.inf)
    ok = slack > 0
    out[ok] = np.broadcast_to(batch, slack.shape)[ok] / slack[ok]
    return out


def min_machines_array(min_stream: FloatArray, capacity: FloatArray) -> FloatArray:
    """:func:`min_machines` from :func:`min_stream_rate_array` (``inf`` stays ``inf``)."""
    with np.errstate(invalid="ignore"):
        return np.ceil(min_stream / capacity - REL_TOL)
