"""User experiments for ``sloserve simulate CONFIG.yaml``: the config format, validation and runner.

A config names models (profile + resources), the policies to compare, a workload and optional
load sweep and capacity search. Every field is checked by pydantic through
:mod:`sloserve.core.config`, so an error names the file and the field. Example (every field)::

    name: my-experiment          # label of the run; output goes to results/<name>/ unless `out`
    seed: 0                      # seed of the main run (noise, workload)
    seeds: [0, 1, 2]             # seeds of the load sweep and capacity search (default: [seed])
    profiles: profiles.yaml      # optional profile file (path relative to this file)
    hardware:                    # optional prices; cost = core-seconds x price / cores / 3600
      - {name: cpu, cores: 16, price_per_hour: 0.68}
    models:
      - name: resnet
        profile: resnet          # a model in `profiles`, or an inline profile-file entry:
        # profile: {kind: affine, alpha_ms: 6, beta_ms: 2, max_batch: 32}
        instances: 1
        cores: 1
        max_concurrency: 1
        noise_cv: 0.1            # service-time multiplier CV; noise: lognormal | gamma
        actuation_delay_s: 0.0
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
      cv: 2.0                    # gamma only
      duration_s: 60
      slo_ms: 100                # fixed SLO; or slo_by_priority: {1: 50, 2: 200} with classes: [0.3, 0.7]
      payload_bytes: 0           # mean payload; payload_cv for lognormal sizes
      network: null              # {mean_bps: 2.0e6, cv: 0.5} or {bandwidth_csv: f.csv, column: bps}
    loads: [0.5, 0.8, 1.0]       # optional rate multipliers: attainment-vs-load plot
    capacity: {target: 0.99, lo: 10, hi: 2000, tol: 0.02}   # optional capacity search

Kinds and their fields: ``poisson`` (rate, duration_s), ``gamma`` (rate, cv, duration_s), ``mmpp``
(rate_on, rate_off, mean_on_s, mean_off_s, duration_s), ``piecewise`` (rates, segment_s),
``diurnal`` (rate, amplitude, period_s, duration_s), ``trace`` (path, column, time_scale or
target_rate, start_s, duration_s, payload_column, bytes_per_unit), ``counts`` (counts or path +
column, interval_s, rate_scale).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from sloserve.core.config import ConfigError, Seed, StrictModel, load_model_file, validate
from sloserve.core.hardware import Hardware
from sloserve.core.profile_io import profiles_from_data
from sloserve.core.profiles import ModelProfile, ProfileSet
from sloserve.policies.params import MACHINE_LIMIT
from sloserve.sim import workload as wl
from sloserve.sim.cluster import ModelSetup, SimResult, TailNoise, simulate
from sloserve.sim.metrics import Metrics

Pos = Annotated[float, Field(gt=0)]
NonNeg = Annotated[float, Field(ge=0)]


MAX_REQUESTS_PER_RUN = 20_000_000
"""Most requests one simulated run may hold (about a minute with Triton's batcher, several with
the SLO-aware one; ``benchmarks/sim_throughput.py``)."""


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
    factor: float = Field(ge=1)


class ModelSpec(StrictModel):
    name: str = Field(min_length=1)
    profile: str | dict[str, Any] | None = None
    """Model name in the ``profiles`` file (default: ``name``), or an inline profile entry."""
    hardware: str = "cpu"
    instances: int = Field(default=1, ge=0, le=MACHINE_LIMIT)
    cores: int = Field(default=1, ge=1, le=MACHINE_LIMIT)
    max_concurrency: int = Field(default=1, ge=1, le=MACHINE_LIMIT)
    noise_cv: NonNeg = 0.0
    noise: Literal["lognormal", "gamma"] = "lognormal"
    tail_noise: TailNoiseSpec | None = None
    actuation_delay_s: NonNeg = 0.0
    cold_start_s: NonNeg = 0.0
    shared_hardware: bool = True
    dynamic_slowdown: bool = False
    scaler: NamedSpec | None = None
    slo_ms: Pos | None = None
    rate_share: Pos = 1.0


class NetworkSpec(StrictModel):
    """Bandwidth series for dynamic SLOs: synthetic (mean_bps, cv) or from a CSV column."""

    mean_bps: Pos | None = None
    cv: NonNeg = 0.5
    bandwidth_csv: str | None = None
    column: str = "bandwidth"
    scale: Pos = 1.0
    interval_s: Pos = 1.0
    base_delay_ms: NonNeg = 0.0

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
    """Mean request payload (bytes; at most 1 TiB)."""
    payload_cv: NonNeg = 0.0
    network: NetworkSpec | None = None

    def planned(self) -> tuple[float, float] | None:
        """Mean rate (req/s) and seconds of the workload at load 1, when the config alone says
        (None for one read from a file): what bounds the requests of a run before it starts."""
        return None


class PoissonSpec(_WorkloadBase):
    kind: Literal["poisson"]
    rate: Pos
    duration_s: Pos

    def planned(self) -> tuple[float, float] | None:
        return self.rate, self.duration_s


class GammaSpec(_WorkloadBase):
    kind: Literal["gamma"]
    rate: Pos
    cv: Pos
    duration_s: Pos

    def planned(self) -> tuple[float, float] | None:
        return self.rate, self.duration_s


class MmppSpec(_WorkloadBase):
    kind: Literal["mmpp"]
    rate_on: Pos
    rate_off: NonNeg
    mean_on_s: Pos
    mean_off_s: Pos
    duration_s: Pos

    def planned(self) -> tuple[float, float] | None:
        return max(self.rate_on, self.rate_off), self.duration_s


class PiecewiseSpec(_WorkloadBase):
    kind: Literal["piecewise"]
    rates: list[NonNeg] = Field(min_length=1)
    segment_s: Pos = 1.0

    def planned(self) -> tuple[float, float] | None:
        return sum(self.rates) / len(self.rates), len(self.rates) * self.segment_s


class DiurnalSpec(_WorkloadBase):
    kind: Literal["diurnal"]
    rate: Pos
    amplitude: float = Field(ge=0, le=1)
    period_s: Pos
    duration_s: Pos

    def planned(self) -> tuple[float, float] | None:
        return self.rate, self.duration_s


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
        return self


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
        seconds = len(self.counts) * self.interval_s
        return sum(self.counts) * self.rate_scale / seconds, seconds


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
    timeline_interval_s: Pos = 1.0

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
        """Refuse a run the simulator would not finish in reasonable time (or memory)."""
        planned = self.workload.planned()
        if planned is None:
            return self
        rate, seconds = planned
        peak = max([1.0, *self.loads])
        if rate * peak * seconds > MAX_REQUESTS_PER_RUN:
            raise ValueError(
                f"workload: {rate * peak:g} req/s for {seconds:g} s (at load {peak:g}) is "
                f"{rate * peak * seconds:.3g} requests per run; the simulator takes at most "
                f"{MAX_REQUESTS_PER_RUN:.0e}: lower the rate or shorten the workload"
            )
        if self.capacity is not None and self.capacity.hi * seconds > MAX_REQUESTS_PER_RUN:
            raise ValueError(
                f"capacity.hi: {self.capacity.hi:g} req/s for {seconds:g} s is "
                f"{self.capacity.hi * seconds:.3g} requests per probe; the simulator takes at most "
                f"{MAX_REQUESTS_PER_RUN:.0e}: lower hi or shorten the workload"
            )
        return self


# ----------------------------------------------------------------------------------------------


@dataclass
class Experiment:
    """A validated config, resolved against its file's folder: builds workloads and setups."""

    spec: ExperimentSpec
    source: str = "<config>"
    base: Path = field(default_factory=Path.cwd)
    profiles: dict[str, ModelProfile] = field(default_factory=dict)

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
        """Load the profiles the models name; errors name the field."""
        spec = self.spec
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
        return self

    @property
    def seeds(self) -> list[int]:
        return list(self.spec.seeds or [self.spec.seed])

    @property
    def hardware_prices(self) -> dict[str, Hardware]:
        return {h.name: Hardware(h.name, h.cores, h.price_per_hour) for h in self.spec.hardware}

    def base_rate(self) -> float:
        """Mean arrival rate of the workload at load multiplier 1 (req/s)."""
        return self.workload(1.0, self.spec.seed).mean_rate

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
        counts: Any = s.counts
        if counts is None:
            assert s.path is not None
            counts = wl.counts_from_csv(self.path(s.path), s.column)
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
        return simulate(
            self.setups(policy),
            self.workload(multiplier, s, quick),
            seed=s,
            hardware_prices=self.hardware_prices,
            timeline_interval=self.spec.timeline_interval_s,
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
    seeds = exp.seeds[:1] if quick else exp.seeds
    base_rate = exp.workload(1.0, spec.seed, quick).mean_rate
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
