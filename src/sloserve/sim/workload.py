"""Workloads: request arrivals as numpy arrays, their generators, trace replay and SLO assignment.

A :class:`Workload` holds one array per request attribute (not ``Request`` objects), so a run of
millions of requests stays small; the simulator makes each ``Request`` only when it arrives. For
runs too long to hold even the arrays, :class:`StreamedWorkload` yields the same data in chunks.

Generators (all seeded, all return arrivals in ``[0, duration)`` with no deadline):
:func:`poisson`, :func:`gamma` (bursty, CV knob), :func:`mmpp_on_off`, :func:`piecewise`,
:func:`diurnal`, :func:`from_trace_csv` (timestamp CSVs, time or rate scaling), :func:`from_counts`
(per-second counts), :func:`stream_poisson` (chunked, for very long runs).

SLO assignment returns a new workload with deadlines: :func:`with_slo` (fixed),
:func:`with_class_slos` (per priority class or model), :func:`with_network_slo` (Sponge's dynamic
SLO: ``deadline = arrival + SLO - payload_bytes / bandwidth(t)`` from a :class:`NetworkDelayModel`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sloserve.core.config import ConfigError

_EMPTY_F = np.zeros(0, dtype=np.float64)
CHUNK = 1 << 16
"""Requests per chunk when generating or streaming."""


@dataclass(frozen=True, eq=False)
class Workload:
    """Requests of one run, one array per attribute, sorted by arrival.

    Build it with a generator below rather than by hand; the constructor validates lengths, order
    and values and fills defaults (no deadline, priority 0, 0 bytes, model 0).
    """

    arrivals: np.ndarray
    """Arrival times in seconds (float64, sorted, >= 0)."""
    deadlines: np.ndarray = None  # type: ignore[assignment]  # None: the default below
    """Absolute deadlines in seconds (float64; ``inf`` = no SLO). Default: all ``inf``."""
    priorities: np.ndarray = None  # type: ignore[assignment]  # None: the default below
    """Triton priority per request (int; 0 = model default, 1 = highest). Default: all 0."""
    payload_bytes: np.ndarray = None  # type: ignore[assignment]  # None: the default below
    """Request size in bytes (int64). Default: all 0."""
    models: np.ndarray | None = None
    """Index of the model (position in the list given to ``simulate``) per request; None = all 0."""
    duration: float = -1.0
    """End of the arrival window (>= last arrival); rates are per this span. Default: last arrival."""
    description: str = ""
    """How it was made (generator, parameters, scaling, seed): reports print it."""

    def __post_init__(self) -> None:
        a = np.ascontiguousarray(self.arrivals, dtype=np.float64)
        n = len(a)
        if a.ndim != 1:
            raise ValueError("workload: arrivals must be a 1-d array")
        if n and (not np.all(np.isfinite(a)) or a[0] < 0):
            raise ValueError("workload: arrivals must be finite and >= 0")
        if n > 1 and np.any(np.diff(a) < 0):
            raise ValueError("workload: arrivals must be sorted")
        object.__setattr__(self, "arrivals", a)

        def fill(name: str, value: np.ndarray | None, default: Any, dtype: Any) -> None:
            arr = np.full(n, default, dtype=dtype) if value is None else np.ascontiguousarray(value, dtype)
            if arr.shape != (n,):
                raise ValueError(f"workload: {name} has {arr.shape[0]} entries, arrivals has {n}")
            object.__setattr__(self, name, arr)

        fill("deadlines", self.deadlines, np.inf, np.float64)
        fill("priorities", self.priorities, 0, np.int64)
        fill("payload_bytes", self.payload_bytes, 0, np.int64)
        if self.models is not None:
            fill("models", self.models, 0, np.int64)
            if n and self.models.min() < 0:
                raise ValueError("workload: model indices must be >= 0")
        if n and np.any(np.isnan(self.deadlines)):
            raise ValueError("workload: deadlines must not be NaN")
        if n and np.any(self.payload_bytes < 0):
            raise ValueError("workload: payload_bytes must be >= 0")
        last = float(a[-1]) if n else 0.0
        object.__setattr__(self, "duration", float(self.duration))
        if self.duration < 0:
            object.__setattr__(self, "duration", last)
        elif self.duration < last:
            raise ValueError(f"workload: duration {self.duration} ends before the last arrival {last}")

    @property
    def deadline_array(self) -> np.ndarray:
        """Deadlines (same as :attr:`deadlines`; kept for symmetry with streamed chunks)."""
        return self.deadlines

    def __len__(self) -> int:
        return len(self.arrivals)

    @property
    def count(self) -> int:
        """Number of requests."""
        return len(self.arrivals)

    @property
    def mean_rate(self) -> float:
        """Requests per second over :attr:`duration`."""
        return len(self) / self.duration if self.duration > 0 else 0.0

    @property
    def slos(self) -> np.ndarray:
        """Per-request latency budget ``deadline - arrival`` (``inf`` without SLO)."""
        out: np.ndarray = self.deadline_array - self.arrivals
        return out

    def chunks(self, size: int = CHUNK) -> Iterator[Workload]:
        """The workload in consecutive slices of ``size`` requests (views, no copies)."""
        for lo in range(0, len(self), size):
            yield self[lo : lo + size]

    def __getitem__(self, s: slice) -> Workload:
        """Requests ``s`` (a slice) as a workload with the same duration."""
        if not isinstance(s, slice):
            raise TypeError("index a workload with a slice")
        return Workload(
            self.arrivals[s],
            self.deadline_array[s],
            self.priorities[s],
            self.payload_bytes[s],
            None if self.models is None else self.models[s],
            duration=self.duration,
            description=self.description,
        )

    def replace(self, **changes: Any) -> Workload:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def scaled(self, time_scale: float) -> Workload:
        """Stretch time by ``time_scale`` (> 1 slows the rate); SLOs (deadline - arrival) are kept."""
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        slos = self.slos
        arr = self.arrivals * time_scale
        return self.replace(
            arrivals=arr,
            deadlines=arr + slos,
            duration=self.duration * time_scale,
            description=f"{self.description} time x{time_scale:g}".strip(),
        )

    def window(self, start: float, end: float) -> Workload:
        """The requests arriving in ``[start, end)``, shifted so that ``start`` becomes 0."""
        lo, hi = np.searchsorted(self.arrivals, [start, end], side="left")
        arr = self.arrivals[lo:hi] - start
        return Workload(
            arr,
            self.deadline_array[lo:hi] - start,
            self.priorities[lo:hi],
            self.payload_bytes[lo:hi],
            None if self.models is None else self.models[lo:hi],
            duration=end - start,
            description=f"{self.description} window [{start:g}, {end:g})".strip(),
        )

    def replayed_at(self, rate: float, duration: float, seed: int = 0) -> Workload:
        """A trace's arrivals replayed at mean ``rate`` for about ``duration`` seconds: ``rate·duration``
        consecutive requests (all of them if the trace has fewer) from a seed-dependent offset, their
        times scaled so that the window's own mean rate is ``rate`` (its bursts keep their shape,
        compressed or stretched). Scaling the whole trace and cutting its first ``duration`` seconds
        instead would send that opening's rate, not ``rate``. The window keeps its requests'
        payload sizes, priorities and models; no deadlines."""
        _check_positive(rate=rate, duration=duration)
        if len(self) == 0:
            raise ValueError("the trace has no requests")
        n = min(len(self), max(2, round(rate * duration)))
        start = (seed * 7919) % (len(self) - n + 1)
        times = self.arrivals[start : start + n] - self.arrivals[start]
        span = float(times[-1]) if len(times) > 1 and times[-1] > 0 else 1.0
        scaled = times * (len(times) / span) / rate
        rows = slice(start, start + n)
        return Workload(
            scaled,
            priorities=self.priorities[rows],
            payload_bytes=self.payload_bytes[rows],
            models=None if self.models is None else self.models[rows],
            duration=float(scaled[-1]) + 1.0 / rate,
            description=f"{self.description} requests [{start}, {start + n}) at {rate:g}/s".strip(),
        )


@dataclass(frozen=True, eq=False)
class StreamedWorkload:
    """A workload produced chunk by chunk, for runs too long to hold in memory.

    ``make_chunks`` is called once per run and must yield :class:`Workload` chunks in arrival
    order (each chunk's own ``duration`` is ignored); the same call must give the same chunks.
    """

    make_chunks: Callable[[], Iterator[Workload]]
    duration: float
    """End of the arrival window."""
    description: str = ""
    expected_count: int | None = None
    """Number of requests, when known in advance (progress bars use it)."""

    def chunks(self, size: int = CHUNK) -> Iterator[Workload]:
        """The chunks (``size`` is advisory: generators choose their own)."""
        return self.make_chunks()


WorkloadLike = Workload | StreamedWorkload
"""What ``simulate`` accepts."""


# ----------------------------------------------------------------------------------------------
# generators


def _check_positive(**values: float) -> None:
    for name, v in values.items():
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")


def _renewal(
    rng: np.random.Generator, duration: float, draw: Callable[[int], np.ndarray], mean_gap: float
) -> np.ndarray:
    """Arrival times in [0, duration) of a renewal process with inter-arrival sampler ``draw``."""
    parts: list[np.ndarray] = []
    t = 0.0
    guess = max(16, int(duration / mean_gap * 1.05) + 16)
    while True:
        gaps = draw(min(guess, 1 << 22))
        times = t + np.cumsum(gaps)
        if times[-1] >= duration:
            parts.append(times[times < duration])
            break
        parts.append(times)
        t = float(times[-1])
        guess = max(16, int((duration - t) / mean_gap * 1.05) + 16)
    return np.concatenate(parts) if parts else _EMPTY_F


def poisson(rate: float, duration: float, seed: int = 0) -> Workload:
    """Poisson arrivals at ``rate`` req/s for ``duration`` seconds."""
    _check_positive(rate=rate, duration=duration)
    rng = np.random.default_rng(seed)
    arr = _renewal(rng, duration, lambda n: rng.exponential(1.0 / rate, n), 1.0 / rate)
    return Workload(arr, duration=duration, description=f"poisson rate={rate:g}/s seed={seed}")


def gamma(rate: float, cv: float, duration: float, seed: int = 0, *, stationary: bool = False) -> Workload:
    """Renewal arrivals with Gamma inter-arrival times: mean ``1/rate``, coefficient of variation ``cv``.

    ``cv = 1`` is Poisson; larger is burstier, smaller is more regular. The process starts as one
    whose last arrival was at 0, which adds ``(cv² - 1) / 2`` arrivals on average at the start (4
    at cv 3, 500,000 at cv 1000). ``stationary``: it starts as if it had been running for ever (the
    first arrival after the residual of a length-biased gap), so the mean count is ``rate·duration``.
    """
    _check_positive(rate=rate, cv=cv, duration=duration)
    rng = np.random.default_rng(seed)
    shape = 1.0 / (cv * cv)
    scale = 1.0 / (rate * shape)

    def gaps(n: int) -> np.ndarray:
        return rng.gamma(shape, scale, n)

    if not stationary:
        arr = _renewal(rng, duration, gaps, 1.0 / rate)
    else:
        first = rng.uniform() * rng.gamma(shape + 1.0, scale)  # a length-biased gamma gap is Γ(k+1)
        later = _renewal(rng, duration - first, gaps, 1.0 / rate) if first < duration else _EMPTY_F
        arr = first + np.concatenate([[0.0], later]) if first < duration else _EMPTY_F
    kind = " stationary" if stationary else ""
    return Workload(arr, duration=duration, description=f"gamma{kind} rate={rate:g}/s cv={cv:g} seed={seed}")


def piecewise(
    rates: Sequence[float] | np.ndarray,
    segment: float | Sequence[float] | np.ndarray = 1.0,
    seed: int = 0,
    *,
    _desc: str = "",
) -> Workload:
    """Poisson arrivals whose rate is ``rates[i]`` during segment ``i``.

    ``segment`` is one length for all segments or one length per segment (seconds).
    """
    r = np.asarray(rates, dtype=np.float64)
    if r.ndim != 1 or len(r) == 0:
        raise ValueError("rates must be a non-empty list of numbers")
    if np.any(~np.isfinite(r)) or np.any(r < 0):
        raise ValueError("rates must be finite and >= 0")
    lengths = np.broadcast_to(np.asarray(segment, dtype=np.float64), r.shape)
    if np.any(~np.isfinite(lengths)) or np.any(lengths <= 0):
        raise ValueError("segment lengths must be finite and > 0")
    starts = np.concatenate([[0.0], np.cumsum(lengths)])
    rng = np.random.default_rng(seed)
    counts = rng.poisson(r * lengths)
    parts = [np.sort(rng.uniform(starts[i], starts[i + 1], c)) for i, c in enumerate(counts)]
    arr = np.concatenate(parts) if parts else _EMPTY_F
    desc = _desc or f"piecewise {len(r)} segments mean={float(counts.sum() / starts[-1]):g}/s seed={seed}"
    return Workload(arr, duration=float(starts[-1]), description=desc)


def diurnal(
    mean_rate: float,
    amplitude: float,
    period: float,
    duration: float,
    seed: int = 0,
    *,
    resolution: float = 1.0,
    phase: float = 0.0,
) -> Workload:
    """Poisson arrivals with rate ``mean·(1 + amplitude·sin(2π(t/period) + phase))``, piecewise
    constant over ``resolution``-second steps. ``0 <= amplitude <= 1``."""
    _check_positive(mean_rate=mean_rate, period=period, duration=duration, resolution=resolution)
    if not 0 <= amplitude <= 1:
        raise ValueError(f"amplitude must lie in [0, 1], got {amplitude}")
    n = max(1, math.ceil(duration / resolution))
    mids = (np.arange(n) + 0.5) * resolution
    rates = mean_rate * (1 + amplitude * np.sin(2 * np.pi * mids / period + phase))
    lengths = np.full(n, resolution)
    lengths[-1] = duration - resolution * (n - 1)
    desc = f"diurnal mean={mean_rate:g}/s amp={amplitude:g} period={period:g}s seed={seed}"
    return piecewise(rates, lengths, seed, _desc=desc)


def mmpp_on_off(
    rate_on: float,
    rate_off: float,
    mean_on: float,
    mean_off: float,
    duration: float,
    seed: int = 0,
) -> Workload:
    """Two-state Markov-modulated Poisson process: ``rate_on`` during ON periods, ``rate_off``
    (may be 0) during OFF periods; period lengths are exponential with means ``mean_on``/``mean_off``.
    Starts in the ON state."""
    _check_positive(rate_on=rate_on, mean_on=mean_on, mean_off=mean_off, duration=duration)
    if not (math.isfinite(rate_off) and rate_off >= 0):
        raise ValueError(f"rate_off must be finite and >= 0, got {rate_off}")
    rng = np.random.default_rng(seed)
    rates: list[float] = []
    lengths: list[float] = []
    t, on = 0.0, True
    while t < duration:
        length = min(float(rng.exponential(mean_on if on else mean_off)), duration - t)
        if length > 0:
            rates.append(rate_on if on else rate_off)
            lengths.append(length)
        t += length
        on = not on
    desc = (
        f"mmpp on/off rate_on={rate_on:g}/s rate_off={rate_off:g}/s "
        f"mean_on={mean_on:g}s mean_off={mean_off:g}s seed={seed}"
    )
    return piecewise(rates, lengths, int(rng.integers(2**31)), _desc=desc)


def from_counts(
    counts: Sequence[float] | np.ndarray,
    seed: int = 0,
    *,
    interval: float = 1.0,
    rate_scale: float = 1.0,
    time_scale: float = 1.0,
) -> Workload:
    """Arrivals from per-interval request counts (e.g. requests per second), spread uniformly at
    random within each interval. ``rate_scale`` multiplies the counts (rounded stochastically);
    ``time_scale`` stretches time."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or len(c) == 0:
        raise ValueError("counts must be a non-empty 1-d list of numbers")
    if np.any(~np.isfinite(c)) or np.any(c < 0):
        raise ValueError("counts must be finite and >= 0")
    _check_positive(interval=interval, rate_scale=rate_scale, time_scale=time_scale)
    rng = np.random.default_rng(seed)
    scaled = c * rate_scale
    whole = np.floor(scaled)
    n = (whole + (rng.random(len(c)) < scaled - whole)).astype(np.int64)
    step = interval * time_scale
    starts = np.repeat(np.arange(len(c)) * step, n)
    arr = np.sort(starts + rng.random(int(n.sum())) * step)
    desc = (
        f"counts {len(c)} x {interval:g}s rate x{rate_scale:g} time x{time_scale:g} "
        f"mean={float(n.sum()) / (len(c) * step):g}/s seed={seed}"
    )
    return Workload(arr, duration=len(c) * step, description=desc)


def _read_column(path: Path, column: str) -> list[tuple[int, str]]:
    """(line number, cell) of ``column`` in a CSV file, skipping ``#`` comment lines."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # a byte-order mark is no part of the header
            lines = [(i, line) for i, line in enumerate(f, start=1) if line.strip() and line[0] != "#"]
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    if not lines:
        raise ConfigError(f"{path}: empty file (expected a header with column {column!r})")
    rows = csv.reader(line for _, line in lines)
    header = [h.strip() for h in next(rows)]
    if column not in header:
        raise ConfigError(f"{path}: no column {column!r}; columns are {header}")
    k = header.index(column)
    out = []
    for (lineno, _), row in zip(lines[1:], rows, strict=True):
        if len(row) != len(header):
            raise ConfigError(f"{path}: line {lineno}: {len(row)} cells, but the header names {len(header)}")
        out.append((lineno, row[k].strip()))
    if not out:
        raise ConfigError(f"{path}: no data rows")
    return out


def counts_from_csv(path: str | Path, column: str = "count") -> np.ndarray:
    """Per-interval request counts from a CSV column (for :func:`from_counts`); errors name the
    file, line and column."""
    p = Path(path)
    cells = _read_column(p, column)
    out = np.empty(len(cells))
    for i, (lineno, cell) in enumerate(cells):
        try:
            out[i] = float(cell)
        except ValueError:
            raise ConfigError(f"{p}: line {lineno}: column {column!r}: {cell!r} is not a number") from None
        if not (math.isfinite(out[i]) and out[i] >= 0):
            raise ConfigError(f"{p}: line {lineno}: column {column!r}: counts must be finite and >= 0")
    return out


def _parse_times(path: Path, cells: list[tuple[int, str]], column: str) -> np.ndarray:
    """Seconds from numbers or ISO-like timestamps (``2023-11-16 18:17:03.97``)."""
    values = [c for _, c in cells]
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        pass
    try:
        stamps = np.array(values, dtype="datetime64[ns]")
    except ValueError:
        for lineno, cell in cells:
            try:
                np.datetime64(cell, "ns")
            except ValueError:
                raise ConfigError(
                    f"{path}: line {lineno}: column {column!r}: cannot parse {cell!r} "
                    "as seconds or as a timestamp"
                ) from None
        raise
    if np.any(np.isnat(stamps)):
        lineno = cells[int(np.argmax(np.isnat(stamps)))][0]
        raise ConfigError(f"{path}: line {lineno}: column {column!r}: empty timestamp")
    seconds: np.ndarray = (stamps - stamps.min()).astype(np.int64) / 1e9
    return seconds


def from_trace_csv(
    path: str | Path,
    *,
    column: str = "TIMESTAMP",
    time_scale: float | None = None,
    target_rate: float | None = None,
    start: float = 0.0,
    duration: float | None = None,
    payload_column: str | None = None,
    bytes_per_unit: float = 1.0,
) -> Workload:
    """Replay the arrival times of a CSV trace.

    ``column`` holds timestamps (ISO-like date-times or seconds); the first becomes t = 0.
    ``start``/``duration`` cut a window of the original trace (seconds). Then the trace is scaled
    in time: either by ``time_scale`` (> 1 slows it down), or so that its mean rate becomes
    ``target_rate`` (give at most one). ``payload_column`` (e.g. ``ContextTokens``) times
    ``bytes_per_unit`` gives per-request payload sizes. Errors name the file, line and column.
    """
    p = Path(path)
    if time_scale is not None and target_rate is not None:
        raise ValueError("give time_scale or target_rate, not both")
    if time_scale is not None:
        _check_positive(time_scale=time_scale)
    if target_rate is not None:
        _check_positive(target_rate=target_rate)
    cells = _read_column(p, column)
    t = _parse_times(p, cells, column)
    if np.any(~np.isfinite(t)):
        raise ConfigError(f"{p}: column {column!r}: timestamps must be finite numbers")
    payload = None
    if payload_column is not None:
        pcells = _read_column(p, payload_column)
        try:
            payload = np.array([c for _, c in pcells], dtype=np.float64) * bytes_per_unit
        except ValueError:
            raise ConfigError(f"{p}: column {payload_column!r}: values must be numbers") from None
        if np.any(~np.isfinite(payload)) or np.any(payload < 0):
            raise ConfigError(f"{p}: column {payload_column!r}: values must be finite and >= 0")
    order = np.argsort(t, kind="stable")
    t = t[order] - t[order[0]]
    if payload is not None:
        payload = payload[order]
    end = float(t[-1]) if duration is None else start + duration
    keep = (t >= start) & (t < end) if duration is not None else t >= start
    t = t[keep] - start
    if payload is not None:
        payload = payload[keep]
    if len(t) == 0:
        raise ConfigError(f"{p}: no requests in the window start={start} duration={duration}")
    if duration is None and float(t[-1]) < 1e-6:
        raise ConfigError(
            f"{p}: column {column!r}: the trace spans no time ({len(t)} request(s) at one instant): "
            "it has no rate to replay or scale"
        )
    span = (end - start) if duration is not None else max(float(t[-1]), 1e-9)
    scale = 1.0
    if time_scale is not None:
        scale = time_scale
    elif target_rate is not None:
        scale = (len(t) / span) / target_rate
    desc = f"trace {p.name} ({len(t)} requests) time x{scale:g}"
    if target_rate is not None:
        desc += f" (target rate {target_rate:g}/s)"
    return Workload(
        t * scale,
        payload_bytes=np.zeros(len(t), np.int64) if payload is None else np.round(payload).astype(np.int64),
        duration=span * scale,
        description=desc,
    )


def stream_poisson(
    rate: float, duration: float, seed: int = 0, *, slo: float = math.inf, chunk: int = CHUNK
) -> StreamedWorkload:
    """Poisson arrivals generated ``chunk`` at a time (memory stays flat however long the run).

    Every request gets the fixed ``slo``. Not the same sample as :func:`poisson` with that seed.
    """
    _check_positive(rate=rate, duration=duration, chunk=chunk)

    def chunks() -> Iterator[Workload]:
        rng = np.random.default_rng(seed)
        t = 0.0
        while t < duration:
            times = t + np.cumsum(rng.exponential(1.0 / rate, chunk))
            t = float(times[-1])
            if t >= duration:
                times = times[times < duration]
            if len(times):
                yield Workload(times, times + slo, duration=duration)

    return StreamedWorkload(
        chunks,
        duration,
        f"poisson (streamed) rate={rate:g}/s slo={slo:g}s seed={seed}",
        expected_count=int(rate * duration),
    )


def merge(workloads: Sequence[Workload]) -> Workload:
    """Interleave workloads by arrival time; request ``i`` of ``workloads[k]`` gets model index ``k``
    (unless it already has model indices, which are kept)."""
    if not workloads:
        raise ValueError("merge needs at least one workload")
    models = [
        w.models if w.models is not None else np.full(len(w), k, dtype=np.int64)
        for k, w in enumerate(workloads)
    ]
    arr = np.concatenate([w.arrivals for w in workloads])
    order = np.argsort(arr, kind="stable")
    return Workload(
        arr[order],
        np.concatenate([w.deadline_array for w in workloads])[order],
        np.concatenate([w.priorities for w in workloads])[order],
        np.concatenate([w.payload_bytes for w in workloads])[order],
        np.concatenate(models)[order],
        duration=max(w.duration for w in workloads),
        description=" + ".join(w.description for w in workloads),
    )


# ----------------------------------------------------------------------------------------------
# request attributes and SLO assignment


def with_slo(workload: Workload, slo: float) -> Workload:
    """Every request gets the same latency objective ``slo`` seconds: ``deadline = arrival + slo``."""
    _check_positive(slo=slo)
    return workload.replace(
        deadlines=workload.arrivals + slo, description=f"{workload.description} slo={slo * 1e3:g}ms".strip()
    )


def with_classes(workload: Workload, shares: Sequence[float], seed: int = 0) -> Workload:
    """Assign priority classes 1..len(shares) at random with the given shares (normalised)."""
    s = np.asarray(shares, dtype=np.float64)
    if s.ndim != 1 or len(s) == 0 or np.any(s < 0) or s.sum() <= 0:
        raise ValueError(f"shares must be non-negative with a positive sum, got {list(shares)}")
    rng = np.random.default_rng(seed)
    classes = rng.choice(np.arange(1, len(s) + 1), size=len(workload), p=s / s.sum())
    return workload.replace(priorities=classes)


def with_class_slos(workload: Workload, slos: Mapping[int, float], *, by: str = "priority") -> Workload:
    """Per-class objectives: ``slos[c]`` seconds for requests whose priority (``by="priority"``) or
    model index (``by="model"``) is ``c``. Every class present must have an entry."""
    if by == "priority":
        keys = workload.priorities
    elif by == "model":
        keys = workload.models if workload.models is not None else np.zeros(len(workload), np.int64)
    else:
        raise ValueError(f"by must be 'priority' or 'model', got {by!r}")
    assert keys is not None
    for v in slos.values():
        _check_positive(slo=v)
    present = {int(k) for k in np.unique(keys)}
    missing = sorted(present - set(slos))
    if missing:
        raise ValueError(f"no SLO for {by} class(es) {missing}; given: {sorted(slos)}")
    budget = np.zeros(len(workload))
    for c, v in slos.items():
        budget[keys == c] = v
    desc = f"{workload.description} slo by {by}: " + ", ".join(
        f"{c}={v * 1e3:g}ms" for c, v in sorted(slos.items())
    )
    return workload.replace(deadlines=workload.arrivals + budget, description=desc)


def with_payload(workload: Workload, mean_bytes: float, cv: float = 0.0, seed: int = 0) -> Workload:
    """Payload sizes: constant ``mean_bytes`` (``cv = 0``) or lognormal with that mean and CV."""
    if not (math.isfinite(mean_bytes) and mean_bytes >= 0) or not (math.isfinite(cv) and cv >= 0):
        raise ValueError(f"mean_bytes and cv must be finite and >= 0, got {mean_bytes}, {cv}")
    if cv == 0:
        sizes = np.full(len(workload), round(mean_bytes), dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        sigma2 = math.log1p(cv * cv)
        draw = rng.lognormal(math.log(max(mean_bytes, 1e-300)) - sigma2 / 2, math.sqrt(sigma2), len(workload))
        sizes = np.round(draw).astype(np.int64)
    return workload.replace(payload_bytes=sizes)


@dataclass(frozen=True, eq=False)
class NetworkDelayModel:
    """One-way network delay of a request: ``base_delay + payload_bytes / bandwidth(t)``.

    ``bandwidth`` is a series in bytes per second, one value per ``interval`` seconds (a 4G trace,
    say); past its end it repeats. Sponge's dynamic SLO is what is left of the SLO after this delay.
    """

    bandwidth: np.ndarray
    """Bytes per second, one value per ``interval`` (all > 0)."""
    interval: float = 1.0
    """Seconds each bandwidth value lasts."""
    base_delay: float = 0.0
    """Propagation delay added to every request (seconds)."""
    _bw: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        bw = np.asarray(self.bandwidth, dtype=np.float64)
        if bw.ndim != 1 or len(bw) == 0:
            raise ValueError("bandwidth must be a non-empty 1-d series")
        if np.any(~np.isfinite(bw)) or np.any(bw <= 0):
            raise ValueError("bandwidth values must be finite and > 0 (bytes per second)")
        _check_positive(interval=self.interval)
        if not (math.isfinite(self.base_delay) and self.base_delay >= 0):
            raise ValueError(f"base_delay must be finite and >= 0, got {self.base_delay}")
        object.__setattr__(self, "_bw", bw)

    def bandwidth_at(self, t: np.ndarray | float) -> np.ndarray:
        """Bandwidth (bytes/s) at time(s) ``t``."""
        idx = (np.floor(np.asarray(t, dtype=np.float64) / self.interval).astype(np.int64)) % len(self._bw)
        out: np.ndarray = self._bw[idx]
        return out

    def delay(self, t: np.ndarray | float, payload_bytes: np.ndarray | float) -> np.ndarray:
        """Delay (seconds) of requests of ``payload_bytes`` sent at ``t``."""
        out: np.ndarray = self.base_delay + np.asarray(payload_bytes, dtype=np.float64) / self.bandwidth_at(t)
        return out

    @classmethod
    def synthetic(
        cls, mean_bps: float, cv: float, seconds: int, seed: int = 0, *, correlation: float = 0.8
    ) -> NetworkDelayModel:
        """A mobile-like bandwidth series: lognormal with mean ``mean_bps``, CV ``cv``, and
        lag-1 correlation ``correlation`` between consecutive seconds (AR(1) in log space)."""
        _check_positive(mean_bps=mean_bps, seconds=seconds)
        if not (cv >= 0 and 0 <= correlation < 1):
            raise ValueError("cv must be >= 0 and correlation in [0, 1)")
        rng = np.random.default_rng(seed)
        sigma2 = math.log1p(cv * cv)
        z = np.empty(int(seconds))
        z[0] = rng.standard_normal()
        eps = rng.standard_normal(int(seconds)) * math.sqrt(1 - correlation**2)
        for i in range(1, len(z)):
            z[i] = correlation * z[i - 1] + eps[i]
        bw = np.exp(math.log(mean_bps) - sigma2 / 2 + math.sqrt(sigma2) * z)
        return cls(bw)

    @classmethod
    def from_csv(
        cls, path: str | Path, column: str, *, interval: float = 1.0, scale: float = 1.0
    ) -> NetworkDelayModel:
        """Bandwidth series from a CSV column (values times ``scale`` = bytes per second)."""
        p = Path(path)
        cells = _read_column(p, column)
        try:
            bw = np.array([c for _, c in cells], dtype=np.float64) * scale
        except ValueError:
            raise ConfigError(f"{p}: column {column!r}: values must be numbers") from None
        bad = np.flatnonzero(~np.isfinite(bw) | (bw <= 0))
        if len(bad):
            raise ConfigError(f"{p}: line {cells[int(bad[0])][0]}: column {column!r}: bandwidth must be > 0")
        return cls(bw, interval=interval)


def with_network_slo(workload: Workload, slo: float, network: NetworkDelayModel) -> Workload:
    """Sponge's dynamic SLO: the server gets ``slo - network delay`` of budget per request,
    ``deadline = arrival + slo - base_delay - payload_bytes / bandwidth(arrival)``.

    Arrival times are taken as the times requests reach the server. A budget can come out <= 0:
    such a request is already late when it arrives.
    """
    _check_positive(slo=slo)
    d = network.delay(workload.arrivals, workload.payload_bytes)
    return workload.replace(
        deadlines=workload.arrivals + slo - d,
        description=f"{workload.description} slo={slo * 1e3:g}ms minus network delay".strip(),
    )


__all__ = [
    "CHUNK",
    "NetworkDelayModel",
    "StreamedWorkload",
    "Workload",
    "WorkloadLike",
    "counts_from_csv",
    "diurnal",
    "from_counts",
    "from_trace_csv",
    "gamma",
    "merge",
    "mmpp_on_off",
    "piecewise",
    "poisson",
    "stream_poisson",
    "with_class_slos",
    "with_classes",
    "with_network_slo",
    "with_payload",
    "with_slo",
]
