"""DNNScaler (Nabavinejad, Ebrahimi, Reda; SEEDS §3): batching or multi-tenancy, then steer that knob.

Three parts, each a plain object that is told the time:

- :func:`detect` / :func:`detect_from_profile` / :func:`detect_from_points` — the *approach
  detector*: throughput at batch ``k`` on one instance versus ``k`` co-located instances at batch
  1 (k = 4 by default), both relative to batch 1 on one instance; the larger gain wins (ties go to
  batching, which needs one instance).
- :class:`BatchSearch` + :class:`DnnBatchScaler` — every 3 s, the mean latency of the window:
  inside ``[0.85·L, L]`` hold; below, binary-search the batch size upwards; above, downwards; when
  the search is stuck at an end of its interval, reopen the interval (up to ``max_batch`` or down
  to 1).
- :class:`InstanceControl` + :class:`DnnInstanceScaler` — the initial instance count is the
  largest ``k`` whose latency, predicted by rank-2 matrix completion from measurements at k = 1
  and k = 8 (:func:`predict_instance_latencies`), is below L; then every 1 s: below ``0.85·L`` add
  an instance and let it settle 5 s; above L remove the newest; after a removal, do not add back
  while the latency stays where it was when the removed instance was added (hysteresis).

:class:`DnnScaler` is detector + the chosen scaler. Registry names: ``dnnscaler``,
``dnnscaler_batch``, ``dnnscaler_mt``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import numpy as np

from sloserve.core.cluster import WindowStats
from sloserve.core.decisions import ScaleDecision, SetInstanceCount, SetMaxBatch
from sloserve.core.matrix_completion import complete_row
from sloserve.core.profiles import ModelProfile, ProfilePoint
from sloserve.policies.base import PolicyContext
from sloserve.policies.dnnscaler_data import published_matrix
from sloserve.policies.params import (
    Count,
    Fraction,
    Interval,
    Machines,
    PolicyParams,
    SloParams,
    Wait,
    parse_params,
)

MAX_INSTANCES = 10
"""Co-located instances DNNScaler considers (the published table goes to 10)."""


# ------------------------------------------------------------------------------------------------
# approach detector


class Approach(StrEnum):
    """The knob DNNScaler steers."""

    BATCHING = "batching"
    MULTI_TENANCY = "multi_tenancy"


@dataclass(frozen=True, slots=True)
class Detection:
    """What the approach detector measured and chose."""

    approach: Approach
    k: int
    """Batch size / instance count compared."""
    base: float
    """Requests per second at batch 1 on one instance."""
    batching: float
    """Requests per second at batch ``k`` on one instance."""
    multi_tenancy: float
    """Requests per second with ``k`` co-located instances at batch 1."""

    @property
    def batching_gain(self) -> float:
        """Throughput of batching relative to batch 1 on one instance."""
        return self.batching / self.base

    @property
    def multi_tenancy_gain(self) -> float:
        """Throughput of multi-tenancy relative to batch 1 on one instance."""
        return self.multi_tenancy / self.base


def detect(latency_1: float, latency_batch_k: float, latency_instances_k: float, k: int = 4) -> Detection:
    """Choose from three latencies (seconds): batch 1 alone, batch ``k`` alone, and batch 1 with
    ``k`` co-located instances (the latency each of them sees)."""
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    for name, v in (
        ("latency_1", latency_1),
        ("latency_batch_k", latency_batch_k),
        ("latency_instances_k", latency_instances_k),
    ):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number of seconds, got {v!r}")
    base = 1.0 / latency_1
    batching = k / latency_batch_k
    mt = k / latency_instances_k
    approach = Approach.MULTI_TENANCY if mt > batching else Approach.BATCHING
    return Detection(approach, k, base, batching, mt)


def colocated_latency(profile: ModelProfile, k: int, cores: int = 1) -> float:
    """Batch-1 latency with ``k`` co-located instances: the batch-1 latency times the profile's
    slowdown ``s(k)`` when it has one (what ``sloserve profile`` writes: a mean over every measured
    batch size), else ``profile.latency(1, cores, k)``. Ours (*spec*): with more instances than
    cores, most batch-1 runs finish inside one time slice, so the median of the batch-1 point at k
    instances alone hides the contention (mobilenet_v2 on 2 cores: 1.7 ms at k = 8 vs 1.4 ms alone,
    but 8x the latency at batch 16)."""
    slowdown: tuple[float, ...] = getattr(profile, "slowdown", ())
    if slowdown:
        return profile.latency(1, cores, 1) * _slowdown_at(slowdown, k)
    return profile.latency(1, cores, k)


def _slowdown_at(table: Sequence[float], k: int) -> float:
    """``s(k)`` from a table for k = 1, 2, ... (linear past its end, as the profiles do)."""
    if k <= 1:
        return 1.0
    if k <= len(table):
        return float(table[k - 1])
    step = table[-1] - table[-2] if len(table) > 1 else 0.0
    return float(table[-1] + step * (k - len(table)))


def detect_from_profile(profile: ModelProfile, k: int = 4, cores: int = 1) -> Detection:
    """The detector on a latency profile (a simulated device, or a profile file written by
    ``sloserve profile``); co-located latency by :func:`colocated_latency`."""
    return detect(
        profile.latency(1, cores, 1), profile.latency(k, cores, 1), colocated_latency(profile, k, cores), k
    )


def detect_from_points(points: Iterable[ProfilePoint], k: int = 4) -> Detection:
    """The detector on raw profiler measurements: the median latencies at (batch 1, 1 instance),
    (batch ``k``, 1 instance) and (batch 1, ``k`` instances), at the smallest core count that
    has all three. ``ValueError`` names what is missing."""
    by_key = {(p.batch, p.cores, p.instances): p.median for p in points}
    cores = sorted({c for _, c, _ in by_key})
    for c in cores:
        need = [(1, c, 1), (k, c, 1), (1, c, k)]
        if all(key in by_key for key in need):
            one, batch_k, instances_k = (by_key[key] for key in need)
            return detect(one, batch_k, instances_k, k)
    raise ValueError(
        f"the approach detector needs measurements at (batch 1, 1 instance), (batch {k}, 1 instance) "
        f"and (batch 1, {k} instances) with the same cores; have {sorted(by_key)}"
    )


# ------------------------------------------------------------------------------------------------
# batching: binary search on the batch size


@dataclass(slots=True)
class Readings:
    """Window latencies pooled until at least ``min_samples`` answered requests back a decision
    (the authors average their last 100 readings; a 1-second window of a model that answers two
    requests a second is too noisy to act on). Ours (*spec*): count-weighted mean of the windows."""

    min_samples: int = 20
    total: float = 0.0
    samples: int = 0

    def add(self, latency: float, samples: int) -> float | None:
        """Called per window; returns the pooled latency once enough requests are in, else None."""
        if latency <= 0 or samples <= 0:
            return None
        self.total += latency * samples
        self.samples += samples
        if self.samples < self.min_samples:
            return None
        value = self.total / self.samples
        self.clear()
        return value

    def clear(self) -> None:
        """Forget what was pooled (after a change, readings of the old setting are stale)."""
        self.total, self.samples = 0.0, 0


@dataclass(slots=True)
class BatchSearch:
    """DNNScaler's batch-size search, without a clock: feed it one mean latency per decision.

    State: the current ``batch`` and the search interval ``[lo, hi]``. Below the band the search
    moves up to ``ceil((lo+hi)/2)`` (and ``lo`` to the current batch); above it moves down to
    ``floor((lo+hi)/2)`` (and ``hi`` to the current batch). Stuck at ``hi`` while still below the
    band, the interval reopens to ``[hi, max_batch]``; stuck at ``lo`` while still above, to
    ``[1, lo]``.

    Ours (*spec*): when no batch size lands inside the band, the plain search alternates between
    two neighbours, one of them over L, forever. So the smallest batch size that went over L is
    remembered (``breached``) and the upward search stops just below it, until the latency now
    seen at batch b, scaled in proportion to ``breached / b``, is within L: batch latency grows at
    most in proportion to the batch (it has a fixed part), so then ``breached`` fits again (the
    device got faster) and the memory is dropped. And once a window at the current batch size
    was inside the band, leaving it upwards takes ``patience`` windows in a row below the band
    (noise near the lower edge would otherwise send the search on a probe over L now and then).
    """

    slo: float
    """The latency objective L, seconds."""
    max_batch: int
    """Largest batch size (127 in the paper; the model's ``max_batch_size`` here)."""
    batch: int = 1
    low: float = 0.85
    """The band is ``[low·L, L]``."""
    lo: int = 1
    hi: int = 0
    """Interval upper end; 0 means ``max_batch``."""
    breached: int = 0
    """Smallest batch size seen over L (0: none remembered)."""
    patience: int = 2
    settled: bool = False
    """A window at the current batch size was inside the band."""
    below: int = 0
    """Windows in a row below the band at the current batch size."""

    def __post_init__(self) -> None:
        if self.slo <= 0:
            raise ValueError(f"the SLO must be > 0, got {self.slo}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if not 0 < self.low < 1:
            raise ValueError(f"low must lie in (0, 1), got {self.low}")
        self.batch = min(max(1, self.batch), self.max_batch)
        if self.hi <= 0:
            self.hi = self.max_batch

    def update(self, latency: float) -> int:
        """Called once per decision with the window's mean latency (seconds; <= 0 when nothing
        was answered, which holds); returns the new batch size."""
        if latency <= 0:
            return self.batch
        before = self.batch
        if latency > self.slo:
            self.below = 0
            self._down()
        elif latency < self.low * self.slo:
            self.below += 1
            if not self.settled or self.below >= self.patience:
                self._up(latency)
        else:
            self.settled, self.below = True, 0
        if self.batch != before:
            self.settled, self.below = False, 0
        return self.batch

    def _up(self, latency: float) -> None:
        b = self.batch
        if b >= self.max_batch:
            return
        if self.breached and latency * self.breached / b <= self.slo:
            self.breached = 0  # even scaled up in proportion, the size that went over L fits now
        if b >= self.hi:  # stuck at the top of the interval: reopen upwards
            self.lo, self.hi = self.hi, self.max_batch
        else:
            self.lo = b
        target = math.ceil((self.lo + self.hi) / 2)
        if self.breached:
            target = min(target, self.breached - 1)
        self.batch = max(b, target)

    def _down(self) -> None:
        b = self.batch
        if not self.breached or b < self.breached:
            self.breached = b
        if b <= 1:
            return
        if b <= self.lo:  # stuck at the bottom of the interval: reopen downwards
            self.lo, self.hi = 1, self.lo
        else:
            self.hi = b
        self.batch = max(1, min(b - 1, (self.lo + self.hi) // 2))


Statistic = Literal["mean", "p95"]
"""Which window latency a scaler steers: the paper's mean, or the p95 that Clipper's AIMD uses."""


def _latency(window: WindowStats, statistic: Statistic) -> float:
    return window.p95_latency if statistic == "p95" else window.mean_latency


class DnnBatchScaler:
    """Scaler ``dnnscaler_batch``: every ``interval`` (3 s) moves the batch cap by :class:`BatchSearch`
    on the window's mean latency (the paper's; ``statistic="p95"`` steers the p95 instead)."""

    def __init__(
        self,
        model: str,
        search: BatchSearch,
        interval: float = 3.0,
        statistic: Statistic = "mean",
        min_samples: int = 20,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        if statistic not in ("mean", "p95"):
            raise ValueError(f"statistic must be 'mean' or 'p95', got {statistic!r}")
        self.model = model
        self.search = search
        self.statistic: Statistic = statistic
        self.readings = Readings(min_samples)
        self._interval = interval
        self._started = False

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def onset_delay(self) -> float | None:
        return None

    def on_tick(self, now: float, window: WindowStats) -> list[ScaleDecision]:
        """Called every ``interval``; returns ``SetMaxBatch`` when the cap should change. The first
        window ran under a cap the search did not choose, so it only sets the starting cap."""
        if not self._started:
            self._started = True
            batch = self.search.batch
        else:
            pooled = self.readings.add(_latency(window, self.statistic), window.completed)
            batch = self.search.batch if pooled is None else self.search.update(pooled)
        return [SetMaxBatch(self.model, batch)] if batch != window.max_batch else []


# ------------------------------------------------------------------------------------------------
# multi-tenancy: instance count


def predict_instance_latencies(
    latency_1: float,
    latency_8: float,
    known: Sequence[Sequence[float]] | np.ndarray | None = None,
    *,
    max_instances: int = MAX_INSTANCES,
) -> tuple[float, ...]:
    """Latency at k = 1..``max_instances`` co-located instances predicted by rank-2 completion
    from the new model's latency at k = 1 and k = 8 and the rows of ``known`` models (latency at
    k = 1..10 each; default: the published table). Any unit; the answer is in the same unit."""
    table = published_matrix() if known is None else np.asarray(known, dtype=float)
    if table.ndim != 2 or table.shape[1] < 8:
        raise ValueError(f"known latencies must be rows of >= 8 values (k = 1..), got shape {table.shape}")
    row: list[float | None] = [None] * table.shape[1]
    row[0], row[7] = latency_1, latency_8
    pred = complete_row(table, row, rank=2)
    values = [float(v) for v in pred[:max_instances]]
    while len(values) < max_instances:  # past the table: extend with its last slope
        values.append(values[-1] + (values[-1] - values[-2]))
    return tuple(values)


def initial_instances(predicted: Sequence[float], slo: float) -> int:
    """The largest k whose predicted latency is below ``slo`` (at least 1)."""
    best = 1
    for k, lat in enumerate(predicted, start=1):
        if lat < slo:
            best = k
    return best


@dataclass(slots=True)
class InstanceControl:
    """DNNScaler's instance-count rule, without a clock: feed it one mean latency per decision.

    Hysteresis (the paper's): after removing an instance because the latency went over L, the
    count is *blocked*: no instance is added back while the latency stays at or above ``unblock``
    times the latency that was seen at this count when the removed instance was added (the
    conditions that led to the breach have not changed). When no such latency is known (the start
    count was too high), the first latency seen after the removal is the reference.
    """

    slo: float
    """The latency objective L, seconds."""
    count: int = 1
    """Instances now."""
    max_instances: int = MAX_INSTANCES
    low: float = 0.85
    """Add an instance while the latency is below ``low·L``."""
    settle: float = 5.0
    """Seconds to wait after a change before judging again ..."""
    settle_latencies: float = 2.0
    """... or this many latencies (the last one seen), if longer: requests dispatched before the
    change must finish and new ones be seen (the authors add a per-model wait, 1-15 s)."""
    unblock: float = 0.95
    settle_until: float = -math.inf
    blocked_at: int = 0
    """Count not to grow past while blocked (0: not blocked)."""
    block_latency: float = 0.0
    """Reference latency of the block (0: take the next one seen)."""
    add_latency: dict[int, float] = field(default_factory=dict)
    """Latency seen at count c when instance c + 1 was added."""
    patience: int = 2
    """Once the latency at this count was inside the band, adding takes this many decisions in a
    row below it (as :class:`BatchSearch`)."""
    settled: bool = False
    below: int = 0

    def __post_init__(self) -> None:
        if self.slo <= 0:
            raise ValueError(f"the SLO must be > 0, got {self.slo}")
        if self.max_instances < 1:
            raise ValueError(f"max_instances must be >= 1, got {self.max_instances}")
        self.count = min(max(1, self.count), self.max_instances)

    def update(self, now: float, latency: float) -> int:
        """Called once per decision with the window's mean latency (seconds; <= 0 holds); returns
        the new instance count."""
        if latency <= 0 or now < self.settle_until:
            return self.count
        if latency > self.slo:
            if self.count > 1:
                self.count -= 1
                self.blocked_at = self.count
                self.block_latency = self.add_latency.get(self.count, 0.0)
                self.settled, self.below = False, 0
                self.settle_until = now + max(self.settle, self.settle_latencies * latency)
            return self.count
        blocked = self.blocked_at == self.count
        if blocked and self.block_latency <= 0:
            self.block_latency = latency
            return self.count
        if latency >= self.low * self.slo:
            self.settled, self.below = True, 0
            return self.count
        self.below += 1
        if self.count >= self.max_instances or (self.settled and self.below < self.patience):
            return self.count
        if blocked and latency >= self.unblock * self.block_latency:
            return self.count
        self.blocked_at = 0
        self.add_latency[self.count] = latency
        self.count += 1
        self.settled, self.below = False, 0
        self.settle_until = now + max(self.settle, self.settle_latencies * latency)
        return self.count


class DnnInstanceScaler:
    """Scaler ``dnnscaler_mt``: every ``interval`` (1 s) sets the instance count by
    :class:`InstanceControl` on the window's mean (or ``statistic="p95"``) latency. The first tick
    sets the count to the initial one and the batch cap to ``batch`` (1: multi-tenancy runs each
    instance at batch 1)."""

    def __init__(
        self,
        model: str,
        control: InstanceControl,
        interval: float = 1.0,
        batch: int = 1,
        statistic: Statistic = "mean",
        min_samples: int = 20,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        if statistic not in ("mean", "p95"):
            raise ValueError(f"statistic must be 'mean' or 'p95', got {statistic!r}")
        self.statistic: Statistic = statistic
        self.readings = Readings(min_samples)
        self.model = model
        self.control = control
        self.batch = batch
        self._interval = interval
        self._started = False

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def onset_delay(self) -> float | None:
        return None

    def on_tick(self, now: float, window: WindowStats) -> list[ScaleDecision]:
        """Called every ``interval``; returns ``SetInstanceCount`` (and ``SetMaxBatch`` once)."""
        out: list[ScaleDecision] = []
        if not self._started:
            self._started = True
            if window.max_batch != self.batch:
                out.append(SetMaxBatch(self.model, self.batch))
            if window.instances != self.control.count:
                out.append(SetInstanceCount(self.model, self.control.count))
            self.control.settle_until = now + self.control.settle
            return out
        if now < self.control.settle_until:
            self.readings.clear()  # requests of the old setting are still finishing
            return out
        pooled = self.readings.add(_latency(window, self.statistic), window.completed)
        if pooled is None:
            return out
        before = self.control.count
        after = self.control.update(now, pooled)
        if after != before:
            out.append(SetInstanceCount(self.model, after))
        return out


# ------------------------------------------------------------------------------------------------
# DNNScaler = detector + the chosen scaler


@dataclass(slots=True)
class DnnScaler:
    """Scaler ``dnnscaler``: the detector's choice and the scaler for it (it delegates every tick)."""

    detection: Detection
    inner: DnnBatchScaler | DnnInstanceScaler
    predicted: tuple[float, ...] = field(default=())
    """Predicted latency at k = 1..10 (multi-tenancy only)."""

    @property
    def approach(self) -> Approach:
        return self.detection.approach

    @property
    def interval(self) -> float:
        return self.inner.interval

    @property
    def onset_delay(self) -> float | None:
        return self.inner.onset_delay

    def on_tick(self, now: float, window: WindowStats) -> list[ScaleDecision]:
        """Called every ``interval`` of the chosen scaler."""
        return self.inner.on_tick(now, window)


class _DnnControlParams(SloParams):
    """What both scalers take: ``slo_ms`` (the model's), ``low`` (0.85), ``statistic`` (``mean``,
    the paper's; or ``p95``), ``min_samples`` (20), ``patience`` (2)."""

    low: Fraction = 0.85
    statistic: Statistic = "mean"
    min_samples: Count = 20
    patience: Count = 2


class DnnBatchParams(_DnnControlParams):
    """The batching scaler's: ``initial_batch`` (1), ``interval_s`` (3), and the shared ones."""

    initial_batch: Count = 1
    interval_s: Interval = 3.0


class DnnInstanceParams(_DnnControlParams):
    """The multi-tenancy scaler's: ``cores`` (1, per instance), ``initial_instances`` (default:
    predicted from the profile at k = 1 and 8, else 1), ``max_instances`` (10), ``settle_s`` (5),
    ``interval_s`` (1), and the shared ones."""

    cores: Machines = 1
    initial_instances: Machines | None = None
    max_instances: Machines = MAX_INSTANCES
    settle_s: Wait = 5.0
    interval_s: Interval = 1.0


class DnnDetectorParams(PolicyParams):
    """The detector's: ``k`` (4: instances it compares batching with), ``cores`` (1),
    ``approach`` (force ``batching`` or ``multi_tenancy`` instead of detecting)."""

    k: Machines = 4
    cores: Machines = 1
    approach: Approach | None = None


def build_batch_scaler(model: str, slo: float, max_batch: int, p: DnnBatchParams) -> DnnBatchScaler:
    """A batching scaler with the cap ranging over ``1..max_batch``."""
    search = BatchSearch(slo=slo, max_batch=max_batch, batch=p.initial_batch, low=p.low, patience=p.patience)
    return DnnBatchScaler(model, search, p.interval_s, statistic=p.statistic, min_samples=p.min_samples)


def build_instance_scaler(
    model: str, slo: float, profile: ModelProfile | None, p: DnnInstanceParams
) -> tuple[DnnInstanceScaler, tuple[float, ...]]:
    """A multi-tenancy scaler and the latencies its start was predicted from (none when
    ``initial_instances`` is given or there is no profile)."""
    predicted: tuple[float, ...] = ()
    initial = p.initial_instances
    if initial is None:
        if profile is not None:
            predicted = predict_instance_latencies(
                profile.latency(1, p.cores, 1),
                colocated_latency(profile, 8, p.cores),
                max_instances=p.max_instances,
            )
            initial = initial_instances(predicted, slo)
        else:
            initial = 1
    control = InstanceControl(
        slo=slo,
        count=initial,
        max_instances=p.max_instances,
        low=p.low,
        settle=p.settle_s,
        patience=p.patience,
    )
    scaler = DnnInstanceScaler(model, control, p.interval_s, statistic=p.statistic, min_samples=p.min_samples)
    return scaler, predicted


def make_dnnscaler_batch(ctx: PolicyContext, **params: Any) -> DnnBatchScaler:
    """Registry factory ``dnnscaler_batch`` (:class:`DnnBatchParams`); the batch cap ranges over
    ``1..ctx.max_batch``."""
    p = parse_params(DnnBatchParams, params, "dnnscaler_batch")
    return build_batch_scaler(ctx.model, p.slo(ctx), ctx.max_batch, p)


def make_dnnscaler_mt(ctx: PolicyContext, **params: Any) -> DnnInstanceScaler:
    """Registry factory ``dnnscaler_mt`` (:class:`DnnInstanceParams`; the initial count is
    predicted from ``ctx.profile``)."""
    p = parse_params(DnnInstanceParams, params, "dnnscaler_mt")
    scaler, _ = build_instance_scaler(ctx.model, p.slo(ctx), ctx.profile, p)
    return scaler


def make_dnnscaler(ctx: PolicyContext, **params: Any) -> DnnScaler:
    """Registry factory ``dnnscaler``: runs the detector on ``ctx.profile``
    (:class:`DnnDetectorParams`), then builds the scaler of the approach it picks with the other
    parameters (:class:`DnnBatchParams` or :class:`DnnInstanceParams`; one the other approach
    alone takes is refused, naming the approach picked)."""
    rest = dict(params)
    mine: dict[str, Any] = {name: rest.pop(name) for name in ("k", "approach") if name in rest}
    if "cores" in rest:
        mine["cores"] = rest["cores"]
    d = parse_params(DnnDetectorParams, mine, "dnnscaler")
    if ctx.profile is None:
        raise ValueError(f"model {ctx.model!r}: scaler 'dnnscaler' needs a latency profile to detect from")
    detection = detect_from_profile(ctx.profile, d.k, d.cores)
    if d.approach is not None:
        detection = Detection(d.approach, d.k, detection.base, detection.batching, detection.multi_tenancy)
    where = f"dnnscaler ({detection.approach.value})"
    if detection.approach is Approach.BATCHING:
        rest.pop("cores", None)  # the detector's; a batching scaler keeps one instance as it is
        b = parse_params(DnnBatchParams, rest, where)
        return DnnScaler(detection, build_batch_scaler(ctx.model, b.slo(ctx), ctx.max_batch, b))
    m = parse_params(DnnInstanceParams, rest, where)
    inner, predicted = build_instance_scaler(ctx.model, m.slo(ctx), ctx.profile, m)
    return DnnScaler(detection, inner, predicted)


__all__ = [
    "MAX_INSTANCES",
    "Approach",
    "BatchSearch",
    "Detection",
    "DnnBatchScaler",
    "DnnInstanceScaler",
    "DnnScaler",
    "InstanceControl",
    "Readings",
    "build_batch_scaler",
    "build_instance_scaler",
    "colocated_latency",
    "detect",
    "detect_from_points",
    "detect_from_profile",
    "initial_instances",
    "make_dnnscaler",
    "make_dnnscaler_batch",
    "make_dnnscaler_mt",
    "predict_instance_latencies",
]
