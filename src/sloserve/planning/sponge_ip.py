"""Sponge's integer program, solved with HiGHS through ``scipy.optimize.milp``.

Problem (Sponge, EuroMLSys 2024): with predicted rate ``λ`` and budget ``q`` (seconds, margin
already taken off), choose cores ``c ∈ 1..C`` and batch ``b ∈ 1..B`` minimising ``c`` first and
``b`` second, subject to ``ceil(λ/b) · l(b, c) <= q``.

Formulation (ours): one binary ``x[c, b]`` per pair, ``Σ x = 1``; the lexicographic objective
``Σ (c·(B+1) + b) · x``; the budget ``Σ (ceil(λ/b)·l(b, c) / q) · x <= 1``. The constraint's
coefficients carry the non-linear latency model, so the program is exact for any profile.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from sloserve.core.profiles import ModelProfile


def solve_sponge_ip(
    lam: float, budget: float, profile: ModelProfile, max_cores: int, max_batch: int
) -> tuple[int, int] | None:
    """The fewest cores, then the smallest batch, meeting the budget; None when infeasible."""
    if budget <= 0 or max_cores < 1 or max_batch < 1:
        return None
    cores = np.repeat(np.arange(1, max_cores + 1), max_batch)
    batches = np.tile(np.arange(1, max_batch + 1), max_cores)
    cost = np.array(
        [math.ceil(lam / b) * profile.latency(int(b), int(c), 1) for c, b in zip(cores, batches, strict=True)]
    )
    n = len(cost)
    objective = cores * (max_batch + 1) + batches
    constraints = [
        LinearConstraint(np.ones((1, n)), 1, 1),
        LinearConstraint((cost / budget)[None, :], -np.inf, 1.0),
    ]
    result = milp(
        objective.astype(float),
        integrality=np.ones(n),
        bounds=Bounds(0, 1),
        constraints=constraints,
    )
    if result.status != 0 or result.x is None:
        return None
    i = int(np.argmax(result.x))
    return int(cores[i]), int(batches[i])
