"""Run metrics, aggregated incrementally so memory stays flat however many requests a run has.

:class:`MetricsCollector` is fed by a driver (the simulator; the server may reuse it) as requests
complete or are dropped; :meth:`MetricsCollector.result` returns a plain :class:`Metrics`.
Latency percentiles come from a log-binned histogram (:class:`LatencyHistogram`, relative error
below 0.1%); count, mean and max are exact.

Definitions (the same in every report):

- *attainment* = requests answered by their deadline / all requests; drops count as misses;
- *goodput* = requests answered by their deadline per second of the arrival window;
- *throughput* = requests answered per second of the arrival window;
- latency = finish − arrival of answered requests (dropped requests have none);
- *core-seconds* = Σ cores × seconds held by every instance (starting ones included);
- *cost* = core-seconds × hardware price per hour / cores per machine / 3600.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

_LO = 1e-7
_HI = 1e5
_RATIO = 1.001
_NBINS = math.ceil(math.log(_HI / _LO) / math.log(_RATIO))
_LOG_LO = math.log(_LO)
_INV_LOG_RATIO = 1.0 / math.log(_RATIO)


class LatencyHistogram:
    """Streaming latency distribution: geometric bins from 0.1 µs to 1e5 s, ratio 1.001.

    Values below the range go to bin 0 and above it to the last bin; quantiles interpolate within
    a bin, so their relative error is < 0.1%. Count, sum and max are exact.
    """

    __slots__ = ("count", "counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts = np.zeros(_NBINS + 2, dtype=np.int64)
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.min = math.inf

    def add(self, values: np.ndarray) -> None:
        """Add latencies (seconds)."""
        if len(values) == 0:
            return
        v = np.asarray(values, dtype=np.float64)
        idx = np.floor((np.log(np.maximum(v, _LO * 0.5)) - _LOG_LO) * _INV_LOG_RATIO).astype(np.int64) + 1
        np.clip(idx, 0, _NBINS + 1, out=idx)
        self.counts += np.bincount(idx, minlength=_NBINS + 2)
        self.count += len(v)
        self.total += float(v.sum())
        self.max = max(self.max, float(v.max()))
        self.min = min(self.min, float(v.min()))

    def merge(self, other: LatencyHistogram) -> None:
        """Add another histogram's values."""
        self.counts += other.counts
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)
        self.min = min(self.min, other.min)

    @property
    def mean(self) -> float:
        """Exact mean (0 when empty)."""
        return self.total / self.count if self.count else 0.0

    def _edges(self, i: np.ndarray) -> np.ndarray:
        return _LO * np.power(_RATIO, i.astype(np.float64) - 1)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the values, 0 when empty; clamped to the exact min and max."""
        if self.count == 0:
            return 0.0
        target = q * self.count
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, target, side="left"))
        i = min(i, len(cum) - 1)
        before = float(cum[i - 1]) if i > 0 else 0.0
        in_bin = float(self.counts[i])
        lo, hi = self._edges(np.array([i, i + 1]))
        frac = (target - before) / in_bin if in_bin else 0.0
        value = float(lo * (hi / lo) ** min(max(frac, 0.0), 1.0))
        return min(max(value, self.min), self.max)

    def cdf(self, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
        """(latency, fraction <= latency) at the upper edges of non-empty bins, thinned to ``points``."""
        nz = np.flatnonzero(self.counts)
        if len(nz) == 0:
            return np.zeros(0), np.zeros(0)
        cum = np.cumsum(self.counts)[nz] / self.count
        x = np.minimum(self._edges(nz + 1), self.max)
        if len(x) > points:
            keep = np.unique(np.linspace(0, len(x) - 1, points).astype(int))
            x, cum = x[keep], cum[keep]
        return x, cum


@dataclass(frozen=True)
class Metrics:
    """What one run (or one model of it) achieved. Times in seconds; see the module docstring."""

    requests: int
    """Requests that arrived."""
    completed: int
    """Requests answered (late ones included)."""
    met: int
    """Requests answered by their deadline."""
    dropped: int
    """Requests dropped (any reason)."""
    duration: float
    """Arrival window (seconds) that rates are measured over."""
    attainment: float
    """met / requests (1.0 when there were no requests)."""
    goodput: float
    """met / duration, req/s."""
    throughput: float
    """completed / duration, req/s."""
    latency_mean: float
    """Latencies of answered requests: 0 here, null in :meth:`to_dict`, when none was answered."""
    latency_p50: float
    latency_p95: float
    latency_p99: float
    latency_max: float
    drops_by_reason: dict[str, int]
    """Reason value → count."""
    batch_sizes: dict[int, int]
    """Batch size (padding included) → number of batches run."""
    mean_batch: float
    """Mean batch size over batches run."""
    core_seconds: float
    instance_seconds: float
    cost: float
    """Price of the core-seconds (0 when no price was given)."""
    makespan: float = 0.0
    """Time the last request ended (simulated seconds)."""
    per_model: dict[str, Metrics] = field(default_factory=dict)
    """The same figures per model (empty for a single-model run or for a per-model entry)."""

    @property
    def misses(self) -> int:
        """Requests that did not get an answer in time (late or dropped)."""
        return self.requests - self.met

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (batch sizes keyed by strings; latencies None when no request
        was answered: there is none to measure)."""
        d = asdict(self)
        d["batch_sizes"] = {str(k): v for k, v in sorted(self.batch_sizes.items())}
        d["per_model"] = {k: v.to_dict() for k, v in self.per_model.items()}
        if self.completed == 0:
            d.update(dict.fromkeys(LATENCY_FIELDS))
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metrics:
        """Inverse of :meth:`to_dict`."""
        d = dict(data)
        d.update({k: 0.0 for k in LATENCY_FIELDS if d.get(k) is None})
        d["batch_sizes"] = {int(k): int(v) for k, v in d.get("batch_sizes", {}).items()}
        d["per_model"] = {k: cls.from_dict(v) for k, v in d.get("per_model", {}).items()}
        return cls(**d)


LATENCY_FIELDS = ("latency_mean", "latency_p50", "latency_p95", "latency_p99", "latency_max")
"""The :class:`Metrics` fields that measure answered requests."""


class MetricsCollector:
    """Counts one model's outcomes as they happen; memory does not grow with the number of requests.

    The driver calls :meth:`arrived`, :meth:`completed` and :meth:`dropped`; latencies are buffered
    in Python lists and folded into the histogram every ``flush_every`` values.
    """

    __slots__ = (
        "arrivals",
        "batches",
        "core_seconds",
        "done",
        "drops",
        "flush_every",
        "hist",
        "instance_seconds",
        "last_end",
        "lat_sum",
        "met",
        "n_dropped",
        "pending",
    )

    def __init__(self, flush_every: int = 1 << 16) -> None:
        self.hist = LatencyHistogram()
        self.pending: list[float] = []
        """Latencies not yet in the histogram."""
        self.flush_every = flush_every
        self.arrivals = 0
        self.done = 0
        """Answered requests."""
        self.met = 0
        self.lat_sum = 0.0
        """Sum of latencies of answered requests (exact mean, window means)."""
        self.n_dropped = 0
        self.drops: dict[str, int] = {}
        self.batches: dict[int, int] = {}
        self.core_seconds = 0.0
        self.instance_seconds = 0.0
        self.last_end = 0.0

    def arrived(self, n: int = 1) -> None:
        """``n`` requests arrived."""
        self.arrivals += n

    def completed(self, now: float, arrivals: Iterable[float], deadlines: Iterable[float]) -> None:
        """A batch's requests were answered at ``now`` (pairs of arrival and deadline times)."""
        pend = self.pending
        met = 0
        s = 0.0
        n = 0
        for a, d in zip(arrivals, deadlines, strict=True):
            lat = now - a
            pend.append(lat)
            s += lat
            n += 1
            if now <= d:
                met += 1
        self.done += n
        self.met += met
        self.lat_sum += s
        self.last_end = now
        if len(pend) >= self.flush_every:
            self.flush()

    def batch(self, size: int) -> None:
        """A batch of ``size`` (padding included) started."""
        b = self.batches
        b[size] = b.get(size, 0) + 1

    def dropped(self, now: float, reason: str) -> None:
        """One request was dropped at ``now`` for ``reason``."""
        self.n_dropped += 1
        self.drops[reason] = self.drops.get(reason, 0) + 1
        self.last_end = max(self.last_end, now)

    def flush(self) -> None:
        """Move buffered latencies into the histogram."""
        if self.pending:
            self.hist.add(np.fromiter(self.pending, dtype=np.float64, count=len(self.pending)))
            self.pending.clear()

    def result(self, duration: float, price_per_core_hour: float = 0.0) -> Metrics:
        """The metrics so far, rates over ``duration`` seconds."""
        self.flush()
        h = self.hist
        n_batches = sum(self.batches.values())
        return Metrics(
            requests=self.arrivals,
            completed=self.done,
            met=self.met,
            dropped=self.n_dropped,
            duration=duration,
            attainment=self.met / self.arrivals if self.arrivals else 1.0,
            goodput=self.met / duration if duration > 0 else 0.0,
            throughput=self.done / duration if duration > 0 else 0.0,
            latency_mean=h.mean,
            latency_p50=h.quantile(0.5),
            latency_p95=h.quantile(0.95),
            latency_p99=h.quantile(0.99),
            latency_max=h.max,
            drops_by_reason=dict(sorted(self.drops.items())),
            batch_sizes=dict(sorted(self.batches.items())),
            mean_batch=sum(k * v for k, v in self.batches.items()) / n_batches if n_batches else 0.0,
            core_seconds=self.core_seconds,
            instance_seconds=self.instance_seconds,
            cost=self.core_seconds * price_per_core_hour / 3600.0,
            makespan=self.last_end,
        )


def merged_histogram(collectors: Iterable[MetricsCollector]) -> LatencyHistogram:
    """One histogram holding every collector's latencies."""
    h = LatencyHistogram()
    for c in collectors:
        c.flush()
        h.merge(c.hist)
    return h


def combine(parts: Mapping[str, tuple[MetricsCollector, float]], duration: float) -> Metrics:
    """Total metrics over several models' collectors (each with its price per core-hour);
    ``per_model`` holds each one's own metrics when there is more than one."""
    total = MetricsCollector()
    cost = 0.0
    per: dict[str, Metrics] = {}
    for name, (c, price) in parts.items():
        c.flush()
        m = c.result(duration, price)
        per[name] = m
        cost += m.cost
        total.hist.merge(c.hist)
        total.arrivals += c.arrivals
        total.done += c.done
        total.met += c.met
        total.lat_sum += c.lat_sum
        total.n_dropped += c.n_dropped
        for k, v in c.drops.items():
            total.drops[k] = total.drops.get(k, 0) + v
        for b, v in c.batches.items():
            total.batches[b] = total.batches.get(b, 0) + v
        total.core_seconds += c.core_seconds
        total.instance_seconds += c.instance_seconds
        total.last_end = max(total.last_end, c.last_end)
    m = total.result(duration)
    extra: dict[str, Any] = {"cost": cost}
    if len(per) > 1:
        extra["per_model"] = per
    return Metrics(**{**{f: getattr(m, f) for f in m.__dataclass_fields__}, **extra})


__all__ = ["LatencyHistogram", "Metrics", "MetricsCollector", "combine", "merged_histogram"]
