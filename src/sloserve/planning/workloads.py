"""Seeded random planning problems, for the optimality benchmark and the planner tests.

Each problem is a pipeline of 1–4 modules (a chain or, from 3 modules on, sometimes a tree such as
detector → {two classifiers}), 2–4 hardware types and affine profiles. Hardware types differ in
speed and price so that none dominates: a type ``s`` times faster costs about ``s**0.8`` times more
(with noise), and batching helps fast types more (their fixed overhead shrinks less than their
per-item time). Rates and SLOs are drawn over the ranges video-analytics papers use: 20–1000 input
requests/s (log-uniform, so the few-machine and many-machine regimes are both well represented),
fan-outs 0.5–3, SLOs 3–12× the pipeline's fastest batch-1 latency (about 30–600 ms).
"""

from __future__ import annotations

import numpy as np

from sloserve.core.app import App, Edge, Module
from sloserve.core.hardware import Hardware
from sloserve.core.profiles import AffineProfile, ProfileSet
from sloserve.planning.problem import PlanningProblem

MS = 1e-3


def random_problem(
    seed: int,
    *,
    modules: int | None = None,
    hardware: int | None = None,
    grid_steps: int = 50,
    max_batch: int = 32,
) -> PlanningProblem:
    """A random problem, fully determined by ``seed`` (and the optional sizes)."""
    rng = np.random.default_rng(seed)
    n_mod = int(modules if modules is not None else rng.integers(1, 5))
    n_hw = int(hardware if hardware is not None else rng.integers(2, 5))

    speeds = np.sort(rng.uniform(1.0, 6.0, n_hw))
    speeds[0] = 1.0
    hw = tuple(
        Hardware(
            f"hw{i}",
            cores=int(rng.choice([4, 8, 16])),
            price_per_hour=round(float(0.4 * s**0.8 * rng.uniform(0.8, 1.25)), 4),
        )
        for i, s in enumerate(speeds)
    )

    names = [f"m{i}" for i in range(n_mod)]
    edges = []
    for i in range(1, n_mod):
        parent = i - 1 if n_mod < 3 or rng.random() < 0.6 else int(rng.integers(0, i))
        edges.append(Edge(names[parent], names[i], round(float(rng.uniform(0.5, 3.0)), 2)))

    profiles = ProfileSet()
    fastest_b1: dict[str, float] = {}
    for name in names:
        alpha = rng.uniform(2.0, 30.0) * MS  # fixed overhead per batch on the slowest type
        beta = rng.uniform(0.5, 8.0) * MS  # per-item time on the slowest type
        best = np.inf
        for h, s in zip(hw, speeds, strict=True):
            a = alpha / s ** rng.uniform(0.3, 0.7) * rng.uniform(0.9, 1.1)
            b = beta / s * rng.uniform(0.9, 1.1)
            tail = float(rng.uniform(1.0, 1.2))
            profiles.add(AffineProfile(name, a, b, hardware=h.name, max_batch=max_batch, tail_factor=tail))
            best = min(best, (a + b) * tail)
        fastest_b1[name] = best

    rate = round(float(np.exp(rng.uniform(np.log(20.0), np.log(1000.0)))), 1)
    draft = App("random", tuple(Module(n, n) for n in names), tuple(edges), slo=1.0, rate=rate)
    longest = max(sum(fastest_b1[m] for m in p) for p in draft.paths())
    slo = round(float(longest * rng.uniform(3.0, 12.0)), 4)
    app = App(f"random-{seed}", draft.modules, draft.edges, slo=slo, rate=rate)
    return PlanningProblem(app, hw, profiles, grid_steps=grid_steps, max_batch=max_batch)
