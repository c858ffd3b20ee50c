"""The batch-aware dispatch latency model every planner here shares (Harpagon's level 1).

A *tuple* ``(h, b, n)`` is ``n`` machines of hardware ``h`` running batches of ``b``, planned at a
design utilization ``ρ`` (its capacity is ``c = ρ · b / d(b)`` requests per second). The module's
stream is split among its tuples; tuple ``i`` receives a real rate ``r_i`` and may pad its stream
with dummy requests at rate ``u_i``, so its stream rate is ``s_i = r_i + u_i <= n · c``.

Paper: the dispatcher fills one batch at a time from the tuple's stream and hands the full batch
to a free machine, so a batch is collected at ``w = s_i`` and the worst-case latency is
``d(b) + b / w`` (round-robin of single requests over ``n`` machines collects at ``w = s_i / n``).

Spec (ours): that bound assumes a machine is free whenever a batch is ready, which holds for
periodic input (video frames) but not for Poisson arrivals, where a burst finds every machine
busy. So the model adds a wait allowance ``q`` (the p-quantile of the wait for a free machine,
``quantile`` = 0.99 by default): batches reach the tuple as an Erlang-``b`` stream (squared
coefficient of variation ``1/b``), and the heavy-traffic tail of an ``n``-server queue at
utilization ``ρ`` gives ``P(wait > t) ≈ exp(−2·n·(1 − ρ)·b·t / d)``, hence
``q = d · ln(1/(1 − quantile)) / (2·b·n·(1 − ρ)) = d · A(b, ρ) / n``. Service-time variation is
covered by planning with the profiles' p99 execution time. The latency bound of a tuple is then::

    L = d(b) + d(b)·A/n + b / s_i        (A = 0 with the allowance off: the paper's model)

and it fits a budget ``B`` when ``L <= B`` and ``s_i <= n·c``. At full load (``s_i = n·c``) this
reads ``n >= (d·A + b/c) / (B − d)`` (:func:`min_machines`): feasibility is monotone in ``n``,
which the brute force relies on. Which tuples to run, and the dummy rate, are the planners'
choices; this module only judges them.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

REL_TOL = 1e-9
"""Relative slack in every feasibility comparison (floating-point noise only)."""


def wait_factor(batch: int, utilization: float, quantile: float | None) -> float:
    """``A(b, ρ)``: the wait allowance of ``n`` machines is ``d(b) · A / n`` (0 when ``quantile`` is None)."""
    if quantile is None:
        return 0.0
    if utilization >= 1:
        return math.inf
    return math.log(1 / (1 - quantile)) / (2 * batch * (1 - utilization))


def wait_factors(batch: IntArray, utilization: FloatArray, quantile: float | None) -> FloatArray:
    """:func:`wait_factor` for arrays of batches and utilizations."""
    if quantile is None:
        return np.zeros(len(batch))
    with np.errstate(divide="ignore"):
        return np.where(
            utilization < 1, math.log(1 / (1 - quantile)) / (2 * batch * (1 - utilization)), np.inf
        )


def tuple_latency(exec_time: float, wait: float, batch: int, stream_rate: float) -> float:
    """``d(b) + q + b / w``: wait for the batch to fill, for a free machine, then for the run."""
    return exec_time + wait + (math.inf if stream_rate <= 0 else batch / stream_rate)


def min_stream_rate(exec_time: float, wait: float, batch: int, budget: float) -> float:
    """Slowest stream that still fills ``batch`` in time (``inf`` when even an instant fill is late)."""
    slack = budget - exec_time - wait
    return math.inf if slack <= 0 else batch / slack


def tuple_fits(
    exec_time: float, wait: float, batch: int, count: int, capacity: float, budget: float, stream: float
) -> bool:
    """Whether ``count`` machines (``capacity`` req/s each) meet ``budget`` with this stream."""
    if stream <= 0:
        return exec_time + wait <= budget * (1 + REL_TOL)
    in_time = tuple_latency(exec_time, wait, batch, stream) <= budget * (1 + REL_TOL)
    return in_time and stream <= count * capacity * (1 + REL_TOL)


def min_machines_array(
    latency: FloatArray, wait: FloatArray, capacity: FloatArray, batch: IntArray, budgets: FloatArray
) -> FloatArray:
    """Fewest machines per (budget, config) that fill their batches in time at full load.

    Shape ``budgets.shape + latency.shape``; ``inf`` where no count does (``d(b) >= B``).
    """
    slack = np.subtract.outer(budgets, latency)
    need = latency * wait + batch / capacity
    out = np.full(slack.shape, np.inf)
    ok = slack > 0
    out[ok] = np.ceil(np.broadcast_to(need, slack.shape)[ok] / slack[ok] - REL_TOL)
    return np.asarray(np.maximum(out, 1.0), dtype=np.float64)


def min_machines(exec_time: float, wait_factor_: float, capacity: float, batch: int, budget: float) -> float:
    """Scalar :func:`min_machines_array`."""
    slack = budget - exec_time
    if slack <= 0:
        return math.inf
    return max(1.0, float(math.ceil((exec_time * wait_factor_ + batch / capacity) / slack - REL_TOL)))
