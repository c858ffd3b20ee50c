"""QoS utility of a response, model variants and the specification QoS schedulers share (SEEDS §5).

From the paper (Fang, Yu, Mengshoel, Gupta, CIKM 2017): the quality of one response is a utility of
its delay ``D`` and the accuracy ``A`` of the model variant that answered, and the scheduler
maximises the total. Ours (*spec*): the form ``U(D, A) = A^α · h(D)`` with ``h = 1`` up to the
target delay, then falling linearly or exponentially to 0 at a cutoff; the arrival-rate estimator.

Everything here is sans-I/O except :func:`qos_spec_from_params`, which may read a profile file
named in a config when a factory builds a scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from sloserve.core.config import StrictModel, validate
from sloserve.core.profile_io import load_profiles, profiles_from_data
from sloserve.core.profiles import ModelProfile, ProfileSet

MS = 1e-3


@dataclass(frozen=True, slots=True)
class QosUtility:
    """``U(D, A) = A^alpha · h(D)``; ``h`` is 1 up to ``target``, then falls to 0 at ``cutoff``.

    ``decay="linear"``: ``h = 1 - x``; ``decay="exponential"``: ``h = (e^{-kx} - e^{-k}) / (1 - e^{-k})``
    with ``x = (D - target) / (cutoff - target)`` and ``k = steepness`` (continuous, 0 at the cutoff).
    """

    target: float
    """Delay (seconds) up to which a response has full value; also the request's SLO."""
    cutoff: float
    """Delay (seconds) from which a response is worth nothing."""
    alpha: float = 1.0
    """Weight of accuracy: larger values favour accurate variants more."""
    decay: Literal["linear", "exponential"] = "linear"
    steepness: float = 3.0
    """``k`` of the exponential decay (ignored for linear)."""

    def __post_init__(self) -> None:
        if not 0 < self.target < self.cutoff:
            got = f"got {self.target:g} s and {self.cutoff:g} s"
            raise ValueError(f"utility: need 0 < target < cutoff, {got}")
        if self.alpha < 0:
            raise ValueError(f"utility: alpha must be >= 0, got {self.alpha}")
        if self.decay not in ("linear", "exponential"):
            raise ValueError(f"utility: decay must be 'linear' or 'exponential', got {self.decay!r}")
        if self.steepness <= 0:
            raise ValueError(f"utility: steepness must be > 0, got {self.steepness}")

    def delay_factor(self, delay: float) -> float:
        """``h(D)`` for one delay (seconds)."""
        return float(self.delay_factors(np.array([delay]))[0])

    def delay_factors(self, delays: np.ndarray) -> np.ndarray:
        """``h(D)`` for an array of delays (seconds); NaN (dropped) gives 0."""
        d = np.asarray(delays, dtype=float)
        x = np.clip((d - self.target) / (self.cutoff - self.target), 0.0, 1.0)
        if self.decay == "linear":
            h = 1.0 - x
        else:
            k = self.steepness
            h = (np.exp(-k * x) - math.exp(-k)) / (1.0 - math.exp(-k))
        out: np.ndarray = np.asarray(np.where(np.isnan(d), 0.0, h), dtype=np.float64)
        return out

    def __call__(self, delay: float, accuracy: float) -> float:
        """Utility of one response answered after ``delay`` seconds by a variant of ``accuracy``."""
        return float(accuracy**self.alpha) * self.delay_factor(delay)

    def values(self, delays: np.ndarray, accuracies: np.ndarray) -> np.ndarray:
        """Utility per request; a NaN delay (dropped request) is worth 0."""
        acc = np.nan_to_num(np.asarray(accuracies, dtype=float), nan=0.0)
        out: np.ndarray = np.power(acc, self.alpha) * self.delay_factors(delays)
        return out


@dataclass(frozen=True, slots=True)
class Variant:
    """One model variant of the task: a name (its profile's model name) and its accuracy."""

    name: str
    accuracy: float
    """Task accuracy in [0, 1] (e.g. ImageNet top-1)."""


@dataclass(frozen=True, slots=True)
class QosSpec:
    """What every QoS scheduler knows: the variants, their latency on each server type, the utility."""

    variants: tuple[Variant, ...]
    """Variants in the order actions and configs number them."""
    profiles: ProfileSet
    """Latency of variant ``v.name`` on hardware ``h``: ``profiles.get(v.name, h)``."""
    utility: QosUtility
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    """Batch-size buckets a scheduler chooses among (ascending)."""

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError("qos: at least one variant is needed")
        if list(self.batch_sizes) != sorted(set(self.batch_sizes)) or self.batch_sizes[0] < 1:
            raise ValueError(f"qos: batch_sizes must be ascending and >= 1, got {self.batch_sizes}")

    def profile(self, variant: int, hardware: str) -> ModelProfile:
        """Profile of variant number ``variant`` on ``hardware``."""
        return self.profiles.get(self.variants[variant].name, hardware)

    def latency(self, variant: int, hardware: str, batch: int) -> float:
        """Predicted (median) time to run ``batch`` requests of ``variant`` on ``hardware``."""
        return self.profile(variant, hardware).latency(batch)

    def by_accuracy(self) -> list[int]:
        """Variant numbers, most accurate first."""
        return sorted(range(len(self.variants)), key=lambda i: -self.variants[i].accuracy)


class RateEstimator:
    """Exponentially decaying arrival counter: ``rate ≈ (arrivals weighted by e^{-age/tau}) / tau``.

    Fed by the scheduler on each arrival; read when it decides. Owns only two floats.
    """

    __slots__ = ("_count", "_last", "tau")

    def __init__(self, tau: float = 1.0) -> None:
        if tau <= 0:
            raise ValueError(f"rate estimator: tau must be > 0, got {tau}")
        self.tau = tau
        self._count = 0.0
        self._last = 0.0

    def observe(self, now: float) -> None:
        """Called when a request arrives at ``now``."""
        self._count = self._count * math.exp(-max(0.0, now - self._last) / self.tau) + 1.0
        self._last = now

    def rate(self, now: float) -> float:
        """Estimated arrivals per second at ``now``."""
        return self._count * math.exp(-max(0.0, now - self._last) / self.tau) / self.tau


# ------------------------------------------------------------------------------ config schema


class UtilityParams(StrictModel):
    """``utility:`` in a config: the shape of ``U(D, A)``."""

    target_ms: float = Field(gt=0, description="full value up to this delay; also the SLO")
    cutoff_ms: float = Field(gt=0, description="no value from this delay on")
    alpha: float = Field(default=1.0, ge=0, description="accuracy exponent")
    decay: Literal["linear", "exponential"] = "linear"
    steepness: float = Field(default=3.0, gt=0, description="k of the exponential decay")

    def build(self) -> QosUtility:
        """The utility in seconds."""
        return QosUtility(self.target_ms * MS, self.cutoff_ms * MS, self.alpha, self.decay, self.steepness)


class VariantParams(StrictModel):
    """One entry of ``variants:``: a model variant of the task."""

    name: str = Field(min_length=1, description="model name; its profiles use this name")
    accuracy: float = Field(gt=0, le=1, description="task accuracy in (0, 1]")


class QosParams(StrictModel):
    """Scheduler parameters shared by the QoS schedulers (``scheduler: {name, params}``)."""

    variants: list[VariantParams] = Field(min_length=1)
    profiles: str | list[dict[str, Any]] = Field(
        description="profile file path (relative to base_dir) or inline profile entries"
    )
    utility: UtilityParams
    batch_sizes: list[int] = Field(default=[1, 2, 4, 8, 16, 32], min_length=1)


def qos_spec_from_params(params: Mapping[str, Any], base_dir: str | Path = ".") -> QosSpec:
    """Validate QoS scheduler parameters and build the spec (loads a profile file if one is named)."""
    parsed = validate(QosParams, dict(params), "qos scheduler params")
    if isinstance(parsed.profiles, str):
        path = Path(parsed.profiles)
        profiles = load_profiles(path if path.is_absolute() else Path(base_dir) / path)
    else:
        profiles = profiles_from_data(
            {"format": "sloserve-profile/v1", "profiles": parsed.profiles}, "qos scheduler profiles"
        )
    return QosSpec(
        variants=tuple(Variant(v.name, v.accuracy) for v in parsed.variants),
        profiles=profiles,
        utility=parsed.utility.build(),
        batch_sizes=tuple(sorted(set(parsed.batch_sizes))),
    )
