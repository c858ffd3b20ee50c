"""Capacity search: the highest arrival rate at which a setup keeps a target SLO attainment.

This is the measure later comparisons use ("policy A sustains 1.8× the load of Triton at 99%").
The caller supplies ``run(rate, seed)``, returning anything with an ``attainment`` (the simulator's
``Metrics``, or an :class:`Attainment` from a live run or a bound); it builds fresh policies inside
(schedulers keep state). The search bisects on the rate, judging each rate by the attainment over
the seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol


class Attained(Protocol):
    """What a run reports to the search: the share of requests that met their deadline."""

    @property
    def attainment(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Attainment:
    """A run's attainment alone, for runs that have no simulator ``Metrics`` (live probes, bounds)."""

    attainment: float


@dataclass(frozen=True)
class Probe:
    """One rate tried."""

    rate: float
    attainments: tuple[float, ...]
    """Attainment of each seed's run."""
    score: float
    """The aggregate (mean or min over seeds) compared with the target."""
    passed: bool


@dataclass(frozen=True)
class CapacityResult:
    """Outcome of :func:`capacity_search`."""

    rate: float
    """Highest rate found that meets the target (0.0 when even ``lo`` fails)."""
    target: float
    lo: float
    """Final bracket: ``lo`` passes (or is the starting ``lo`` when nothing passed) ..."""
    hi: float
    """... and ``hi`` fails (``inf`` when no failing rate was found up to the expansion limit)."""
    seeds: tuple[int, ...]
    aggregate: str
    probes: list[Probe] = field(default_factory=list)
    """Every rate tried, in order."""

    @property
    def bounded(self) -> bool:
        """True when a failing rate was found above the answer."""
        return math.isfinite(self.hi)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def capacity_search(
    run: Callable[[float, int], Attained],
    target: float = 0.99,
    lo: float = 1.0,
    hi: float = 1000.0,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    tol: float = 0.01,
    aggregate: Literal["mean", "min"] = "mean",
    max_expansions: int = 8,
    on_probe: Callable[[Probe], None] | None = None,
) -> CapacityResult:
    """Find the highest rate in ``[lo, ∞)`` whose attainment (``aggregate`` over ``seeds``) is >= ``target``.

    If ``hi`` still passes, it is doubled up to ``max_expansions`` times. Bisection then stops when
    ``hi - lo <= tol · hi`` (relative tolerance). Attainment is assumed to fall as the rate rises;
    with noise that is true only on average, so the answer is the best rate seen passing inside the
    final bracket. ``on_probe`` is called after each rate (progress bars).
    """
    if not 0 < target <= 1:
        raise ValueError(f"target attainment must lie in (0, 1], got {target}")
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"need 0 < lo < hi < inf, got lo={lo}, hi={hi}")
    if not 0 < tol < 1:
        raise ValueError(f"tol must lie in (0, 1), got {tol}")
    if not seeds:
        raise ValueError("need at least one seed")
    if aggregate not in ("mean", "min"):
        raise ValueError(f"aggregate must be 'mean' or 'min', got {aggregate!r}")
    probes: list[Probe] = []

    def probe(rate: float) -> bool:
        atts = tuple(float(run(rate, s).attainment) for s in seeds)
        score = sum(atts) / len(atts) if aggregate == "mean" else min(atts)
        p = Probe(rate, atts, score, score >= target)
        probes.append(p)
        if on_probe is not None:
            on_probe(p)
        return p.passed

    def result(rate: float, a: float, b: float) -> CapacityResult:
        return CapacityResult(rate, target, a, b, tuple(seeds), aggregate, probes)

    if not probe(lo):
        return result(0.0, lo, lo)
    good = lo
    bad = hi
    expansions = 0
    while probe(bad):
        good = bad
        if expansions >= max_expansions:
            return result(good, good, math.inf)
        bad *= 2
        expansions += 1
    while bad - good > tol * bad:
        mid = 0.5 * (good + bad)
        if probe(mid):
            good = mid
        else:
            bad = mid
    return result(good, good, bad)


__all__ = ["Attained", "Attainment", "CapacityResult", "Probe", "capacity_search"]
