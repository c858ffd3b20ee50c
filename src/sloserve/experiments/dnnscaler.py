"""``sloserve experiment dnnscaler``: DNNScaler vs Clipper's AIMD in the simulator (SEEDS §3).

**Models.** (1) The 18 DNN/dataset pairs of the published instance table: one
:class:`~sloserve.core.profiles.AffineProfile` each, whose slowdown ``s(k)`` is the measured
``latency(k) / latency(1)`` and whose batch curve is derived from the same row (the table has no
batch measurements). Fitting ``latency(k) ≈ h + g·k`` over k = 6..10 (``h, g >= 0``) gives ``g``, the
device time each extra co-located inference adds once the device is saturated. Two batch models
(:class:`BatchCurve`):

- ``pipeline`` (default), the authors' testbed: the rest of a lone request, ``L1 - g``, is host work
  (JPEG decode and resize in a ``tf.data`` map without parallel calls, the session's overhead) that
  a batch does image by image, while co-located instances do it side by side on their own cores;
  the device part of a batch item is ``η·g`` (``η`` = 0.5 by default: a GPU runs an item of a batch
  at half a lone inference's device time). So ``latency(b) = L1 + (b - 1)·(L1 - g + η·g)``. This model
  reproduces the published spread (batching gains little on the MobileNets, up to ~13x less than
  co-location, against the published "up to 14x").
- ``saturation``: a batch item costs what a co-located inference costs at saturation,
  ``h + η·g`` (the most favourable reading for batching; the host work overlaps in a batch too).

(2) A set of batching-friendly GPU-like affine profiles (synthetic, stated in
:data:`BATCH_PROFILES`) whose co-located instances overlap only 20% (``s(k) = 1 + 0.8·(k - 1)``).
(3) Measured demo-model profiles written by ``sloserve profile`` when such files exist
(``results/profiles/*.yaml`` or ``--profiles``): batch latency as measured at one instance,
co-location by the measured ``s(k)`` (not the per-point medians at k instances, which time
slicing makes optimistic when instances outnumber cores); a profile without ``s(k)`` is refused.

**SLOs.** The published ones (the authors' run scripts); for the three pairs without one, the
sibling model's SLO scaled by the batch-1 latency ratio; for (2) and (3), the median multiple of
the batch-1 latency among the published SLOs (``median(L / L1)``, about 5) times the model's own.

**Load.** Closed loop, as the authors ran it: a backlog of requests (their image folder) waits on
the client side, and a batch is sent the moment an instance can take it, so a request's latency is
its batch's service time (:class:`ClosedLoopBatcher`). Service times get lognormal noise (CV 5%).

**Measures.** *Steady state*: a run of ``settle + measure`` simulated seconds (settle long enough
for AIMD's +4 per 3 s to reach the largest batch); throughput, mean and p95 latency over the
measure window, and the windows in it (3 s, or 2 SLOs for slow models) whose mean latency
exceeded L (breaches after settling). *Job* (the authors' protocol): the time to serve a fixed job
of 15,000 requests (20,000 for Caltech-256, the sizes of their image folders; 5,000 for measured
profiles) from a cold start, throughput = job / makespan. Policies: DNNScaler as published (the
detector with k = 4, then the chosen scaler steering the mean latency), the same steering the p95,
and Clipper's AIMD (p95). The multi-tenancy start count is predicted by rank-2 completion from
k = 1 and k = 8 with the model's own row left out of the known matrix.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sloserve import cli_args
from sloserve.core.profiles import AffineProfile, ModelProfile, TabulatedProfile
from sloserve.core.request import Batch
from sloserve.policies.base import PolicyContext
from sloserve.policies.batching import QueueScheduler
from sloserve.policies.dnnscaler import (
    Approach,
    Detection,
    detect_from_profile,
    initial_instances,
    predict_instance_latencies,
)
from sloserve.policies.dnnscaler_data import (
    PUBLISHED_INSTANCE_LATENCY_MS,
    PUBLISHED_SLO_MS,
    published_matrix,
    published_slo_ms,
)

MS = 1e-3
MAX_BATCH = 127
"""Largest batch size the batching controllers may choose (the authors' 1..127)."""

BATCH_PROFILES: tuple[tuple[str, float, float], ...] = (
    ("gpu-affine-small", 2.0, 0.25),
    ("gpu-affine-resnet50", 6.0, 1.0),
    ("gpu-affine-inception", 20.0, 2.5),
    ("gpu-affine-large", 60.0, 8.0),
)
"""Synthetic batching-friendly profiles: (name, alpha_ms, beta_ms) of ``alpha + beta·b``."""
BATCH_PROFILE_OVERLAP = 0.8
"""``s(k) = 1 + 0.8·(k - 1)`` for :data:`BATCH_PROFILES`: co-located instances overlap 20%."""


# ------------------------------------------------------------------------------------------------
# cases


@dataclass(frozen=True)
class Case:
    """One model at one SLO."""

    name: str
    family: str
    """``published`` (the instance table), ``batch-profile`` (synthetic) or ``measured``."""
    profile: ModelProfile
    slo: float
    """Seconds."""
    slo_source: str
    job: int = 15000
    """Requests in the job-style run."""
    known: np.ndarray | None = None
    """Rows (latency at k = 1..10) the completion may use; None = the whole published table."""
    max_batch: int = MAX_BATCH


def median_slo_ratio() -> float:
    """Median of published SLO / batch-1 latency over the published pairs (about 5)."""
    lat = {(d, s): row[0] for d, s, row in PUBLISHED_INSTANCE_LATENCY_MS}
    return float(np.median([slo / lat[key] for key, slo in PUBLISHED_SLO_MS.items()]))


@dataclass(frozen=True)
class BatchCurve:
    """How the batch curve of a published row is derived (see the module docstring)."""

    model: str = "pipeline"
    """``pipeline`` (host work per image, serial in a batch) or ``saturation``."""
    efficiency: float = 0.5
    """η: device cost of a batch item relative to a lone inference's device time ``g``."""

    def __post_init__(self) -> None:
        if self.model not in BATCH_MODELS:
            raise ValueError(f"batch model must be one of {BATCH_MODELS}, got {self.model!r}")
        if not 0.0 < self.efficiency <= 1.0:
            raise ValueError(f"batch efficiency must be in (0, 1], got {self.efficiency}")


BATCH_MODELS = ("pipeline", "saturation")


def table_profile(name: str, latency_ms: Sequence[float], curve: BatchCurve = BatchCurve()) -> AffineProfile:
    """The profile of a published row (see the module docstring: s(k) measured, batch curve derived)."""
    lat = np.asarray(latency_ms, dtype=float)
    ks = np.arange(6, len(lat) + 1, dtype=float)
    from scipy.optimize import lsq_linear

    h, g = lsq_linear(np.c_[np.ones_like(ks), ks], lat[5:], bounds=(0.0, np.inf)).x
    host = max(lat[0] - g, 0.0) if curve.model == "pipeline" else h
    beta = host + curve.efficiency * g
    alpha = max(lat[0] - beta, 0.0)
    return AffineProfile(
        model=name,
        alpha=alpha * MS,
        beta=beta * MS,
        hardware="gpu-published",
        max_batch=MAX_BATCH,
        slowdown=tuple(float(v) for v in lat / lat[0]),
    )


def published_cases(curve: BatchCurve = BatchCurve()) -> list[Case]:
    """The 18 pairs of the published table."""
    table = published_matrix()
    out = []
    for i, (dnn, dataset, row) in enumerate(PUBLISHED_INSTANCE_LATENCY_MS):
        slo_ms, published = published_slo_ms(dnn, dataset)
        out.append(
            Case(
                name=f"{dnn}/{dataset}",
                family="published",
                profile=table_profile(f"{dnn}/{dataset}", row, curve),
                slo=slo_ms * MS,
                slo_source="published" if published else "derived (sibling model x latency ratio)",
                job=20000 if dataset == "Caltech256" else 15000,
                known=np.delete(table, i, axis=0),
            )
        )
    return out


def _derived_slo(profile: ModelProfile) -> tuple[float, str]:
    ratio = median_slo_ratio()
    return ratio * profile.latency(1, 1, 1), f"derived ({ratio:.2f} x batch-1 latency)"


def batch_profile_cases() -> list[Case]:
    """The synthetic batching-friendly profiles."""
    out = []
    for name, alpha, beta in BATCH_PROFILES:
        slowdown = tuple(1.0 + BATCH_PROFILE_OVERLAP * (k - 1) for k in range(1, 11))
        prof = AffineProfile(name, alpha * MS, beta * MS, "gpu-synthetic", MAX_BATCH, slowdown=slowdown)
        slo, source = _derived_slo(prof)
        out.append(Case(name, "batch-profile", prof, slo, source))
    return out


def measured_cases(paths: Sequence[Path]) -> list[Case]:
    """Profiles written by ``sloserve profile`` (each file may hold several); a tabulated one is
    used at one instance, with its measured slowdown ``s(k)`` for co-location. A profile without
    one (measured at one instance only) is a ConfigError: multi-tenancy would look free."""
    from sloserve.core.config import ConfigError
    from sloserve.core.profile_io import load_profiles

    out = []
    for path in paths:
        for measured in load_profiles(path).profiles.values():
            if len(getattr(measured, "slowdown", ())) < 2:
                raise ConfigError(
                    f"{path}: model {measured.model!r} ({measured.hardware}): no slowdown s(k) for "
                    "co-located instances (a profile measured at one instance), so multi-tenancy "
                    "would look free; measure it with `sloserve profile MODEL --instances 1,2,...` "
                    "(up to the instance counts to compare, e.g. 1,2,3,4)"
                )
            prof = measured
            if isinstance(measured, TabulatedProfile) and measured.slowdown:
                # co-location by the measured s(k) only: per-point medians at more instances than
                # cores hide the time slicing (see policies.dnnscaler.colocated_latency)
                alone = tuple(p for p in measured.points if p.instances == 1)
                if not alone:
                    raise ConfigError(
                        f"{path}: model {measured.model!r} ({measured.hardware}): a slowdown but no "
                        "points at 'instances: 1' (the batch curve is taken at one instance)"
                    )
                prof = TabulatedProfile(measured.model, alone, measured.hardware, measured.slowdown)
            slo, source = _derived_slo(prof)
            name = f"{prof.model}@{prof.hardware}"
            out.append(Case(name, "measured", prof, slo, source, job=5000, max_batch=prof.max_batch))
    return out


def default_profile_files() -> list[Path]:
    """``results/profiles/*.yaml|*.json`` (where ``sloserve profile`` writes), if any."""
    root = Path("results") / "profiles"
    return sorted([*root.glob("*.yaml"), *root.glob("*.json")]) if root.is_dir() else []


# ------------------------------------------------------------------------------------------------
# closed-loop load


class ClosedLoopBatcher(QueueScheduler):
    """A closed-loop client in front of the model: requests wait client-side (not yet sent) and a
    batch of up to ``max_batch`` is sent the moment an instance is free, its requests stamped as
    arriving then. So latency = the batch's service time, as the authors measured it. A partial
    batch is sent only after one more look an instant later (so a backlog arriving at one time is
    complete before the first batch is cut)."""

    def __init__(self, slo: float, max_batch: int = 1) -> None:
        super().__init__(max_batch)
        self.slo = slo
        self._looked_at = -math.inf

    def next_batch(self, now: float, instance: Any, drops: list[Any]) -> Batch | float | None:
        n = min(self.queue.rows, self.max_batch)
        if n == 0:
            return None
        if n < self.max_batch and self._looked_at < now:
            self._looked_at = math.nextafter(now, math.inf)
            return self._looked_at
        batch = self.take(n, now, drops)
        if batch is None:
            return None
        sent = tuple(replace(r, arrival=now, deadline=now + self.slo) for r in batch.requests)
        return Batch(sent)


def _backlog(n: int) -> Any:
    from sloserve.sim.workload import Workload

    return Workload(np.zeros(n), duration=0.0, description=f"closed loop: backlog of {n} requests at t=0")


POLICIES: tuple[str, ...] = ("dnnscaler", "dnnscaler_p95", "aimd")
"""DNNScaler as published (steers the mean latency), DNNScaler steering p95, Clipper's AIMD (p95)."""


@dataclass(frozen=True)
class Settings:
    """Run lengths and noise."""

    settle: float = 120.0
    """Seconds before the steady-state measurement starts (AIMD needs ~95 s to reach 127)."""
    measure: float = 60.0
    noise_cv: float = 0.05
    window: float = 3.0
    """Window (s) over which breaches after settling are counted (at least 2 SLOs)."""
    seed: int = 0
    job_scale: float = 1.0
    """Multiplies each case's job size (``--quick`` shrinks it)."""

    def times_for(self, case: Case) -> tuple[float, float]:
        """(settle, measure) scaled up for slow models (at least 30 SLOs each)."""
        return max(self.settle, 30 * case.slo), max(self.measure, 30 * case.slo)


@dataclass
class PolicyRun:
    """What one policy did on one case."""

    policy: str
    approach: str
    start_instances: int
    final_batch: int
    final_instances: int
    throughput: float
    """Requests per second answered in the steady-state window."""
    mean_latency: float
    p95_latency: float
    breach_windows: int
    """Windows of the steady-state period whose mean latency exceeded L."""
    windows: int
    job_throughput: float
    """Job size / makespan (cold start included)."""
    job_p95_latency: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def meets_slo(self) -> bool:
        """No window's mean latency over L after settling (the authors' criterion)."""
        return self.breach_windows == 0


def _build(case: Case, policy: str) -> tuple[Any, int, str, dict[str, Any]]:
    """(scaler, initial instances, approach, extra) for ``policy`` on ``case``; fresh objects."""
    from sloserve.policies.registry import make_scaler

    ctx = PolicyContext(model=case.name, max_batch=case.max_batch, profile=case.profile, slo=case.slo)
    if policy == "aimd":
        return make_scaler("aimd", ctx), 1, Approach.BATCHING.value, {}
    params: dict[str, Any] = {"statistic": "p95" if policy == "dnnscaler_p95" else "mean"}
    det: Detection = detect_from_profile(case.profile, 4)
    extra: dict[str, Any] = {
        "batching_gain_k4": round(det.batching_gain, 3),
        "multi_tenancy_gain_k4": round(det.multi_tenancy_gain, 3),
    }
    if det.approach is Approach.BATCHING:
        return make_scaler("dnnscaler_batch", ctx, params), 1, det.approach.value, extra
    lat1 = case.profile.latency(1, 1, 1) / MS
    lat8 = case.profile.latency(1, 1, 8) / MS
    known = case.known if case.known is not None else published_matrix()
    predicted = predict_instance_latencies(lat1, lat8, known)
    k0 = initial_instances(predicted, case.slo / MS)
    extra["predicted_latency_ms"] = [round(v, 3) for v in predicted]
    scaler = make_scaler("dnnscaler_mt", ctx, params | {"initial_instances": k0})
    return scaler, k0, det.approach.value, extra


def _setup(case: Case, policy: str, settings: Settings) -> tuple[Any, int, str, dict[str, Any]]:
    from sloserve.sim import ModelSetup

    scaler, k0, approach, extra = _build(case, policy)
    setup = ModelSetup(
        name=case.name,
        profile=case.profile,
        scheduler=ClosedLoopBatcher(case.slo, 1),
        instances=k0,
        hardware=case.profile.hardware,
        scaler=scaler,
        noise_cv=settings.noise_cv,
    )
    return setup, k0, approach, extra


def _capacity(case: Case) -> float:
    """An upper bound of the throughput any setting reaches (sizes the backlog)."""
    p = case.profile
    best_b = max(b / p.latency(b, 1, 1) for b in range(1, case.max_batch + 1))
    best_k = max(k / p.latency(1, 1, k) for k in range(1, 11))
    return max(best_b, best_k)


def run_policy(case: Case, policy: str, settings: Settings) -> PolicyRun:
    """Steady-state run and job run of ``policy`` (one of :data:`POLICIES`) on ``case``."""
    from sloserve.sim import Simulation, simulate

    settle, measure = settings.times_for(case)
    end = settle + measure
    backlog = math.ceil(1.5 * _capacity(case) * end) + 1000
    setup, k0, approach, extra = _setup(case, policy, settings)
    sim = Simulation(setup, _backlog(backlog), seed=settings.seed, record=True)
    sim.run_until(lambda: sim.loop.now >= end)
    result = sim.finish()
    o = result.outcomes
    assert o is not None
    done = o.completed & (o.finish >= settle) & (o.finish < end)
    lat = (o.finish - o.start)[done]
    window = max(settings.window, 2 * case.slo)
    n_win = max(1, int(measure // window))
    idx = np.floor((o.finish[done] - settle) / window).astype(int)
    breaches = sum(1 for w in range(n_win) if (sel := lat[idx == w]).size and float(sel.mean()) > case.slo)
    tl = result.timeline

    job_n = max(100, int(case.job * settings.job_scale))
    job_setup, _, _, _ = _setup(case, policy, settings)
    job = simulate(job_setup, _backlog(job_n), seed=settings.seed, record=True)
    jo = job.outcomes
    assert jo is not None
    makespan = float(np.nanmax(jo.finish))
    job_lat = (jo.finish - jo.start)[jo.completed]
    return PolicyRun(
        policy=policy,
        approach=approach,
        start_instances=k0,
        final_batch=int(tl.max_batch[-1]) if len(tl.max_batch) else 1,
        final_instances=int(tl.instances[-1]) if len(tl.instances) else k0,
        throughput=float(len(lat) / measure),
        mean_latency=float(lat.mean()) if len(lat) else math.nan,
        p95_latency=float(np.percentile(lat, 95)) if len(lat) else math.nan,
        breach_windows=breaches,
        windows=n_win,
        job_throughput=job_n / makespan if makespan > 0 else math.nan,
        job_p95_latency=float(np.percentile(job_lat, 95)) if len(job_lat) else math.nan,
        extra=extra | {"settle_s": settle, "measure_s": measure, "window_s": window, "job_requests": job_n},
    )


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def run_case(case: Case, settings: Settings) -> dict[str, Any]:
    """Every policy on one case, and the throughput ratios to AIMD."""
    runs = {p: run_policy(case, p, settings) for p in POLICIES}
    aimd = runs["aimd"]
    return {
        "model": case.name,
        "family": case.family,
        "slo_ms": round(case.slo / MS, 3),
        "slo_source": case.slo_source,
        "approach": runs["dnnscaler"].approach,
        "ratio": _ratio(runs["dnnscaler"].throughput, aimd.throughput),
        "ratio_p95": _ratio(runs["dnnscaler_p95"].throughput, aimd.throughput),
        "job_ratio": _ratio(runs["dnnscaler"].job_throughput, aimd.job_throughput),
        **{
            p: asdict(r) | {"meets_slo": r.meets_slo, "p95_within_slo": r.p95_latency <= case.slo}
            for p, r in runs.items()
        },
    }


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Average gains (mean ratio - 1, in %) overall and per family; SLO breaches after settling."""

    def gain(key: str, sel: Sequence[dict[str, Any]]) -> float | None:
        vals = [r[key] for r in sel if math.isfinite(r[key])]
        return round((float(np.mean(vals)) - 1) * 100, 1) if vals else None

    def gains(sel: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {
            "models": len(sel),
            "average_gain_pct": gain("ratio", sel),
            "average_gain_p95_variant_pct": gain("ratio_p95", sel),
            "average_job_gain_pct": gain("job_ratio", sel),
        }

    families = sorted({r["family"] for r in rows})
    return {
        **gains(rows),
        "max_ratio": round(max(r["ratio"] for r in rows), 3) if rows else None,
        "max_job_ratio": round(max(r["job_ratio"] for r in rows), 3) if rows else None,
        "by_family": {f: gains([r for r in rows if r["family"] == f]) for f in families},
        "mean_over_slo_windows": {p: [r["model"] for r in rows if not r[p]["meets_slo"]] for p in POLICIES},
        "p95_over_slo": {p: [r["model"] for r in rows if not r[p]["p95_within_slo"]] for p in POLICIES},
        "approaches": {a: sum(1 for r in rows if r["approach"] == a) for a in ("batching", "multi_tenancy")},
    }


def matrix_completion_report() -> dict[str, Any]:
    """Leave-one-row-out MAPE of the rank-2 completion on the published table (k = 1, 8 known)."""
    from sloserve.core.matrix_completion import leave_one_row_out

    table = published_matrix()
    res = leave_one_row_out(table, [0, 7], rank=2)
    raw = leave_one_row_out(table, [0, 7], rank=2, normalize_rows=False)
    return {
        "mape_pct": round(res.mape, 2),
        "mape_pct_without_row_normalisation": round(raw.mape, 2),
        "published_mape_pct": 12.5,
        "row_mape_pct": {
            f"{d}/{s}": round(e, 2)
            for (d, s, _), e in zip(PUBLISHED_INSTANCE_LATENCY_MS, res.row_mape, strict=True)
        },
    }


# ------------------------------------------------------------------------------------------------
# report


def plot_ratios(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Bar plot: DNNScaler / AIMD throughput per model, approach marked by colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(8.0, 0.5 * len(rows) + 2), 5.0))
    x = np.arange(len(rows))
    colors = ["tab:orange" if r["approach"] == "multi_tenancy" else "tab:blue" for r in rows]
    for off, key, alpha, hatch, label in (
        (-0.27, "ratio", 1.0, None, "steady state (mean-steered, as published)"),
        (0.0, "ratio_p95", 0.7, "..", "steady state (p95-steered)"),
        (0.27, "job_ratio", 0.45, "//", "job from cold start (authors' protocol)"),
    ):
        ax.bar(x + off, [r[key] for r in rows], 0.27, color=colors, alpha=alpha, hatch=hatch, label=label)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(x, [r["model"] for r in rows], rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("throughput DNNScaler / Clipper AIMD")
    ax.set_title("DNNScaler vs AIMD, closed loop (orange: multi-tenancy chosen, blue: batching)")
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def table(rows: Sequence[dict[str, Any]], summary: dict[str, Any], mc: dict[str, Any]) -> Any:
    """Rich table of the per-model results (throughput in req/s, latency in ms)."""
    from rich.table import Table

    t = Table(
        title=f"DNNScaler vs Clipper AIMD: average gain {summary['average_gain_pct']}% "
        f"(p95-steered {summary['average_gain_p95_variant_pct']}%, job {summary['average_job_gain_pct']}%); "
        f"completion LOO MAPE {mc['mape_pct']}%"
    )
    for col in (
        "model", "SLO", "chose", "setting", "DNNS r/s", "p95", "AIMD r/s", "b", "p95", "ratio", "p95-st",
        "job", "over L D/A",
    ):  # fmt: skip
        t.add_column(col, justify="left" if col in ("model", "chose", "setting") else "right")
    for r in rows:
        d, a = r["dnnscaler"], r["aimd"]
        mt = r["approach"] == "multi_tenancy"
        setting = f"k={d['start_instances']}->{d['final_instances']}" if mt else f"b={d['final_batch']}"
        t.add_row(
            r["model"], f"{r['slo_ms']:g}", "MT" if mt else "batch", setting,
            f"{d['throughput']:.1f}", f"{d['p95_latency'] * 1e3:.1f}", f"{a['throughput']:.1f}",
            str(a["final_batch"]), f"{a['p95_latency'] * 1e3:.1f}", f"{r['ratio']:.2f}",
            f"{r['ratio_p95']:.2f}", f"{r['job_ratio']:.2f}", f"{d['breach_windows']}/{a['breach_windows']}",
        )  # fmt: skip
    return t


def run_experiment(
    cases: Sequence[Case],
    settings: Settings,
    out: Path,
    *,
    curve: BatchCurve = BatchCurve(),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every case, write ``dnnscaler.json`` and ``ratios.png`` under ``out``; return the document."""
    from sloserve.sim.report import write_json

    t0 = time.perf_counter()
    rows = []
    for case in cases:
        if progress is not None:
            progress(case.name)
        rows.append(run_case(case, settings))
    summary = summarise(rows)
    mc = matrix_completion_report()
    doc = {"summary": summary, "matrix_completion": mc, "results": rows}
    write_json(
        out / "dnnscaler.json",
        doc,
        experiment="dnnscaler",
        workload="closed loop: client-side backlog, a batch sent as soon as an instance is free "
        "(latency = service time); lognormal service noise",
        seed=settings.seed,
        settings=asdict(settings),
        batch_curve=asdict(curve),
        wall_seconds=round(time.perf_counter() - t0, 1),
    )
    plot_ratios(rows, out / "ratios.png")
    return doc


def select_cases(
    *, quick: bool, curve: BatchCurve, profile_files: Sequence[Path], only: Sequence[str] | None = None
) -> list[Case]:
    """The cases of a run: ``only`` (name fragments) selects among all; else ``--quick`` keeps four
    published pairs, one synthetic profile and every measured one (of ``profile_files``)."""
    cases = published_cases(curve) + batch_profile_cases() + measured_cases(profile_files)
    if only:
        return [c for c in cases if any(s.lower() in c.name.lower() for s in only)]
    if quick:
        keep = {
            "MobileNetV1-0.25/ImageNet",
            "InceptionV1/ImageNet",
            "ResNetV2-50/ImageNet",
            "PNASNet-5-Mobile/ImageNet",
            "gpu-affine-resnet50",
        }
        cases = [c for c in cases if c.name in keep or c.family == "measured"]
    return cases


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sloserve experiment dnnscaler``."""
    p = subparsers.add_parser(
        "dnnscaler",
        help="DNNScaler (batching or multi-tenancy) vs Clipper AIMD: throughput under the SLO",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument(
        "--out", type=cli_args.output_dir, default=Path("results/dnnscaler"), help="output directory"
    )
    p.add_argument(
        "--quick", action="store_true", help="five models (and the measured ones), short runs (seconds)"
    )
    p.add_argument("--seed", type=cli_args.seed, default=0, help="seed of the service-time noise")
    p.add_argument(
        "--profiles",
        type=Path,
        nargs="*",
        help="profile files of measured models (default results/profiles/*)",
    )
    p.add_argument(
        "--batch-model",
        choices=BATCH_MODELS,
        default="pipeline",
        help="batch curve of the published rows: host work per image as in the authors' pipeline "
        "(default), or an item costs a co-located inference at saturation",
    )
    p.add_argument(
        "--batch-efficiency",
        type=cli_args.fraction,
        default=0.5,
        help="η, in (0, 1]: device cost of a batch item relative to a lone inference's device time",
    )
    p.add_argument("--models", nargs="+", help="only models whose name contains one of these")
    p.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    console = Console(width=max(Console().width, 150))
    files = default_profile_files() if args.profiles is None else list(args.profiles)
    settings = Settings(seed=args.seed)
    try:
        curve = BatchCurve(args.batch_model, args.batch_efficiency)
    except ValueError as exc:
        console.print(f"error: {exc}")
        return 2
    if args.quick:
        settings = replace(settings, settle=45.0, measure=15.0, job_scale=0.2)
    cases = select_cases(quick=args.quick, curve=curve, profile_files=files, only=args.models)
    if not cases:
        console.print("no models selected")
        return 2
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("simulating", total=len(cases))

        def advance(name: str) -> None:
            bar.update(task, advance=1, description=f"simulating {name}")

        doc = run_experiment(cases, settings, args.out, curve=curve, progress=advance)
    console.print(table(doc["results"], doc["summary"], doc["matrix_completion"]))
    console.print(
        f"published rows: batch model {curve.model!r}, η = {curve.efficiency:g} "
        "(--batch-model/--batch-efficiency; see `sloserve experiment dnnscaler --help`)"
    )
    s = doc["summary"]
    console.print(
        f"average throughput gain over AIMD: {s['average_gain_pct']}% (steady state, as published), "
        f"{s['average_gain_p95_variant_pct']}% (p95-steered), {s['average_job_gain_pct']}% (job); "
        f"mean over L after settling (DNNScaler): {s['mean_over_slo_windows']['dnnscaler'] or 'none'}; "
        f"p95 over L (DNNScaler p95-steered): {s['p95_over_slo']['dnnscaler_p95'] or 'none'}"
    )
    console.print(f"wrote {args.out / 'dnnscaler.json'} and {args.out / 'ratios.png'}")
    return 0
