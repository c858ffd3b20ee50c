"""User experiments for ``sloserve simulate CONFIG.yaml``: the config format, validation and runner.

A config names models (profile + resources), the policies to compare, a workload and optional
load sweep and capacity search. Every field is checked by pydantic through
:mod:`sloserve.core.config`, so an error names the file and the field. Example (every field)::

    name: my-experiment          # a plain file name; output goes to results/<name>/ unless `out`
    description: ""              # free text, copied into results.json
    seed: 0                      # seed of the main run (noise, workload); --quick runs all with it
    seeds: [0, 1, 2]             # seeds of the load sweep and capacity search (default: [seed])
    timeline_interval_s: 1.0     # seconds per timeline row: 0.001 to 3600, widened to keep <= 10,000 rows
    profiles: profiles.yaml      # optional profile file (path relative to this file)
    hardware:                    # optional prices; cost = core-seconds x price / cores / 3600
      - {name: cpu, cores: 16, price_per_hour: 0.68}
    models:
      - name: resnet
        profile: resnet          # a model in `profiles`, or an inline profile-file entry (a batch <= 1 h):
        # profile: {kind: affine, alpha_ms: 6, beta_ms: 2, max_batch: 32}
        instances: 1             # 0 only with a scaler (nothing else would serve)
        cores: 1
        max_concurrency: 1
        noise_cv: 0.1            # service-time multiplier CV (at most 100); noise: lognormal | gamma
        tail_noise: {probability: 0.01, factor: 3}   # optional stragglers: factor 1 to 100
        actuation_delay_s: 0.0   # at most 3600 (an hour), as cold_start_s
        cold_start_s: 0.0
        shared_hardware: true    # instances share a machine: k concurrent batches slow by s(k)
        dynamic_slowdown: false  # true: a later batch slows the running ones too
        scaler: {name: sponge, params: {}}   # optional, by registry name
        slo_ms: 100              # this model's SLO (overrides the workload's slo_ms)
        rate_share: 1.0          # share of the workload when there are several models
    policies:                    # compared side by side; each model gets a fresh scheduler
      - {label: triton, scheduler: triton, params: {max_queue_delay_microseconds: 5000}}
      - {scheduler: ray}
    workload:
      kind: gamma                # poisson | gamma | mmpp | piecewise | diurnal | trace | counts
      rate: 300                  # req/s (poisson, gamma)
      cv: 2.0                    # gamma only: 0.001 to 100
      duration_s: 60
      slo_ms: 100                # fixed SLO; or instead slo_by_priority: {1: 50, 2: 200}, classes: [0.3, 0.7]
      network: null              # {mean_bps: 2.0e6, cv: 0.5} or {bandwidth_csv: f.csv, column: bps}
      payload_bytes: 0           # mean payload, only with `network`; payload_cv (<= 100): lognormal sizes
    loads: [0.5, 0.8, 1.0]       # optional rate multipliers: attainment-vs-load plot
    capacity: {target: 0.99, lo: 10, hi: 2000, tol: 0.02}   # optional capacity search
    # rates (capacity, lo, hi, the sweep's) are the workload's mean rate as configured (an MMPP's
    # time-weighted mean; a trace's target_rate, or without one the main seed's drawn rate)

Kinds and their fields: ``poisson`` (rate, duration_s), ``gamma`` (rate, cv, duration_s), ``mmpp``
(rate_on, rate_off, mean_on_s, mean_off_s, duration_s), ``piecewise`` (rates, segment_s),
``diurnal`` (rate, amplitude, period_s, duration_s), ``trace`` (path, column, time_scale or
target_rate, start_s, duration_s, payload_column, bytes_per_unit), ``counts`` (counts or path +
column, interval_s, rate_scale).

Limits (each refused naming the field): a run holds at least one and at most
:data:`MAX_REQUESTS_PER_RUN` planned requests (a gamma workload's start-up burst counted); CVs are
at most :data:`MAX_CV`; delays, cold starts and a batch's latency at most an hour; the timeline gets
at most :data:`MAX_TIMELINE_ROWS` rows over the arrival window (its interval widened when needed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from sloserve.core.config import ConfigError, Seed, StrictModel, load_model_file, validate
from sloserve.core.hardware import Hardware
from sloserve.core.profile_io import profiles_from_data
from sloserve.core.profiles import ModelProfile, ProfileSet
from sloserve.policies.params import MACHINE_LIMIT, MAX_SECONDS
from sloserve.sim import workload as wl
from sloserve.sim.cluster import ModelSetup, SimResult, TailNoise, simulate
from sloserve.sim.metrics import Metrics

MAX_REQUESTS_PER_RUN = 20_000_000
"""Most requests one simulated run may hold (about a minute with Triton's batcher, several with
the SLO-aware one; ``benchmarks/sim_throughput.py``)."""
MAX_CV = 100.0
"""Largest coefficient of variation of arrivals, noise, payloads or bandwidth (as ``sloserve
bench``): at cv 100 a gamma burst holds about 10,000 requests, beyond it millions."""
MIN_GAMMA_CV = 0.001
"""Most regular gamma arrivals (shape 10^6; below, the shape overflows)."""
MAX_TAIL_FACTOR = 100.0
"""Largest straggler slowdown (``tail_noise.factor``)."""
MIN_TIMELINE_INTERVAL_S = 0.001
"""Shortest timeline interval (a millisecond)."""
MAX_TIMELINE_ROWS = 10_000
"""Most timeline rows over a run's arrival window: a longer run gets a wider interval."""
MAX_BANDWIDTH_BPS = 1e12
"""Largest mean bandwidth of a synthetic network (a terabyte per second)."""
MAX_MMPP_SWITCHES = 1_000_000
"""Most ON/OFF periods an MMPP workload may plan per run."""

Pos = Annotated[float, Field(gt=0)]
NonNeg = Annotated[float, Field(ge=0)]
Cv = Annotated[float, Field(ge=0, le=MAX_CV)]
"""A coefficient of variation: 0 to :data:`MAX_CV`."""
Delay = Annotated[float, Field(ge=0, le=MAX_SECONDS)]
"""Seconds of a delay or cold start: 0 to an hour."""
Interval = Annotated[float, Field(ge=MIN_TIMELINE_INTERVAL_S, le=MAX_SECONDS)]
"""Seconds per step of a series: a millisecond to an hour."""


def plain_file_name(name: str) -> str:
    """``name`` if it can be a file or folder name of its own (no ``/``, ``\\`` or ``..``: the
    output lands in ``results/<name>/``, never elsewhere); ValueError otherwise."""
    if any(c in name for c in "/\\") or ".." in name or name.strip() in ("", "."):
        raise ValueError(f"{name!r} must be a plain file name (no '/', '\\' or '..')")
    return name


class HardwareSpec(StrictModel):
    name: str = Field(min_length=1)
    cores: int = Field(ge=1)
    price_per_hour: NonNeg


class NamedSpec(StrictModel):
    """A policy by registry name with parameters."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class PolicySpec(StrictModel):
    label: str | None = None
    """Column label in reports (default: the scheduler name)."""
    scheduler: str = Field(min_length=1)
    """Registry name (``triton``, ``ray``, ``fixed``, ...) or ``package.module:factory``."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Factory parameters (Triton's / Ray Serve's names)."""


class TailNoiseSpec(StrictModel):
    probability: float = Field(ge=0, le=1)
    factor: float = Field(ge=1, le=MAX_TAIL_FACTOR)


class ModelSpec(StrictModel):
    name: str = Field(min_length=1)
    profile: str | dict[str, Any] | None = None
    """Model name in the ``profiles`` file (default: ``name``), or an inline profile entry."""
    hardware: str = "cpu"
    instances: int = Field(default=1, ge=0, le=MACHINE_LIMIT)
    cores: int = Field(default=1, ge=1, le=MACHINE_LIMIT)
    max_concurrency: int = Field(default=1, ge=1, le=MACHINE_LIMIT)
    noise_cv: Cv = 0.0
    noise: Literal["lognormal", "gamma"] = "lognormal"
    tail_noise: TailNoiseSpec | None = None
    actuation_delay_s: Delay = 0.0
    cold_start_s: Delay = 0.0
    shared_hardware: bool = True
    dynamic_slowdown: bool = False
    scaler: NamedSpec | None = None
    slo_ms: Pos | None = None
    rate_share: Pos = 1.0

    @model_validator(mode="after")
    def _served(self) -> ModelSpec:
        """With no instance and no scaler to add one, every request would be dropped."""
        if self.instances == 0 and self.scaler is None:
            raise ValueError("instances: 0 with no scaler: nothing would serve this model (give 1 or more)")
        return self


class NetworkSpec(StrictModel):
    """Bandwidth series for dynamic SLOs: synthetic (mean_bps, cv) or from a CSV column."""

    mean_bps: float | None = Field(default=None, ge=1, le=MAX_BANDWIDTH_BPS)
    """Mean bandwidth (bytes per second) of the synthetic series."""
    cv: Cv = 0.5
    bandwidth_csv: str | None = None
    column: str = "bandwidth"
    scale: Pos = 1.0
    interval_s: Interval = 1.0
    base_delay_ms: float = Field(default=0.0, ge=0, le=MAX_SECONDS * 1e3)

    @model_validator(mode="after")
    def _one_source(self) -> NetworkSpec:
        if (self.mean_bps is None) == (self.bandwidth_csv is None):
            raise ValueError("give exactly one of mean_bps (synthetic) or bandwidth_csv")
        return self


class _WorkloadBase(StrictModel):
    slo_ms: Pos | None = None
    slo_by_priority: dict[int, Pos] | None = None
    classes: list[NonNeg] | None = None
    """Shares of priority classes 1..n, assigned at random."""
    payload_bytes: float = Field(default=0.0, ge=0, le=2**40)
    """Mean request payload (bytes; at most 1 TiB): only with ``network``, whose delay it sets."""
    payload_cv: Cv = 0.0
    """CV of lognormal payload sizes around ``payload_bytes`` (0: all the same size)."""
    network: NetworkSpec | None = None

    @model_validator(mode="after")
    def _no_ignored_fields(self) -> _WorkloadBase:
        """Refuse fields that would change nothing (or be overridden) in this combination."""
        if self.slo_ms is not None and self.slo_by_priority is not None:
            raise ValueError("slo_ms, slo_by_priority: give one or the other, not both")
        if self.payload_cv > 0 and self.payload_bytes == 0:
            raise ValueError("payload_cv: needs payload_bytes (the mean size it varies around)")
        if self.network is None:
            given = [name for name in ("payload_bytes", "payload_cv") if getattr(self, name) > 0]
            if given:
                raise ValueError(
                    f"{', '.join(given)}: payloads only matter with `network` (their delay shortens the "
                    "SLO): add network or leave them out"
                )
        return self

    def planned(self) -> tuple[float, float] | None:
        """Mean rate (req/s) and seconds of the workload at load 1, when the config alone says
        (None for one read from a file): what bounds the requests of a run before it starts."""
        return None

    def nominal_rate(self) -> float | None:
        """The mean arrival rate (req/s) the config sets at load 1, whatever a seed draws (None when
        only the data says: a trace without ``target_rate``, counts): the rate capacities and load
        sweeps are reported in."""
        return None

    def startup_burst(self) -> float:
        """Requests a run holds beyond rate × seconds whatever the load (gamma's start-up burst)."""
        return 0.0

    def volume_fields(self) -> str:
        """The fields that set how many requests a run plans (error messages name them)."""
        return "workload.rate, workload.duration_s"


class PoissonSpec(_WorkloadBase):
    kind: Literal["poisson"]
    rate: Pos
    duration_s: Pos

    def planned(self) -> tuple[float, float] | None:
        return self.rate, self.duration_s

    def nominal_rate(self) -> float | None:
        return self.rate


class GammaSpec(_WorkloadBase):
    kind: Literal["gamma"]
    rate: Pos
    cv: float = Field(ge=MIN_GAMMA_CV, le=MAX_CV)
    """Coefficient of variation of the gaps: 1 is Poisson, above is burstier."""
    duration_s: Pos

    def planned(self) -> tuple[float, float] | None:
        return self.rate, self.duration_s

    def nominal_rate(self) -> float | None:
        return self.rate

    def startup_burst(self) -> float:
        """The (cv² − 1)/2 arrivals a gamma process begun with an arrival adds at its start."""
        return max(0.0, (self.cv * self.cv - 1.0) / 2.0)


class MmppSpec(_WorkloadBase):
    kind: Literal["mmpp"]
    rate_on: Pos
    rate_off: NonNeg
    mean_on_s: Pos
    mean_off_s: Pos
    duration_s: Pos

    @model_validator(mode="after")
    def _few_switches(self) -> MmppSpec:
        switches = 2 * self.duration_s / (self.mean_on_s + self.mean_off_s)
        if switches > MAX_MMPP_SWITCHES:
            raise ValueError(
                f"mean_on_s, mean_off_s: {switches:.3g} ON/OFF periods in duration_s {self.duration_s:g}; "
                f"at most {MAX_MMPP_SWITCHES:.0e}: lengthen the periods"
            )
        return self

    def planned(self) -> tuple[float, float] | None:
        return max(self.rate_on, self.rate_off), self.duration_s

    def nominal_rate(self) -> float | None:
        on, off = self.mean_on_s, self.mean_off_s
        return (self.rate_on * on + self.rate_off * off) / (on + off)

    def volume_fields(self) -> str:
        return "workload.rate_on, workload.rate_off, workload.duration_s"


class PiecewiseSpec(_WorkloadBase):
    kind: Literal["piecewise"]
    rates: list[NonNeg] = Field(min_length=1)
    segment_s: Pos = 1.0

    def planned(self) -> tuple[float, float] | None:
        return sum(self.rates) / len(self.rates), len(self.rates) * self.segment_s

    def nominal_rate(self) -> float | None:
        return sum(self.rates) / len(self.rates)

    def volume_fields(self) -> str:
        return "workload.rates, workload.segment_s"


class DiurnalSpec(_WorkloadBase):
    kind: Literal["diurnal"]
    rate: Pos
    amplitude: float = Field(ge=0, le=1)
    period_s: Pos
    duration_s: Pos

    def planned(self) -> tuple[float, float] | None:
        return self.rate, self.duration_s

    def nominal_rate(self) -> float | None:
        return self.rate


class TraceSpec(_WorkloadBase):
    kind: Literal["trace"]
    path: str
    column: str = "TIMESTAMP"
    time_scale: Pos | None = None
    target_rate: Pos | None = None
    start_s: NonNeg = 0.0
    duration_s: Pos | None = None
    payload_column: str | None = None
    bytes_per_unit: Pos = 1.0

    @model_validator(mode="after")
    def _one_scaling(self) -> TraceSpec:
        if self.time_scale is not None and self.target_rate is not None:
            raise ValueError("give time_scale or target_rate, not both")
        if self.payload_column is not None:
            if self.network is None:
                raise ValueError(
                    "payload_column: payloads only matter with `network` (their delay shortens the SLO): "
                    "add network or leave it out"
                )
            if self.payload_bytes > 0:
                raise ValueError("payload_column, payload_bytes: give one or the other, not both")
        return self

    def nominal_rate(self) -> float | None:
        return self.target_rate


class CountsSpec(_WorkloadBase):
    kind: Literal["counts"]
    counts: list[NonNeg] | None = None
    path: str | None = None
    column: str = "count"
    interval_s: Pos = 1.0
    rate_scale: Pos = 1.0

    @model_validator(mode="after")
    def _one_source(self) -> CountsSpec:
        if (self.counts is None) == (self.path is None):
            raise ValueError("give exactly one of counts (a list) or path (a CSV)")
        return self

    def planned(self) -> tuple[float, float] | None:
        if self.counts is None:
            return None
        return self.planned_from(self.counts)

    def planned_from(self, counts: Any) -> tuple[float, float]:
        """Mean rate and seconds of these counts (from the config or its CSV) at load 1."""
        seconds = len(counts) * self.interval_s
        return float(sum(counts)) * self.rate_scale / seconds, seconds

    def volume_fields(self) -> str:
        return "workload.counts, workload.rate_scale" if self.path is None else "workload.path"


WorkloadSpec = Annotated[
    PoissonSpec | GammaSpec | MmppSpec | PiecewiseSpec | DiurnalSpec | TraceSpec | CountsSpec,
    Field(discriminator="kind"),
]


class CapacitySpec(StrictModel):
    target: float = Field(default=0.99, gt=0, le=1)
    lo: Pos = 1.0
    hi: Pos = 1000.0
    tol: float = Field(default=0.02, gt=0, lt=1)

    @model_validator(mode="after")
    def _order(self) -> CapacitySpec:
        if self.lo >= self.hi:
            raise ValueError(f"lo ({self.lo}) must be below hi ({self.hi})")
        return self


class ExperimentSpec(StrictModel):
    """Top level of a ``sloserve simulate`` config file (see the module docstring)."""

    name: str = Field(default="experiment", min_length=1)
    description: str = ""
    seed: Seed = 0
    seeds: list[Seed] | None = Field(default=None, min_length=1)
    out: str | None = None
    profiles: str | None = None
    hardware: list[HardwareSpec] = Field(default_factory=list)
    models: list[ModelSpec] = Field(min_length=1)
    policies: list[PolicySpec] = Field(min_length=1)
    workload: WorkloadSpec
    loads: list[Pos] = Field(default_factory=list)
    capacity: CapacitySpec | None = None
    timeline_interval_s: Interval = 1.0
    """Seconds per timeline row (widened for a run longer than :data:`MAX_TIMELINE_ROWS` rows)."""

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        """The name becomes the default output folder ``results/<name>/``: no folders in it."""
        return plain_file_name(name)

    @model_validator(mode="after")
    def _unique(self) -> ExperimentSpec:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        labels = [p.label or p.scheduler for p in self.policies]
        if len(set(labels)) != len(labels):
            raise ValueError(f"policy labels must be unique (set `label`), got {labels}")
        return self

    @model_validator(mode="after")
    def _bounded(self) -> ExperimentSpec:
        """Refuse a run the simulator would not finish in reasonable time (or memory), or one
        with nothing to simulate."""
        planned = self.workload.planned()
        if planned is not None:
            check_run_size(self, *planned)
        return self


def check_run_size(spec: ExperimentSpec, rate: float, seconds: float) -> None:
    """ValueError naming the fields when a run of ``spec``'s workload (``rate`` req/s for
    ``seconds`` at load 1) plans fewer than one request at its lowest load, or more than
    :data:`MAX_REQUESTS_PER_RUN` at its highest (or at ``capacity.hi``)."""
    burst = spec.workload.startup_burst() * len(spec.models)  # every model gets its own stream
    low, peak = min([1.0, *spec.loads]), max([1.0, *spec.loads])
    fields = "loads" if rate * seconds + burst >= 1 else spec.workload.volume_fields()
    if rate * low * seconds + burst < 1:
        raise ValueError(
            f"{fields}: {rate * low:g} req/s for {seconds:g} s (at load {low:g}) plans "
            f"{rate * low * seconds:.3g} requests per run; a run needs at least 1: raise the rate or "
            "lengthen the workload"
        )
    total = rate * peak * seconds + burst
    if total > MAX_REQUESTS_PER_RUN:
        extra = f" plus a start-up burst of {burst:.3g}" if burst >= 1 else ""
        from_csv = isinstance(spec.workload, CountsSpec) and spec.workload.path is not None
        where = "workload.path" if from_csv else "workload"
        raise ValueError(
            f"{where}: {rate * peak:g} req/s for {seconds:g} s (at load {peak:g}){extra} is "
            f"{total:.3g} requests per run; the simulator takes at most "
            f"{MAX_REQUESTS_PER_RUN:.0e}: lower the rate or shorten the workload"
        )
    if spec.capacity is not None and spec.capacity.hi * seconds + burst > MAX_REQUESTS_PER_RUN:
        raise ValueError(
            f"capacity.hi: {spec.capacity.hi:g} req/s for {seconds:g} s is "
            f"{spec.capacity.hi * seconds + burst:.3g} requests per probe; the simulator takes at most "
            f"{MAX_REQUESTS_PER_RUN:.0e}: lower hi or shorten the workload"
        )


# ----------------------------------------------------------------------------------------------


@dataclass
class Experiment:
    """A validated config, resolved against its file's folder: builds workloads and setups."""

    spec: ExperimentSpec
    source: str = "<config>"
    base: Path = field(default_factory=Path.cwd)
    profiles: dict[str, ModelProfile] = field(default_factory=dict)
    counts: np.ndarray | None = None
    """Per-interval counts of a ``counts`` workload read from its CSV (read once, by :meth:`resolve`)."""

    @classmethod
    def from_file(cls, path: str | Path) -> Experiment:
        p = Path(path)
        return cls(load_model_file(ExperimentSpec, p), str(p), p.resolve().parent).resolve()

    @classmethod
    def from_data(cls, data: Any, source: str = "<config>", base: Path | None = None) -> Experiment:
        return cls(validate(ExperimentSpec, data, source), source, base or Path.cwd()).resolve()

    def path(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.base / p

    def resolve(self) -> Experiment:
        """Load the profiles the models name and a counts CSV; errors name the field."""
        spec = self.spec
        self._read_counts()
        known = ProfileSet()
        if spec.profiles is not None:
            from sloserve.core.profile_io import load_profiles

            known = load_profiles(self.path(spec.profiles))
        for i, m in enumerate(spec.models):
            where = f"{self.source}: models.{i}.profile"
            if isinstance(m.profile, dict):
                entry = {"model": m.name, "hardware": m.hardware, **m.profile}
                self.profiles[m.name] = profiles_from_data({"profiles": [entry]}, where).get(m.name)
                continue
            key = m.profile or m.name
            try:
                self.profiles[m.name] = known.get(key, m.hardware if len(known) else None)
            except KeyError as exc:
                src = spec.profiles or "(no `profiles` file given)"
                raise ConfigError(f"{where}: {exc.args[0]} in {src}") from None
        hw_names = {h.name for h in spec.hardware}
        for i, m in enumerate(spec.models):
            if spec.hardware and m.hardware not in hw_names:
                raise ConfigError(
                    f"{self.source}: models.{i}.hardware: {m.hardware!r} is not in `hardware` "
                    f"({sorted(hw_names)})"
                )
            self._check_latency(i, m)
        return self

    def _read_counts(self) -> None:
        """Read a ``counts`` workload's CSV and bound the run it plans (the config alone cannot)."""
        s = self.spec.workload
        if not isinstance(s, CountsSpec) or s.path is None:
            return
        path = self.path(s.path)
        self.counts = wl.counts_from_csv(path, s.column)
        try:
            check_run_size(self.spec, *s.planned_from(self.counts))
        except ValueError as exc:
            raise ConfigError(f"{self.source}: {exc} ({path}, column {s.column!r})") from None

    def _check_latency(self, index: int, model: ModelSpec) -> None:
        """Refuse a profile whose batches take longer than an hour (the simulator would run for ever)."""
        prof = self.profiles[model.name]
        sharing = max(1, model.instances) if model.shared_hardware else 1
        crowd = sharing * model.max_concurrency  # most batches running at once on its hardware
        for batch in (1, prof.max_batch):
            for cores in sorted({1, model.cores}):
                for k in sorted({1, crowd}):
                    seconds = prof.latency(batch, cores, k)
                    if not (math.isfinite(seconds) and seconds <= MAX_SECONDS):
                        shared = "" if k == 1 else f" beside {k - 1} others"
                        raise ConfigError(
                            f"{self.source}: models.{index}.profile: a batch of {batch} on {cores} core(s)"
                            f"{shared} takes {seconds:g} s; the simulator takes at most {MAX_SECONDS:g} s "
                            "(an hour) per batch"
                        )

    @property
    def seeds(self) -> list[int]:
        return list(self.spec.seeds or [self.spec.seed])

    @property
    def hardware_prices(self) -> dict[str, Hardware]:
        return {h.name: Hardware(h.name, h.cores, h.price_per_hour) for h in self.spec.hardware}

    def workload(self, multiplier: float = 1.0, seed: int = 0, quick: bool = False) -> wl.Workload:
        """The workload with its rate times ``multiplier``, SLOs and payloads assigned, split over
        the models by ``rate_share``."""
        models = self.spec.models
        shares = [m.rate_share for m in models]
        parts = []
        for i, m in enumerate(models):
            share = shares[i] / sum(shares)
            w = self._arrivals(multiplier * share, seed + 7919 * i, quick)
            w = self._attributes(w, m.slo_ms, seed + 7919 * i)
            parts.append(w)
        return parts[0] if len(parts) == 1 else wl.merge(parts)

    def _arrivals(self, mult: float, seed: int, quick: bool) -> wl.Workload:
        s = self.spec.workload
        shorten = 0.2 if quick else 1.0
        if isinstance(s, PoissonSpec):
            return wl.poisson(s.rate * mult, s.duration_s * shorten, seed)
        if isinstance(s, GammaSpec):
            return wl.gamma(s.rate * mult, s.cv, s.duration_s * shorten, seed)
        if isinstance(s, MmppSpec):
            return wl.mmpp_on_off(
                s.rate_on * mult, s.rate_off * mult, s.mean_on_s, s.mean_off_s, s.duration_s * shorten, seed
            )
        if isinstance(s, PiecewiseSpec):
            return wl.piecewise([r * mult for r in s.rates], s.segment_s * shorten, seed)
        if isinstance(s, DiurnalSpec):
            return wl.diurnal(s.rate * mult, s.amplitude, s.period_s * shorten, s.duration_s * shorten, seed)
        if isinstance(s, TraceSpec):
            w = wl.from_trace_csv(
                self.path(s.path),
                column=s.column,
                time_scale=None if s.time_scale is None else s.time_scale / mult,
                target_rate=None if s.target_rate is None else s.target_rate * mult,
                start=s.start_s,
                duration=s.duration_s,
                payload_column=s.payload_column,
                bytes_per_unit=s.bytes_per_unit,
            )
            if s.time_scale is None and s.target_rate is None and mult != 1.0:
                w = w.scaled(1.0 / mult)
            return w.window(0.0, w.duration * shorten) if quick else w
        assert isinstance(s, CountsSpec)
        if s.counts is None and self.counts is None:
            self._read_counts()
        counts: Any = s.counts if s.counts is not None else self.counts
        if quick:
            counts = counts[: max(1, math.ceil(len(counts) * shorten))]
        return wl.from_counts(counts, seed, interval=s.interval_s, rate_scale=s.rate_scale * mult)

    def _attributes(self, w: wl.Workload, model_slo_ms: float | None, seed: int) -> wl.Workload:
        s = self.spec.workload
        if s.payload_bytes > 0:
            w = wl.with_payload(w, s.payload_bytes, s.payload_cv, seed + 1)
        if s.classes is not None:
            w = wl.with_classes(w, s.classes, seed + 2)
        slo_ms = model_slo_ms if model_slo_ms is not None else s.slo_ms
        if s.slo_by_priority is not None and model_slo_ms is None:
            try:
                w = wl.with_class_slos(w, {k: v / 1e3 for k, v in s.slo_by_priority.items()})
            except ValueError as exc:
                raise ConfigError(f"{self.source}: workload.slo_by_priority: {exc}") from None
        elif slo_ms is not None:
            w = wl.with_slo(w, slo_ms / 1e3)
        if s.network is not None:
            if slo_ms is None:
                raise ConfigError(f"{self.source}: workload.network: needs slo_ms (the end-to-end SLO)")
            net = self._network(s.network, math.ceil(w.duration) + 1, seed + 3)
            w = wl.with_network_slo(w, slo_ms / 1e3, net)
        return w

    def _network(self, n: NetworkSpec, seconds: int, seed: int) -> wl.NetworkDelayModel:
        if n.bandwidth_csv is not None:
            net = wl.NetworkDelayModel.from_csv(
                self.path(n.bandwidth_csv), n.column, interval=n.interval_s, scale=n.scale
            )
        else:
            assert n.mean_bps is not None
            net = wl.NetworkDelayModel.synthetic(n.mean_bps, n.cv, max(seconds, 1), seed)
        return wl.NetworkDelayModel(net.bandwidth, net.interval, n.base_delay_ms / 1e3)

    def setups(self, policy: PolicySpec) -> list[ModelSetup]:
        """Fresh model setups with ``policy``'s scheduler (and each model's scaler)."""
        from sloserve.policies.base import PolicyContext
        from sloserve.policies.registry import make_scaler, make_scheduler
        from sloserve.policies.sponge import SpongeScaler

        out = []
        for i, m in enumerate(self.spec.models):
            prof = self.profiles[m.name]
            slo = (m.slo_ms or self.spec.workload.slo_ms or 0) / 1e3 or None
            ctx = PolicyContext(model=m.name, max_batch=prof.max_batch, profile=prof, slo=slo)
            label = policy.label or policy.scheduler
            try:
                sched = make_scheduler(policy.scheduler, ctx, policy.params)
            except ValueError as exc:
                raise ConfigError(f"{self.source}: policies ({label}): {exc}") from None
            scaler = None
            if m.scaler is not None:
                try:
                    scaler = make_scaler(m.scaler.name, ctx, m.scaler.params)
                except ValueError as exc:
                    raise ConfigError(f"{self.source}: models.{i}.scaler: {exc}") from None
                if isinstance(scaler, SpongeScaler) and scaler.instance >= m.instances:
                    raise ConfigError(
                        f"{self.source}: models.{i}.instances: {m.instances}, but scaler sponge resizes "
                        f"instance {scaler.instance} in place (numbers count from 0) and adds none: "
                        f"give instances: {scaler.instance + 1} or more"
                    )
            out.append(
                ModelSetup(
                    name=m.name,
                    profile=prof,
                    scheduler=sched,
                    instances=m.instances,
                    cores=m.cores,
                    hardware=m.hardware,
                    scaler=scaler,
                    noise_cv=m.noise_cv,
                    noise=m.noise,
                    actuation_delay=m.actuation_delay_s,
                    cold_start=m.cold_start_s,
                    max_concurrency=m.max_concurrency,
                    tail_noise=None
                    if m.tail_noise is None
                    else TailNoise(m.tail_noise.probability, m.tail_noise.factor),
                    shared_hardware=m.shared_hardware,
                    dynamic_slowdown=m.dynamic_slowdown,
                )
            )
        return out

    def run(
        self, policy: PolicySpec, multiplier: float = 1.0, seed: int | None = None, *, quick: bool = False
    ) -> SimResult:
        """One simulation of ``policy`` at ``multiplier`` × the workload's rate."""
        s = self.spec.seed if seed is None else seed
        w = self.workload(multiplier, s, quick)
        return simulate(
            self.setups(policy),
            w,
            seed=s,
            hardware_prices=self.hardware_prices,
            timeline_interval=max(self.spec.timeline_interval_s, w.duration / MAX_TIMELINE_ROWS),
        )

    def labels(self) -> list[str]:
        return [p.label or p.scheduler for p in self.spec.policies]


@dataclass
class ExperimentOutcome:
    """Everything :func:`run_experiment` produced."""

    main: dict[str, SimResult]
    loads: dict[str, list[tuple[float, float, float]]]
    """label -> [(multiplier, rate, mean attainment over seeds)]."""
    capacity: dict[str, Any]
    files: list[Path]


def run_experiment(
    exp: Experiment,
    out: Path,
    *,
    quick: bool = False,
    plots: bool = True,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> ExperimentOutcome:
    """Run every policy at load 1, the load sweep and the capacity search; write JSON, PNGs; print a table."""
    from sloserve.sim import report
    from sloserve.sim.capacity import capacity_search

    spec = exp.spec
    labels = exp.labels()
    main: dict[str, SimResult] = {}
    loads: dict[str, list[tuple[float, float, float]]] = {}
    capacity: dict[str, Any] = {}
    seeds = [spec.seed] if quick else exp.seeds
    drawn = exp.workload(1.0, spec.seed, quick).mean_rate
    # rates are reported in the config's mean rate (a seed's draw above or below it is the load's
    # noise, not its rate); where only the data says, in what the main seed drew
    nominal = spec.workload.nominal_rate()
    base_rate = nominal if nominal is not None else drawn
    if drawn <= 0:
        short = " (--quick: a fifth of it)" if quick else ""
        raise ConfigError(
            f"{exp.source}: {spec.workload.volume_fields()}: the workload{short} drew no requests with "
            f"seed {spec.seed}: raise the rate or lengthen the workload"
        )
    n_steps = len(labels) * (1 + len(spec.loads) * len(seeds)) + (len(labels) if spec.capacity else 0)
    bar = _Bar(n_steps, progress)
    try:
        for label, pol in zip(labels, spec.policies, strict=True):
            bar.note(f"{label}: main run")
            main[label] = exp.run(pol, 1.0, spec.seed, quick=quick)
            bar.advance()
            for mult in spec.loads:
                atts = []
                for s in seeds:
                    bar.note(f"{label}: load x{mult:g} seed {s}")
                    atts.append(exp.run(pol, mult, s, quick=quick).metrics.attainment)
                    bar.advance()
                loads.setdefault(label, []).append((mult, base_rate * mult, sum(atts) / len(atts)))
            if spec.capacity is not None:
                c = spec.capacity
                bar.note(f"{label}: capacity search")

                def one(rate: float, seed: int, pol: PolicySpec = pol) -> Metrics:
                    return exp.run(pol, rate / base_rate, seed, quick=quick).metrics

                res = capacity_search(
                    one, c.target, c.lo, c.hi, seeds=seeds, tol=max(c.tol, 0.05) if quick else c.tol
                )
                capacity[label] = res
                bar.advance()
    finally:
        bar.stop()
    slo = (spec.models[0].slo_ms or spec.workload.slo_ms or 0) / 1e3 or None
    first = next(iter(main.values()))
    title = f"{spec.name}: {first.workload}"
    report.print_metrics({k: v.metrics for k, v in main.items()}, title=title, slo=slo)
    for label, res in capacity.items():
        bound = "" if res.bounded else " (no failing rate found: a lower bound)"
        echo(
            f"capacity {label}: {res.rate:.1f} req/s at {res.target * 100:g}% attainment"
            f" (seeds {list(res.seeds)}){bound}"
        )
    files = [
        report.write_json(
            out / "results.json",
            {
                "runs": {k: v.metrics for k, v in main.items()},
                "loads": {
                    k: [{"multiplier": m, "rate": r, "attainment": a} for m, r, a in v]
                    for k, v in loads.items()
                },
                "capacity": capacity,
                "timelines": {k: v.timeline for k, v in main.items()},
            },
            experiment=spec.name,
            description=spec.description,
            workload=first.workload,
            seed=spec.seed,
            seeds=seeds,
            quick=quick,
            config=spec.model_dump(mode="json"),
        )
    ]
    if plots:
        hists = {k: v.histogram for k, v in main.items() if v.histogram is not None}
        files.append(report.plot_latency_cdf(hists, out / "latency_cdf.png", slo=slo, title=title))
        files.append(report.plot_timeline({k: v.timeline for k, v in main.items()}, out / "timeline.png"))
        if loads:
            curves = {k: [(r, a) for _, r, a in v] for k, v in loads.items()}
            target = spec.capacity.target if spec.capacity else 0.99
            files.append(
                report.plot_attainment_vs_load(curves, out / "attainment_vs_load.png", target=target)
            )
    for f in files:
        echo(f"wrote {f}")
    return ExperimentOutcome(main, loads, capacity, files)


class _Bar:
    """A rich progress bar over the runs of an experiment (or nothing)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.p: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
            )
            self.p.start()
            self.task = self.p.add_task("simulating", total=total)

    def note(self, text: str) -> None:
        if self.p is not None:
            self.p.update(self.task, description=text)

    def advance(self) -> None:
        if self.p is not None:
            self.p.advance(self.task)

    def stop(self) -> None:
        if self.p is not None:
            self.p.stop()


DEFAULT_EXPERIMENT: dict[str, Any] = {
    "name": "batchers",
    "description": "Triton, Ray Serve and fixed batching on a built-in CNN-like profile "
    "(6 ms + 2 ms per request, max batch 32), bursty Gamma arrivals (CV 2), 100 ms SLO.",
    "seed": 0,
    "seeds": [0, 1],
    "hardware": [{"name": "cpu", "cores": 8, "price_per_hour": 0.34}],
    "models": [
        {
            "name": "cnn",
            "profile": {
                "kind": "affine",
                "alpha_ms": 6.0,
                "beta_ms": 2.0,
                "max_batch": 32,
                "tail_factor": 1.2,
            },
            "instances": 1,
            "cores": 4,
            "noise_cv": 0.1,
        }
    ],
    "policies": [
        {"label": "triton", "scheduler": "triton", "params": {"timeout_action": "reject"}},
        {
            "label": "triton-delay5ms",
            "scheduler": "triton",
            "params": {"max_queue_delay_microseconds": 5000, "preferred_batch_size": [8, 16, 32]},
        },
        {"label": "ray", "scheduler": "ray", "params": {"max_batch_size": 16, "batch_wait_timeout_s": 0.01}},
        {"label": "fixed-16", "scheduler": "fixed", "params": {"batch_size": 16, "max_wait_s": 0.03}},
    ],
    "workload": {"kind": "gamma", "rate": 300, "cv": 2.0, "duration_s": 60, "slo_ms": 100},
    "loads": [0.5, 0.75, 1.0, 1.25, 1.4],
}
"""What ``sloserve simulate`` runs with no config (``--example`` prints it as YAML)."""


__all__ = [
    "DEFAULT_EXPERIMENT",
    "Experiment",
    "ExperimentOutcome",
    "ExperimentSpec",
    "run_experiment",
]
