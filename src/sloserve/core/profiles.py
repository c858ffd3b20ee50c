"""Latency profiles: batch latency as a function of batch size, cores and co-located instances.

A profile describes one model on one hardware type. Times are seconds. Three forms:

- :class:`AffineProfile` — ``α + β·b`` (the classic batching model; cores are ignored);
- :class:`SpongeProfile` — ``γ·b/c + δ·b + ε/c + η`` (Sponge's model, fitted by least squares);
- :class:`TabulatedProfile` — measured points with interpolation (what the profiler writes).

:class:`CostedProfile` wraps any of them with a server's own costs per batch and per row.

Co-located instances slow each other down by ``slowdown(k)`` (1 for k = 1); a tabulated profile
with points measured at k instances uses them directly instead.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy.optimize import lsq_linear

MAX_PROFILE_BATCH = 4096
"""Largest batch size a profile may hold (``runtime.model_config.MAX_BATCH_SIZE``, the largest
``max_batch_size`` a model may have): batchers walk the sizes up to a profile's ``max_batch``."""


@dataclass(frozen=True, slots=True)
class ProfilePoint:
    """One measurement: running ``batch`` on ``cores`` threads with ``instances`` co-located."""

    batch: int
    cores: int
    instances: int
    median: float
    """Median batch latency, seconds."""
    p99: float
    """99th percentile batch latency, seconds."""


class ModelProfile(Protocol):
    """Latency model of one model on one hardware type. Every policy and planner reads this."""

    @property
    def model(self) -> str: ...

    @property
    def hardware(self) -> str: ...

    @property
    def max_batch(self) -> int: ...

    def latency(self, batch: int, cores: int = 1, instances: int = 1) -> float:
        """Typical (median) time to run one batch, seconds."""
        ...

    def tail_latency(self, batch: int, cores: int = 1, instances: int = 1) -> float:
        """99th percentile time to run one batch, seconds."""
        ...


def _interp_slowdown(table: Sequence[float], k: int) -> float:
    """``s(k)`` from a table for k = 1, 2, ...; extrapolates linearly past its end."""
    if k <= 1 or not table:
        return 1.0
    if k <= len(table):
        return table[k - 1]
    if len(table) == 1:
        return table[0]
    step = table[-1] - table[-2]
    return table[-1] + step * (k - len(table))


@dataclass(frozen=True, slots=True)
class AffineProfile:
    """``latency(b) = (alpha + beta·b) · slowdown(k)``; ``tail = latency · tail_factor``."""

    model: str
    alpha: float
    beta: float
    hardware: str = "cpu"
    max_batch: int = 128
    tail_factor: float = 1.0
    slowdown: tuple[float, ...] = ()

    def latency(self, batch: int, cores: int = 1, instances: int = 1) -> float:
        return (self.alpha + self.beta * batch) * _interp_slowdown(self.slowdown, instances)

    def tail_latency(self, batch: int, cores: int = 1, instances: int = 1) -> float:
        return self.latency(batch, cores, instances) * self.tail_factor


@dataclass(frozen=True, slots=True)
class SpongeProfile:
    """Sponge's ``l(b, c) = γ·b/c + δ·b + ε/c + η`` (seconds), times ``slowdown(k)``."""

    model: str
    gamma: float
    delta: float
    epsilon: float
    eta: float
    hardware: str = "cpu"
    max_batch: int = 128
    tail_factor: float = 1.0
    slowdown: tuple[float, ...] = ()

    def latency(self, batch: int, cores: int = 1, instances: int = 1) -> float:
        c = max(cores, 1)
        base = self.gamma * batch / c + self.delta * batch + self.epsilon / c + self.eta
        return base * _interp_slowdown(self.slowdown, instances)

    def tail_latency(self, batch: int, cores: int = 1, instances: int = 1) -> float:
        return self.latency(batch, cores, instances) * self.tail_factor


@dataclass(frozen=True, slots=True)
class TabulatedProfile:
    """Measured points, interpolated.

    Lookup: among points with the requested instance count (else the nearest measured count,
    scaled by ``slowdown``), interpolate linearly in batch size (extrapolating with the last
    slope) and in ``1/cores`` between the nearest measured core counts. Lookups are memoised (the
    profile is immutable; schedulers ask the same few questions on every decision).
    """

    model: str
    points: tuple[ProfilePoint, ...]
    hardware: str = "cpu"
    slowdown: tuple[float, ...] = ()
    _grid: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _memo: dict[tuple[int, int, int, bool], float] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError(f"profile {self.model!r}: a tabulated profile needs at least one point")
        groups: dict[tuple[int, int], list[ProfilePoint]] = {}
        for p in self.points:
            groups.setdefault((p.instances, p.cores), []).append(p)
        for key, pts in groups.items():
            pts.sort(key=lambda p: p.batch)
            self._grid[key] = (
                np.array([p.batch for p in pts], dtype=float),
                np.array([p.median for p in pts], dtype=float),
                np.array([p.p99 for p in pts], dtype=float),
            )

    @property
    def max_batch(self) -> int:
        return max(p.batch for p in self.points)

    def latency(self, batch: int, cores: int = 1, instances: int = 1) -> float:
        key = (batch, cores, instances, False)
        value = self._memo.get(key)
        if value is None:
            value = self._memo[key] = self._lookup(batch, cores, instances, tail=False)
        return value

    def tail_latency(self, batch: int, cores: int = 1, instances: int = 1) -> float:
        key = (batch, cores, instances, True)
        value = self._memo.get(key)
        if value is None:
            value = self._memo[key] = self._lookup(batch, cores, instances, tail=True)
        return value

    def _lookup(self, batch: int, cores: int, instances: int, *, tail: bool) -> float:
        measured_k = sorted({k for k, _ in self._grid})
        k = min(measured_k, key=lambda m: (abs(m - instances), m))
        scale = 1.0
        if k != instances:
            scale = _interp_slowdown(self.slowdown, instances) / _interp_slowdown(self.slowdown, k)
        core_counts = sorted(c for kk, c in self._grid if kk == k)
        i = bisect.bisect_left(core_counts, cores)
        if i < len(core_counts) and core_counts[i] == cores:
            return scale * self._along_batch((k, cores), batch, tail)
        if i == 0:
            return scale * self._along_batch((k, core_counts[0]), batch, tail)
        if i == len(core_counts):
            return scale * self._along_batch((k, core_counts[-1]), batch, tail)
        lo, hi = core_counts[i - 1], core_counts[i]
        y_lo = self._along_batch((k, lo), batch, tail)
        y_hi = self._along_batch((k, hi), batch, tail)
        w = (1 / cores - 1 / hi) / (1 / lo - 1 / hi)
        return scale * (w * y_lo + (1 - w) * y_hi)

    def _along_batch(self, key: tuple[int, int], batch: int, tail: bool) -> float:
        bs, med, p99 = self._grid[key]
        ys = p99 if tail else med
        if len(bs) == 1:
            return float(ys[0]) * batch / bs[0] if batch > bs[0] else float(ys[0])
        if batch > bs[-1]:
            slope = (ys[-1] - ys[-2]) / (bs[-1] - bs[-2])
            if slope <= 0:  # the last two points fell (noise): a bigger batch takes no less, per row
                return float(ys[-1] * batch / bs[-1])
            return float(ys[-1] + slope * (batch - bs[-1]))
        return float(np.interp(batch, bs, ys))


@dataclass(frozen=True, slots=True)
class CostedProfile:
    """``base`` with a server's own costs added to every batch: ``per_batch`` seconds once and
    ``per_row`` seconds for each row (the front end's work per request, run on the same cores).

    What a scheduler on that server effectively serves with: the simulator and the bounds on it
    tell what capacity the server's costs leave (``benchmarks/front_end_cost.py``)."""

    base: ModelProfile
    per_row: float
    per_batch: float = 0.0

    def __post_init__(self) -> None:
        if self.per_row < 0 or self.per_batch < 0:
            raise ValueError(
                f"profile {self.base.model!r}: costs must be >= 0, got per_row={self.per_row}, "
                f"per_batch={self.per_batch}"
            )

    @property
    def model(self) -> str:
        return self.base.model

    @property
    def hardware(self) -> str:
        return self.base.hardware

    @property
    def max_batch(self) -> int:
        return self.base.max_batch

    def latency(self, batch: int, cores: int = 1, instances: int = 1) -> float:
        return self.base.latency(batch, cores, instances) + self.per_batch + batch * self.per_row

    def tail_latency(self, batch: int, cores: int = 1, instances: int = 1) -> float:
        return self.base.tail_latency(batch, cores, instances) + self.per_batch + batch * self.per_row


def throughput(profile: ModelProfile, batch: int, cores: int = 1, instances: int = 1) -> float:
    """Requests per second that ``instances`` co-located instances reach at full batches."""
    return instances * batch / profile.latency(batch, cores, instances)


def _tail_factor(points: Sequence[ProfilePoint]) -> float:
    ratios = [p.p99 / p.median for p in points if p.median > 0]
    return max(1.0, float(np.median(ratios))) if ratios else 1.0


def fit_affine(model: str, points: Iterable[ProfilePoint], hardware: str = "cpu") -> AffineProfile:
    """Least-squares ``α + β·b`` (both >= 0) through the median latencies of ``points``."""
    pts = list(points)
    if len(pts) < 2:
        raise ValueError(f"profile {model!r}: fitting an affine profile needs >= 2 points, got {len(pts)}")
    a = np.array([[1.0, p.batch] for p in pts])
    y = np.array([p.median for p in pts])
    sol = lsq_linear(a, y, bounds=(0.0, np.inf))
    return AffineProfile(
        model=model,
        alpha=float(sol.x[0]),
        beta=float(sol.x[1]),
        hardware=hardware,
        max_batch=max(p.batch for p in pts),
        tail_factor=_tail_factor(pts),
    )


def fit_sponge(model: str, points: Iterable[ProfilePoint], hardware: str = "cpu") -> SpongeProfile:
    """Least-squares fit of Sponge's ``γ·b/c + δ·b + ε/c + η`` (all >= 0) to median latencies."""
    pts = list(points)
    if len(pts) < 4:
        raise ValueError(f"profile {model!r}: fitting a Sponge profile needs >= 4 points, got {len(pts)}")
    a = np.array([[p.batch / p.cores, p.batch, 1.0 / p.cores, 1.0] for p in pts])
    y = np.array([p.median for p in pts])
    sol = lsq_linear(a, y, bounds=(0.0, np.inf))
    gamma, delta, epsilon, eta = (float(v) for v in sol.x)
    return SpongeProfile(
        model=model,
        gamma=gamma,
        delta=delta,
        epsilon=epsilon,
        eta=eta,
        hardware=hardware,
        max_batch=max(p.batch for p in pts),
        tail_factor=_tail_factor(pts),
    )


@dataclass(slots=True)
class ProfileSet:
    """Profiles keyed by (model, hardware); what a profile file holds."""

    profiles: dict[tuple[str, str], ModelProfile] = field(default_factory=dict)

    def add(self, profile: ModelProfile) -> None:
        """Add or replace the profile of ``(profile.model, profile.hardware)``."""
        self.profiles[(profile.model, profile.hardware)] = profile

    def get(self, model: str, hardware: str | None = None) -> ModelProfile:
        """The profile of ``model`` on ``hardware`` (or its only profile when ``hardware`` is None)."""
        if hardware is not None:
            try:
                return self.profiles[(model, hardware)]
            except KeyError:
                raise KeyError(f"no profile for model {model!r} on hardware {hardware!r}") from None
        matches = [p for (m, _), p in self.profiles.items() if m == model]
        if not matches:
            known = sorted({m for m, _ in self.profiles})
            raise KeyError(f"no profile for model {model!r}; known: {known}")
        if len(matches) > 1:
            raise KeyError(f"model {model!r} has profiles on several hardware types; name one")
        return matches[0]

    def models(self) -> list[str]:
        """Model names with at least one profile."""
        return sorted({m for m, _ in self.profiles})

    def hardware_for(self, model: str) -> list[str]:
        """Hardware types ``model`` has a profile on."""
        return sorted(h for m, h in self.profiles if m == model)

    def __len__(self) -> int:
        return len(self.profiles)


def max_batch_within(profile: ModelProfile, budget: float, cores: int = 1, *, tail: bool = True) -> int:
    """Largest batch whose (tail) latency fits ``budget``; 0 when even batch 1 does not."""
    f = profile.tail_latency if tail else profile.latency
    best = 0
    for b in range(1, profile.max_batch + 1):
        if f(b, cores, 1) <= budget:
            best = b
        else:
            break
    return best


__all__ = [
    "MAX_PROFILE_BATCH",
    "AffineProfile",
    "ModelProfile",
    "ProfilePoint",
    "ProfileSet",
    "SpongeProfile",
    "TabulatedProfile",
    "fit_affine",
    "fit_sponge",
    "max_batch_within",
    "throughput",
]
