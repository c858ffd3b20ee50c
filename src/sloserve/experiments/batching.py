"""``sloserve experiment batching``: capacity at 99% SLO attainment of sloserve's SLO-aware batcher
against Triton-like, Ray-Serve-like and Clipper-AIMD batching (SEEDS.md §4 and the baselines).

For each profile and each SLO (a tight and a loose one, plus a mixed workload where half the
requests carry each) the capacity is the highest Poisson arrival rate whose SLO attainment, mean
over the seeds, is at least 99% (drops count as misses; :func:`sloserve.sim.capacity.capacity_search`).
One instance with one core serves the model; service times are the profile's median times a
lognormal multiplier (CV 0.1); the profiles' p99 is that multiplier's p99.

Policies:

- ``slo``: :class:`sloserve.policies.slo_batcher.SloBatcher` (only knob: the SLO, per request);
- ``triton default``: FIFO, largest batch available up to the model's ``max_batch_size``, no queue
  delay, no timeout (Triton without a deadline runs late requests);
- ``triton best``: the best static setting found by a grid search over ``max_batch_size`` x
  ``max_queue_delay`` x timeout action (REJECT with the SLO as the timeout, or DELAY);
- ``ray default``: ``max_batch_size=10``, ``batch_wait_timeout_s=0.01``; ``ray best``: grid over
  ``max_batch_size`` x ``batch_wait_timeout_s``;
- ``clipper aimd``: Triton-like batching whose cap moves by Clipper's AIMD on p95 every 3 s.

Profiles: published-style affine CPU profiles (``l(b) = α + β·b``; shapes of MobileNet-v2,
ResNet-50 and BERT-base on one CPU core, not measured here) unless ``--profiles`` names a profile
file from ``sloserve profile``. SLOs: tight = 4·l(1), loose = 16·l(1) at p99.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sloserve.core.profiles import AffineProfile, ModelProfile
from sloserve.policies.base import Scaler, Scheduler

NOISE_CV = 0.1
"""CV of the lognormal service-time multiplier."""
TAIL_FACTOR = round(math.exp(2.3263 * math.sqrt(math.log1p(NOISE_CV**2)) - math.log1p(NOISE_CV**2) / 2), 3)
"""p99 / median of that multiplier: the built-in profiles' tail factor."""

BUILTIN_PROFILES: tuple[AffineProfile, ...] = (
    AffineProfile("mobilenet_v2", alpha=0.0030, beta=0.0006, max_batch=32, tail_factor=TAIL_FACTOR),
    AffineProfile("resnet50", alpha=0.0080, beta=0.0040, max_batch=32, tail_factor=TAIL_FACTOR),
    AffineProfile("bert_base", alpha=0.0060, beta=0.0090, max_batch=32, tail_factor=TAIL_FACTOR),
)
"""Published-style affine profiles (seconds): high, medium and low gain from batching."""


@dataclass(frozen=True)
class Settings:
    """Sizes of the run (``--quick`` shrinks them)."""

    duration: float = 20.0
    """Simulated seconds per run."""
    seeds: tuple[int, ...] = (0, 1, 2)
    tol: float = 0.02
    grid_duration: float = 10.0
    """Simulated seconds per run while searching the grids (the winner is re-measured in full)."""
    grid_tol: float = 0.05
    grid_batches: tuple[int, ...] = (4, 8, 16, 32)
    grid_delays: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)
    """Queue delays / wait timeouts as fractions of the SLO."""
    curve_points: tuple[float, ...] = (0.5, 0.7, 0.85, 1.0, 1.1, 1.25, 1.5)
    """Rates of the attainment-vs-load curves, as multiples of the SLO batcher's capacity."""
    target: float = 0.99


QUICK = Settings(
    duration=4.0,
    grid_duration=4.0,
    seeds=(0,),
    tol=0.1,
    grid_tol=0.15,
    grid_batches=(8, 32),
    grid_delays=(0.0, 0.1),
    curve_points=(0.5, 1.0, 1.5),
)


@dataclass(frozen=True)
class Case:
    """One point of the comparison: a profile and an SLO setting."""

    profile: ModelProfile
    label: str
    """``tight``, ``loose`` or ``mixed``."""
    slos: tuple[float, ...]
    """The SLO every request gets, or the SLOs requests draw from with equal odds (mixed)."""

    @property
    def slo(self) -> float:
        """The tightest SLO (what baselines that take one SLO are given)."""
        return min(self.slos)


@dataclass
class PolicyResult:
    """Capacity of one policy on one case."""

    capacity: float
    settings: dict[str, Any] = field(default_factory=dict)
    curve: list[tuple[float, float]] = field(default_factory=list)


Make = Callable[[], tuple[Scheduler, Scaler | None]]


def slos_for(profile: ModelProfile) -> dict[str, tuple[float, ...]]:
    """Tight = 4·l(1), loose = 16·l(1) (p99 latency), mixed = both."""
    base = profile.tail_latency(1, 1, 1)
    tight, loose = round(4 * base, 4), round(16 * base, 4)
    return {"tight": (tight,), "loose": (loose,), "mixed": (tight, loose)}


def make_slo(profile: ModelProfile, slo: float) -> Make:
    from sloserve.policies.slo_batcher import SloBatcher

    return lambda: (SloBatcher(profile, max_batch=profile.max_batch, slo=slo), None)


def make_triton(max_batch: int, delay: float = 0.0, action: str = "delay") -> Make:
    from sloserve.policies.triton import TritonDynamicBatcher

    return lambda: (TritonDynamicBatcher(max_batch, max_queue_delay=delay, timeout_action=action), None)


def make_ray(max_batch: int = 10, wait: float = 0.01) -> Make:
    from sloserve.policies.ray_batch import RayServeBatcher

    return lambda: (RayServeBatcher(max_batch, wait), None)


def make_aimd(max_batch: int, slo: float) -> Make:
    from sloserve.policies.aimd import AimdController, AimdScaler
    from sloserve.policies.triton import TritonDynamicBatcher

    def build() -> tuple[Scheduler, Scaler | None]:
        scaler = AimdScaler("m", AimdController(slo=slo, max_batch=max_batch, batch=1))
        return TritonDynamicBatcher(max_batch, timeout_action="delay"), scaler

    return build


def workload_for(case: Case, rate: float, seed: int, duration: float) -> Any:
    """Poisson arrivals; each request's deadline from the case's SLO(s)."""
    from sloserve.sim import workload as wl

    w = wl.poisson(rate=rate, duration=duration, seed=seed)
    if len(case.slos) == 1:
        return wl.with_slo(w, case.slos[0])
    rng = np.random.default_rng([seed, 99])
    budget = rng.choice(np.asarray(case.slos), size=len(w))
    return w.replace(
        deadlines=w.arrivals + budget,
        description=f"{w.description} slo mixed {[s * 1e3 for s in case.slos]} ms",
    )


def run_once(case: Case, make: Make, rate: float, seed: int, duration: float) -> Any:
    """Metrics of one simulated run."""
    from sloserve.sim import ModelSetup, simulate

    scheduler, scaler = make()
    setup = ModelSetup("m", case.profile, scheduler, scaler=scaler, noise_cv=NOISE_CV)
    return simulate(setup, workload_for(case, rate, seed, duration), seed=seed).metrics


def capacity(case: Case, make: Make, settings: Settings, *, seeds: Sequence[int], tol: float) -> float:
    """Highest rate with mean attainment >= target over ``seeds``."""
    from sloserve.sim.capacity import capacity_search

    hi = 1.5 * case.profile.max_batch / case.profile.latency(case.profile.max_batch, 1, 1)
    result = capacity_search(
        lambda rate, seed: run_once(case, make, rate, seed, settings.duration),
        settings.target,
        lo=max(0.5, hi / 200),
        hi=hi,
        seeds=seeds,
        tol=tol,
    )
    return float(result.rate)


def grid_best(
    case: Case, candidates: dict[str, tuple[dict[str, Any], Make]], settings: Settings, top: int = 3
) -> tuple[float, dict[str, Any]]:
    """Best static setting: every candidate searched with short runs and one seed, then the
    ``top`` best re-measured like the other policies (all seeds, full runs); the best of those."""
    short = replace(settings, duration=settings.grid_duration)
    scored = sorted(
        (
            (capacity(case, make, short, seeds=settings.seeds[:1], tol=settings.grid_tol), key)
            for key, (_, make) in candidates.items()
        ),
        reverse=True,
    )
    finals = [
        (capacity(case, candidates[key][1], settings, seeds=settings.seeds, tol=settings.tol), key)
        for _, key in scored[:top]
    ]
    rate, best = max(finals)
    return rate, candidates[best][0]


def triton_grid(case: Case, settings: Settings) -> dict[str, tuple[dict[str, Any], Make]]:
    out: dict[str, tuple[dict[str, Any], Make]] = {}
    for b in settings.grid_batches:
        if b > case.profile.max_batch:
            continue
        for frac in settings.grid_delays:
            for action in ("delay", "reject"):
                delay = round(frac * case.slo, 6)
                params = {"max_batch_size": b, "max_queue_delay_s": delay, "timeout_action": action}
                out[f"{b}/{delay}/{action}"] = (params, make_triton(b, delay, action))
    return out


def ray_grid(case: Case, settings: Settings) -> dict[str, tuple[dict[str, Any], Make]]:
    out: dict[str, tuple[dict[str, Any], Make]] = {}
    for b in settings.grid_batches:
        for frac in settings.grid_delays:
            wait = round(frac * case.slo, 6)
            out[f"{b}/{wait}"] = ({"max_batch_size": b, "batch_wait_timeout_s": wait}, make_ray(b, wait))
    return out


def evaluate(case: Case, settings: Settings) -> dict[str, PolicyResult]:
    """Capacities of every policy on ``case``, and their attainment-vs-load curves."""
    p, full = case.profile, settings.seeds
    mb = p.max_batch
    makes: dict[str, Make] = {
        "slo": make_slo(p, case.slo),
        "triton default": make_triton(mb),
        "ray default": make_ray(min(10, mb)),
        "clipper aimd": make_aimd(mb, case.slo),
    }
    results = {
        name: PolicyResult(capacity(case, m, settings, seeds=full, tol=settings.tol))
        for name, m in makes.items()
    }
    results["triton default"].settings = {
        "max_batch_size": mb,
        "max_queue_delay_s": 0.0,
        "timeout_action": "delay",
    }
    results["ray default"].settings = {"max_batch_size": min(10, mb), "batch_wait_timeout_s": 0.01}
    for name, grid in (("triton best", triton_grid(case, settings)), ("ray best", ray_grid(case, settings))):
        rate, params = grid_best(case, grid, settings)
        results[name] = PolicyResult(rate, params)
        makes[name] = grid[_key_of(params)][1]
    ref = results["slo"].capacity
    for name, make in makes.items():
        for mult in settings.curve_points:
            rate = mult * ref
            if rate <= 0:
                continue
            att = float(
                np.mean([run_once(case, make, rate, s, settings.duration).attainment for s in full[:1]])
            )
            results[name].curve.append((rate, att))
    return results


def _key_of(params: dict[str, Any]) -> str:
    if "max_queue_delay_s" in params:
        return f"{params['max_batch_size']}/{params['max_queue_delay_s']}/{params['timeout_action']}"
    return f"{params['max_batch_size']}/{params['batch_wait_timeout_s']}"


def load_cases(profiles_path: Path | None, quick: bool) -> tuple[list[Case], str]:
    """The cases to run and where their profiles come from."""
    if profiles_path is not None:
        from sloserve.core.profile_io import load_profiles

        pset = load_profiles(profiles_path)
        profiles: list[ModelProfile] = list(pset.profiles.values())
        source = f"measured profiles from {profiles_path}"
    else:
        profiles = list(BUILTIN_PROFILES)
        source = "published-style affine CPU profiles (built in, not measured)"
    labels = ("tight", "loose") if quick else ("tight", "loose", "mixed")
    cases = [Case(p, label, slos_for(p)[label]) for p in profiles for label in labels]
    return cases, source


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sloserve experiment batching``."""
    p = subparsers.add_parser(
        "batching",
        help="SLO-aware batcher vs Triton / Ray Serve / Clipper batching: capacity at 99% attainment",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--out", type=Path, default=Path("results/batching"), help="output directory")
    p.add_argument("--quick", action="store_true", help="small run: short runs, one seed, tiny grids")
    p.add_argument("--profiles", type=Path, help="profile file (sloserve-profile/v1); default: built-in")
    p.add_argument("--duration", type=float, help="simulated seconds per run")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (capacity = mean attainment over them)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from sloserve.sim.report import plot_attainment_vs_load, write_json

    settings = QUICK if args.quick else Settings()
    if args.duration is not None:
        settings = replace(settings, duration=args.duration)
    if args.seeds:
        settings = replace(settings, seeds=tuple(args.seeds))
    cases, source = load_cases(args.profiles, args.quick)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with Progress(transient=True) as bar:
        task = bar.add_task("capacity searches", total=len(cases))
        for case in cases:
            bar.update(task, description=f"{case.profile.model} {case.label}")
            results = evaluate(case, settings)
            rows.append(_row(case, results))
            if not args.no_plots:
                plot_attainment_vs_load(
                    {name: r.curve for name, r in results.items()},
                    out / f"attainment_{case.profile.model}_{case.label}.png",
                    target=settings.target,
                    title=f"{case.profile.model}, {case.label} SLO {_slo_text(case)}",
                )
            bar.advance(task)
    table = Table(title=f"Capacity at {settings.target:.0%} attainment (req/s) — {source}")
    for col in ("model", "SLO", "slo", "triton def", "triton best", "ray def", "ray best", "aimd"):
        table.add_column(col, justify="left" if col in ("model", "SLO") else "right")
    table.add_column("× triton def", justify="right")
    table.add_column("× triton best", justify="right")
    for r in rows:
        c = r["capacity"]
        table.add_row(
            r["model"],
            f"{r['case']} {r['slo_ms']}",
            *(f"{c[k]:.0f}" for k in ("slo", "triton default", "triton best", "ray default", "ray best")),
            f"{c['clipper aimd']:.0f}",
            _ratio(r["ratio_vs_triton_default"], 1.5),
            _ratio(r["ratio_vs_triton_best"], 1.0),
        )
    Console(width=160).print(table)
    met = all(r["ratio_vs_triton_default"] >= 1.5 and r["ratio_vs_triton_best"] >= 1.0 for r in rows)
    verdict = "met" if met else "NOT met"
    print(f"targets (>= 1.5x Triton default and >= 1.0x Triton best at every point): {verdict}")
    write_json(
        out / "results.json",
        {"rows": rows, "targets_met": met},
        experiment="batching",
        profiles=source,
        workload=f"Poisson arrivals, {settings.duration:g} s per run, one 1-core instance, "
        f"lognormal service noise CV {NOISE_CV}",
        seeds=list(settings.seeds),
        target=settings.target,
    )
    print(f"wrote {out / 'results.json'}")
    return 0


def _slo_text(case: Case) -> str:
    return "/".join(f"{s * 1e3:g}" for s in case.slos) + " ms"


def _ratio(x: float, target: float) -> str:
    text = f"{x:.2f}" if math.isfinite(x) else "inf"
    return text if x >= target else f"[red]{text}[/red]"


def _row(case: Case, results: dict[str, PolicyResult]) -> dict[str, Any]:
    caps = {name: r.capacity for name, r in results.items()}
    slo = caps["slo"]

    def ratio(base: float) -> float:
        return slo / base if base > 0 else (math.inf if slo > 0 else 1.0)

    return {
        "model": case.profile.model,
        "case": case.label,
        "slo_ms": _slo_text(case),
        "capacity": caps,
        "settings": {name: r.settings for name, r in results.items() if r.settings},
        "curves": {name: r.curve for name, r in results.items()},
        "ratio_vs_triton_default": ratio(caps["triton default"]),
        "ratio_vs_triton_best": ratio(caps["triton best"]),
    }


__all__ = ["BUILTIN_PROFILES", "Case", "Settings", "evaluate", "register"]
