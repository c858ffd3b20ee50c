"""``sloserve experiment cofb``: capacity under a p99 latency SLO, CoFB vs Triton-like and
DVABatch-like, with an ablation of CoFB's three mechanisms (SEEDS.md §2).

Each service is one model behind a simulated receive path (:mod:`sloserve.sim.receive`): K
receive queues drained by one I/O worker each, client connections (flows) hashed to queues, receive
cost proportional to payload bytes. Capacity is the highest mean arrival rate (Poisson arrivals;
for ``doc-trace``, a window of the trace replayed at that rate) at which at least 99% of requests
are answered within the SLO (dropped requests count as misses), i.e. at which the p99 latency,
drops counted as infinite, stays within the SLO (:func:`capacity_search`, mean attainment over the
seeds).

Variants (what each row switches on):

- ``triton-like``: static hashing; Triton's dynamic batcher (FIFO, largest available batch, no
  queue delay, late requests still run); fixed concurrency (2 batches per instance);
- ``dvabatch-like``: static hashing; :mod:`sloserve.policies.dvabatch` (our reading of DVABatch);
  fixed concurrency 2;
- ``flows only`` / ``reorder+batch only`` / ``throttle only``: one CoFB mechanism over the
  Triton-like rest (the throttle may admit up to 4 concurrent batches, the others keep 2);
- ``cofb``: all three.

Concurrent batches slow each other by the profile's ``s(k)`` while they run
(``ModelSetup.dynamic_slowdown``). The ``s(k)`` tables are the co-location slowdowns the DNNScaler
authors measured (``data/dnnscaler_instances.csv``, batch-1 latency at k instances / at 1).
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sloserve import cli_args
from sloserve.core.profiles import AffineProfile
from sloserve.data import AZURE_CONV_TRACE

MS = 1e-3
MB = 1_000_000

TRACE = AZURE_CONV_TRACE
"""Default trace of the trace-driven service (shipped with sloserve); ``--trace`` overrides."""


def published_slowdown(dnn: str, dataset: str = "ImageNet", kmax: int = 4) -> tuple[float, ...]:
    """``s(k)`` for k = 1..kmax from the DNNScaler authors' co-location measurements
    (latency at k instances / at 1, made non-decreasing and >= 1)."""
    from sloserve.policies.dnnscaler_data import PUBLISHED_INSTANCE_LATENCY_MS

    for name, data, lat in PUBLISHED_INSTANCE_LATENCY_MS:
        if (name, data) == (dnn, dataset):
            ratios = np.maximum.accumulate(np.maximum(np.array(lat[:kmax]) / lat[0], 1.0))
            return tuple(round(float(r), 4) for r in ratios)
    raise KeyError(f"no published latency for {dnn}/{dataset}")


@dataclass(frozen=True)
class Service:
    """One model served behind a receive path; a row group of the report."""

    name: str
    description: str
    profile: AffineProfile
    slo: float
    """Latency objective, seconds (from the client's send time to the answer)."""
    payload_bytes: float
    """Mean request payload (bytes)."""
    payload_cv: float = 0.0
    """Coefficient of variation of the payload (lognormal; 0 = fixed size)."""
    trace_payload_bytes_per_unit: float | None = None
    """If set: arrivals and payloads are replayed from the trace (``ContextTokens`` x this), a
    window of rate x duration consecutive requests time-scaled to each tested rate; else Poisson
    arrivals and ``payload_bytes``."""
    queues: int = 8
    """Receive queues / I/O workers (one per core of an 8-core server)."""
    flows: int = 16
    """Client connections."""
    flow_skew: float = 0.5
    """Zipf exponent of the per-connection share of requests."""
    receive_bytes_per_s: float = 0.5e9
    """Bytes one I/O worker receives and decodes per second."""
    receive_per_request: float = 30e-6
    """Fixed receive cost per request, seconds."""
    data_intensive: bool = True

    @property
    def receive_ms(self) -> float:
        """Receive time of a mean-sized request on one worker, ms."""
        return (self.receive_per_request + self.payload_bytes / self.receive_bytes_per_s) / MS


def _profile(model: str, alpha_ms: float, beta_ms: float, dnn: str) -> AffineProfile:
    # tail_factor 1.25: the p99 of the simulator's service-time noise (lognormal, CV 0.1)
    return AffineProfile(
        model, alpha_ms * MS, beta_ms * MS, max_batch=32, tail_factor=1.25, slowdown=published_slowdown(dnn)
    )


SERVICES: tuple[Service, ...] = (
    Service(
        "video-detect",
        "640x640x3 fp32 frames (4.9 MB); detector-sized model; s(k) of InceptionV2",
        _profile("detector", 6.0, 1.6, "InceptionV2"),
        slo=0.100,
        payload_bytes=640 * 640 * 3 * 4,
    ),
    Service(
        "hd-classify",
        "1920x1080x3 uint8 frames (6.2 MB); MobileNetV2-sized model; s(k) of MobileNetV2-1.0",
        _profile("mobilenet", 3.0, 0.8, "MobileNetV2-1.0"),
        slo=0.060,
        payload_bytes=1920 * 1080 * 3,
    ),
    Service(
        "doc-trace",
        "arrivals and payloads replayed from the Azure conv trace (ContextTokens x 1 KiB, mean 1.2 MB, "
        "heavy tail); layout-model-sized; s(k) of InceptionV1",
        _profile("layout", 5.0, 2.0, "InceptionV1"),
        slo=0.150,
        payload_bytes=1154.7 * 1024,
        trace_payload_bytes_per_unit=1024.0,
    ),
    Service(
        "image-resnet50",
        "224x224x3 fp32 images (0.6 MB, lognormal CV 0.3); ResNet-50-sized model; s(k) of ResNetV2-50",
        _profile("resnet50", 4.0, 0.9, "ResNetV2-50"),
        slo=0.050,
        payload_bytes=224 * 224 * 3 * 4,
        payload_cv=0.3,
    ),
    Service(
        "text-bert",
        "short text (4 KB); BERT-sized model; s(k) of InceptionV1: compute-bound, not data-intensive",
        _profile("bert", 8.0, 2.5, "InceptionV1"),
        slo=0.150,
        payload_bytes=4096,
        data_intensive=False,
    ),
)
"""The services of the full run (different models, profiles and payload sizes)."""

QUICK_SERVICES = ("video-detect", "text-bert")
"""What ``--quick`` runs: one data-intensive and one compute-bound service."""


@dataclass(frozen=True)
class Variant:
    """A serving configuration: which scheduler, which steering, how much concurrency."""

    name: str
    short: str
    """Column label."""
    scheduler: str
    """Registry name: ``triton``, ``dvabatch`` or ``cofb``."""
    steering: bool = False
    """CoFB flow scheduling (else static hashing)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Scheduler parameters (the CoFB switches)."""
    concurrency: int = 2
    """``max_concurrency`` of the instance."""


_OFF = {"reorder": False, "batching": False, "throttle": False, "wait": False}
VARIANTS: tuple[Variant, ...] = (
    Variant("triton-like", "triton", "triton", params={"timeout_action": "delay"}),
    Variant("dvabatch-like", "dva", "dvabatch"),
    Variant("flows only", "flows", "cofb", steering=True, params=dict(_OFF)),
    Variant(
        "reorder+batch only",
        "reorder",
        "cofb",
        params=_OFF | {"reorder": True, "batching": True, "wait": True},
    ),
    Variant("throttle only", "throttle", "cofb", params=_OFF | {"throttle": True}, concurrency=4),
    Variant("cofb", "cofb", "cofb", steering=True, params={}, concurrency=4),
)
"""Rows of the ablation table; the first two are the baselines."""


@dataclass(frozen=True)
class Settings:
    """Run parameters of one experiment."""

    duration: float = 10.0
    """Simulated seconds of arrivals per run."""
    seeds: tuple[int, ...] = (0, 1)
    tol: float = 0.03
    """Relative tolerance of the capacity search."""
    noise_cv: float = 0.1
    """Service-time noise (lognormal CV)."""
    target: float = 0.99
    """Attainment that defines capacity (p99 within the SLO)."""
    curve_points: int = 7
    """Loads per p99-vs-load curve."""
    trace: Path = TRACE
    """CSV trace for trace-driven services."""
    per_seed: bool = True
    """Also search the capacity of each seed alone (its own flow placement), to show the spread."""


@functools.lru_cache(maxsize=4)
def _trace_workload(path: Path, bytes_per_unit: float) -> Any:
    from sloserve.sim import workload as wl

    return wl.from_trace_csv(path, payload_column="ContextTokens", bytes_per_unit=bytes_per_unit)


def make_workload(service: Service, rate: float, seed: int, settings: Settings) -> Any:
    """The workload of one run: ``settings.duration`` seconds at mean ``rate`` req/s with the
    service's SLO and payloads. Trace-driven services replay ``rate x duration`` consecutive
    requests of the trace (all of it when it has fewer) from a seed-dependent offset, with their
    payloads, scaled in time so that the window's mean rate is ``rate``
    (:meth:`~sloserve.sim.workload.Workload.replayed_at`)."""
    from sloserve.sim import workload as wl

    if service.trace_payload_bytes_per_unit is not None:
        base = _trace_workload(settings.trace, service.trace_payload_bytes_per_unit)
        w = base.replayed_at(rate, settings.duration, seed)
    else:
        w = wl.with_payload(
            wl.poisson(rate, settings.duration, seed), service.payload_bytes, service.payload_cv, seed
        )
    return wl.with_slo(w, service.slo)


def build_run(service: Service, variant: Variant, settings: Settings) -> Callable[[float, int, bool], Any]:
    """A function ``(rate, seed, record) -> SimResult`` running ``service`` under ``variant``."""
    from sloserve.policies.base import PolicyContext
    from sloserve.policies.flow_steering import LoadSteering, StaticHashSteering
    from sloserve.policies.registry import make_scheduler
    from sloserve.sim.cluster import ModelSetup, Simulation
    from sloserve.sim.receive import ReceiveCost, assign_flows, attach_receive_path

    profile = service.profile
    cost = ReceiveCost(service.receive_per_request, service.receive_bytes_per_s)

    def run(rate: float, seed: int, record: bool = False) -> Any:
        w = make_workload(service, rate, seed, settings)
        ctx = PolicyContext(profile.model, max_batch=profile.max_batch, profile=profile, slo=service.slo)
        scheduler = make_scheduler(variant.scheduler, ctx, dict(variant.params))
        setup = ModelSetup(
            profile.model,
            profile,
            scheduler,
            max_concurrency=variant.concurrency,
            noise_cv=settings.noise_cv,
            dynamic_slowdown=True,
        )
        sim = Simulation(setup, w, seed=seed, record=record)
        steering = (
            LoadSteering(service.queues, seed=seed)
            if variant.steering
            else StaticHashSteering(service.queues, seed=seed)
        )
        flows = assign_flows(len(w), service.flows, service.flow_skew, seed)
        attach_receive_path(sim, steering, cost, flows)
        return sim.run()

    return run


def effective_p99(results: Sequence[Any]) -> float:
    """p99 latency over the requests of ``results`` (runs made with ``record=True``), dropped
    requests counted as infinitely late."""
    lat = np.concatenate(
        [np.where(r.outcomes.completed, r.outcomes.finish - r.outcomes.arrival, np.inf) for r in results]
    )
    if len(lat) == 0:
        return 0.0
    return float(np.quantile(lat, 0.99, method="higher"))


def upper_bound(service: Service) -> float:
    """A rate no variant sustains (the search's starting ``hi``): the receive path and the model
    each at their best, whichever is lower, times 1.5."""
    p = service.profile
    model = max(b / p.latency(b) for b in range(1, p.max_batch + 1)) * 4 / p.slowdown[-1]
    receive = service.queues / (service.receive_ms * MS)
    return 1.5 * min(model, receive)


def _metrics_of(run: Callable[[float, int, bool], Any], rate: float, seed: int) -> Any:
    return run(rate, seed, False).metrics


def run_service(
    service: Service,
    variants: Sequence[Variant],
    settings: Settings,
    advance: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Capacity of each variant and p99-vs-load curves for one service."""
    from sloserve.sim.capacity import capacity_search

    hi = upper_bound(service)
    out: dict[str, Any] = {"capacity": {}, "capacity_per_seed": {}, "search": {}, "curves": {}}
    for v in variants:
        run = build_run(service, v, settings)
        res = capacity_search(
            functools.partial(_metrics_of, run),
            settings.target,
            lo=hi / 64,
            hi=hi,
            seeds=settings.seeds,
            tol=settings.tol,
            on_probe=lambda _p: advance(),
        )
        out["capacity"][v.name] = res.rate
        out["search"][v.name] = res.to_dict()
        if settings.per_seed and len(settings.seeds) > 1:
            out["capacity_per_seed"][v.name] = [
                capacity_search(
                    functools.partial(_metrics_of, run),
                    settings.target,
                    lo=hi / 64,
                    hi=hi,
                    seeds=(seed,),
                    tol=settings.tol,
                    on_probe=lambda _p: advance(),
                ).rate
                for seed in settings.seeds
            ]
    top = max(out["capacity"].values()) or hi / 2
    loads = np.linspace(0.3, 1.3, settings.curve_points) * top
    for v in variants:
        run = build_run(service, v, settings)
        pts = []
        for rate in loads:
            # pooled over the seeds, like the capacity (mean attainment over the seeds)
            results = [run(float(rate), seed, True) for seed in settings.seeds]
            p99 = effective_p99(results)
            attainment = float(np.mean([r.metrics.attainment for r in results]))
            pts.append((float(rate), p99, attainment))
            advance()
        out["curves"][v.name] = pts
    return out


def plot_p99_vs_load(results: dict[str, Any], services: Sequence[Service], path: Path) -> Path:
    """One panel per service: p99 over the seeds' requests (drops = infinite, clipped at 4x the SLO)
    against offered load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(services)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 4.0 * rows), squeeze=False)
    for ax, s in zip(axes.flat, services, strict=False):
        cap = 4 * s.slo / MS
        for name, pts in results[s.name]["curves"].items():
            xs = [p[0] for p in pts]
            ys = [min(p[1] / MS, cap) for p in pts]
            ax.plot(xs, ys, marker="o", ms=3, label=name)
        ax.axhline(s.slo / MS, color="k", ls="--", lw=1, label="SLO")
        ax.set_ylim(0, cap * 1.02)
        ax.set_title(f"{s.name} ({s.payload_bytes / MB:.2g} MB payload)", fontsize=10)
        ax.set_xlabel("offered load (req/s)")
        ax.set_ylabel("p99 latency (ms, drops = inf, clipped)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def ratios(capacity: dict[str, float], base: str) -> dict[str, float]:
    """Capacity of each variant relative to ``base`` (inf when the base sustains nothing)."""
    b = capacity.get(base, 0.0)
    return {k: (v / b if b > 0 else math.inf) for k, v in capacity.items()}


def _payload(nbytes: float) -> str:
    return f"{nbytes / MB:.2g} MB" if nbytes >= 100_000 else f"{nbytes / 1000:.2g} kB"


def table(results: dict[str, Any], services: Sequence[Service], variants: Sequence[Variant]) -> Any:
    """Rich table: capacity per service and variant (req/s), and each one relative to Triton-like."""
    from rich.table import Table

    t = Table(
        title="CoFB: capacity (req/s) with p99 <= SLO, drops as misses; (x) = vs triton-like",
        title_justify="left",
    )
    t.add_column("service")
    t.add_column("payload", justify="right")
    t.add_column("SLO", justify="right")
    for v in variants:
        t.add_column(v.short, justify="right")
    t.add_column("cofb/dva", justify="right")
    for s in services:
        cap = results[s.name]["capacity"]
        rel = ratios(cap, "triton-like")
        rd = ratios(cap, "dvabatch-like").get("cofb", math.nan)
        t.add_row(
            s.name + ("" if s.data_intensive else "*"),
            _payload(s.payload_bytes),
            f"{s.slo / MS:g}ms",
            *[f"{cap.get(v.name, math.nan):.0f} ({rel.get(v.name, math.nan):.2f})" for v in variants],
            f"{rd:.2f}x",
        )
    t.caption = "* compute-bound, not data-intensive"
    return t


def workload_text(services: Sequence[Service], settings: Settings) -> str:
    """What the runs' arrivals and payloads are, for ``cofb.json``."""
    poisson = [s.name for s in services if s.trace_payload_bytes_per_unit is None]
    traced = [s for s in services if s.trace_payload_bytes_per_unit is not None]
    parts = []
    if poisson:
        parts.append(f"Poisson arrivals with lognormal or fixed payloads ({', '.join(poisson)})")
    parts.extend(
        f"{s.name}: windows of rate x {settings.duration:g} s consecutive requests of trace "
        f"{settings.trace.name} (from a seed-dependent offset; the whole trace when it holds fewer), "
        f"time-scaled to the rate, payloads ContextTokens x {s.trace_payload_bytes_per_unit:g} bytes"
        for s in traced
    )
    return (
        "; ".join(parts) + f"; {settings.duration:g} s per run, fixed SLO per service, "
        "flows with Zipf shares hashed to receive queues"
    )


def run_experiment(
    services: Sequence[Service],
    variants: Sequence[Variant],
    settings: Settings,
    out: Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Run everything, write ``cofb.json`` and ``p99_vs_load.png`` into ``out``; return the results."""
    from rich.progress import Progress

    from sloserve.sim.report import write_json

    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    searches = 1 + (len(settings.seeds) if settings.per_seed and len(settings.seeds) > 1 else 0)
    per_service = len(variants) * (10 * searches + settings.curve_points)  # about 10 probes a search
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("cofb experiment", total=per_service * len(services))
        for s in services:
            results[s.name] = run_service(s, variants, settings, lambda: bar.advance(task))
    summary = {
        s.name: {
            "capacity": results[s.name]["capacity"],
            "capacity_per_seed": results[s.name]["capacity_per_seed"],
            "vs_triton": ratios(results[s.name]["capacity"], "triton-like"),
            "vs_dvabatch": ratios(results[s.name]["capacity"], "dvabatch-like"),
            "data_intensive": s.data_intensive,
        }
        for s in services
    }
    png = plot_p99_vs_load(results, services, out / "p99_vs_load.png")
    write_json(
        out / "cofb.json",
        {"summary": summary, "results": results, "plot": str(png)},
        experiment="cofb",
        workload=workload_text(services, settings),
        seeds=list(settings.seeds),
        settings=asdict(settings) | {"trace": str(settings.trace)},
        services=[
            asdict(s)
            | {
                "profile": {
                    k: getattr(s.profile, k)
                    for k in ("model", "alpha", "beta", "max_batch", "tail_factor", "slowdown")
                }
            }
            for s in services
        ],
        variants=[asdict(v) for v in variants],
        wall_seconds=round(time.perf_counter() - t0, 1),
    )
    return {"summary": summary, "results": results}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sloserve experiment cofb``."""
    p = subparsers.add_parser(
        "cofb",
        help="CoFB vs Triton-like and DVABatch-like: capacity under a p99 SLO, with an ablation",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--out", type=cli_args.output_dir, default=Path("results/cofb"), help="output directory")
    p.add_argument("--quick", action="store_true", help="small run: two services, short runs, one seed")
    p.add_argument(
        "--duration", type=cli_args.positive_at_most(3600), help="simulated seconds per run (at most an hour)"
    )
    p.add_argument(
        "--seeds", type=cli_args.seed, nargs="+", help="seeds (capacity = mean attainment over them)"
    )
    p.add_argument("--services", nargs="+", choices=[s.name for s in SERVICES], help="subset of services")
    p.add_argument(
        "--trace",
        type=cli_args.existing_file,
        help=f"trace CSV of the trace-driven service (default {TRACE})",
    )
    p.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    settings = Settings()
    services = list(SERVICES)
    if args.quick:
        settings = replace(settings, duration=2.0, seeds=(0,), tol=0.08, curve_points=4, per_seed=False)
        services = [s for s in SERVICES if s.name in QUICK_SERVICES]
    if args.duration is not None:
        settings = replace(settings, duration=args.duration)
    if args.seeds:
        settings = replace(settings, seeds=tuple(args.seeds))
    if args.trace is not None:
        settings = replace(settings, trace=args.trace)
    if args.services:
        services = [s for s in SERVICES if s.name in args.services]
    if not settings.trace.exists():
        skipped = [s.name for s in services if s.trace_payload_bytes_per_unit is not None]
        if skipped:
            console.print(f"[yellow]trace {settings.trace} not found: skipping {', '.join(skipped)}[/yellow]")
        services = [s for s in services if s.trace_payload_bytes_per_unit is None]
    out = run_experiment(services, VARIANTS, settings, args.out)
    Console(width=max(console.width, 150)).print(table(out["results"], services, VARIANTS))
    console.print(
        f"seeds {list(settings.seeds)}, {settings.duration:g} s per run; "
        f"wrote {args.out / 'cofb.json'} and {args.out / 'p99_vs_load.png'}"
    )
    return 0
