"""The Sponge comparison against the real server, beside the simulator's prediction for the same load.

``sloserve experiment sponge --server`` measures a demo model's profile on this machine (or reads
``--server-profile``), then for each policy (sponge, horizontal, static) starts ``sloserve serve``
on a temporary repository whose ``config.yaml`` names scheduler ``slo`` and the policy's scaler,
replays one load level — Poisson arrivals, each request's ``timeout`` its dynamic budget (SLO minus
the network delay of its payload at the bandwidth of its second) — with the open-loop generator,
and samples the server's ``sloserve_instance_cores`` gauge twice a second for the core-seconds; at
the end it reads how much longer the batches ran than the profile predicts for them
(``sloserve_batch_compute_seconds_total`` over ``sloserve_batch_profile_seconds_total``). The
simulator runs the same arrivals and budgets with the measured profile. What differs between the
two (server overhead, interference from other processes, ORT thread changes) is the finding.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sloserve.core.profiles import ModelProfile


@dataclass(frozen=True)
class ServerSettings:
    """One load level on one demo model."""

    model: str = "mobilenet_v2"
    rate: float = 20.0
    """Mean arrival rate, req/s."""
    duration: float = 40.0
    """Seconds of load per policy."""
    slo: float = 0.25
    """End-to-end SLO (network delay included), seconds."""
    payload_bytes: float = 150e3
    bandwidth_bps: float = 1.5e6
    bandwidth_cv: float = 0.4
    max_cores: int = 2
    """Cores Sponge may give the instance (and 1-core replicas horizontal may start)."""
    max_batch: int = 8
    seed: int = 0


QUICK_SERVER = ServerSettings(duration=10.0)


def measure_profile(model: str, out: Path, quick: bool) -> ModelProfile:
    """Profile ``model`` (a demo model name) over batches x threads 1..2 on one instance."""
    from sloserve.core.profile_io import save_profiles
    from sloserve.runtime.profiler import ProfileGrid, profile_model, resolve_model

    grid = ProfileGrid(batches=(1, 2, 4, 8), threads=(1, 2), instances=(1,), repeats=10 if quick else 30)
    profile = profile_model(resolve_model(model), grid)
    save_profiles([profile], out)
    return profile


def workload(s: ServerSettings) -> Any:
    """Poisson arrivals with dynamic budgets (the simulator's generators)."""
    from sloserve.sim import workload as wl
    from sloserve.sim.workload import NetworkDelayModel

    w = wl.poisson(s.rate, s.duration, seed=s.seed)
    w = wl.with_payload(w, s.payload_bytes, seed=s.seed + 1)
    net = NetworkDelayModel.synthetic(s.bandwidth_bps, s.bandwidth_cv, int(s.duration) + 2, seed=s.seed + 2)
    return wl.with_network_slo(w, s.slo, net)


def policy_config(s: ServerSettings, policy: str, static: tuple[int, int]) -> dict[str, Any]:
    """``config.yaml`` fields (over the demo model's own) for ``policy``."""
    common: dict[str, Any] = {
        "max_batch_size": s.max_batch,
        "preferred_batch_size": [],
        "profile": "profile.yaml",
        "slo_ms": s.slo * 1e3,
        "scheduler": {"name": "slo"},
    }
    if policy == "sponge":
        scaler = {"name": "sponge", "params": {"max_cores": s.max_cores}}
        return {**common, "instance_group": {"count": 1, "threads": 1}, "scaler": scaler}
    if policy == "horizontal":
        scaler = {"name": "horizontal", "params": {"max_replicas": s.max_cores}}
        return {
            **common,
            "instance_group": {"count": 1, "threads": 1},
            "scaler": scaler,
            "autoscaling": {"min_replicas": 1, "max_replicas": s.max_cores},
        }
    cores, batch = static
    return {
        **common,
        "instance_group": {"count": 1, "threads": cores},
        "scheduler": {"name": "slo", "params": {"max_batch_size": batch}},
    }


def make_repository(
    s: ServerSettings, policy: str, profile_file: Path, static: tuple[int, int], root: Path
) -> Path:
    """A one-model repository for ``policy`` under ``root``."""
    from sloserve.runtime.demo.repository import ensure_demo_repository

    demo = Path(ensure_demo_repository()) / s.model
    repo = root / policy
    target = repo / s.model
    shutil.copytree(demo, target)
    shutil.copy(profile_file, target / "profile.yaml")
    config = yaml.safe_load((target / "config.yaml").read_text(encoding="utf-8"))
    config.update(policy_config(s, policy, static))
    (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return repo


def _samples(metrics_url: str, name: str, model: str) -> list[float] | None:
    """Values of metric ``name`` for ``model`` from the Prometheus endpoint (None when unreadable)."""
    try:
        with urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=1) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    line = re.compile(rf'^{re.escape(name)}\{{[^}}]*model="(?P<m>[^"]+)"[^}}]*\}}\s+(?P<v>[0-9.eE+-]+)', re.M)
    return [float(m["v"]) for m in line.finditer(text) if m["m"] == model]


def cores_now(metrics_url: str, model: str) -> float:
    """Sum of the model's instance cores from the Prometheus endpoint (NaN when unreadable)."""
    values = _samples(metrics_url, "sloserve_instance_cores", model)
    return float("nan") if values is None else sum(values)


def batch_time_ratio(metrics_url: str, model: str) -> float:
    """How much longer the model's batches ran than its profile predicts for them (NaN if unknown)."""
    compute = _samples(metrics_url, "sloserve_batch_compute_seconds_total", model)
    profiled = _samples(metrics_url, "sloserve_batch_profile_seconds_total", model)
    if not compute or not profiled or profiled[0] <= 0:
        return float("nan")
    return compute[0] / profiled[0]


def violations_per_second(arrivals: np.ndarray, met: np.ndarray, duration: float) -> list[int]:
    """Requests that missed their deadline, by the second they arrived in (``ceil(duration)`` bins)."""
    bins = max(1, int(np.ceil(duration)))
    missed = np.asarray(arrivals)[~np.asarray(met, dtype=bool)]
    counts = np.bincount(np.minimum(missed.astype(int), bins - 1), minlength=bins)
    return [int(c) for c in counts]


def run_on_server(s: ServerSettings, repo: Path, w: Any) -> dict[str, Any]:
    """Serve ``repo``, replay ``w`` open-loop, and return violations, latency, core-seconds and the
    batches' time against the profile's."""
    from sloserve.bench.loadgen import run_open_loop
    from sloserve.bench.processes import SloserveServer, free_port
    from sloserve.bench.runner import make_target

    server = SloserveServer(repo)
    metrics_port = free_port()
    server.argv[server.argv.index("--metrics-port") + 1] = str(metrics_port)
    metrics_url = f"127.0.0.1:{metrics_port}"
    budgets = w.deadline_array - w.arrivals
    samples: list[tuple[float, float]] = []

    async def go() -> Any:
        target = make_target(server.url, s.model, "http")
        await target.start()
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                c = await asyncio.to_thread(cores_now, metrics_url, s.model)
                samples.append((time.monotonic(), c))
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample())
        try:
            budget = np.maximum(budgets, 1e-6)
            res = await run_open_loop(target, np.asarray(w.arrivals), budget, duration=w.duration)
            return res, await asyncio.to_thread(batch_time_ratio, metrics_url, s.model)
        finally:
            stop.set()
            await sampler
            await target.close()

    with server:
        res, ratio = asyncio.run(go())
    met = res.met & (budgets > 0)
    times = np.array([t for t, _ in samples])
    cores = np.array([c for _, c in samples])
    good = np.isfinite(cores)
    core_seconds = float(np.sum(cores[good][:-1] * np.diff(times[good]))) if good.sum() > 1 else float("nan")
    lat = res.latency[res.ok]
    return {
        "requests": len(budgets),
        "violations": int(len(budgets) - met.sum()),
        "answered": int(res.ok.sum()),
        "attainment": float(met.mean()) if len(met) else 1.0,
        "latency_p50_ms": float(np.percentile(lat, 50) * 1e3) if len(lat) else float("nan"),
        "latency_p99_ms": float(np.percentile(lat, 99) * 1e3) if len(lat) else float("nan"),
        "core_seconds": core_seconds,
        "cores_mean": float(np.nanmean(cores)) if good.any() else float("nan"),
        "cores_samples": [(round(t - times[0], 2), c) for t, c in zip(times, cores, strict=True)],
        "violations_per_s": violations_per_second(w.arrivals, met, w.duration),
        "batch_time_vs_profile": ratio,
    }


def run_in_sim(
    s: ServerSettings, policy: str, profile: ModelProfile, w: Any, static: tuple[int, int]
) -> dict[str, Any]:
    """The simulator's prediction for the same arrivals and budgets."""
    from sloserve.planning.sponge_ip import solve_sponge_ip
    from sloserve.policies.slo_batcher import SloBatcher
    from sloserve.policies.sponge import HorizontalScaler, SpongeScaler
    from sloserve.sim import ModelSetup, simulate

    name = profile.model
    scheduler = SloBatcher(profile, max_batch=s.max_batch, slo=s.slo)
    if policy == "sponge":
        scaler: Any = SpongeScaler(
            name, profile, s.slo, solve_sponge_ip, max_cores=s.max_cores, max_batch=s.max_batch
        )
        setup = ModelSetup(name, profile, scheduler, scaler=scaler)
    elif policy == "horizontal":
        scaler = HorizontalScaler(name, profile, s.slo, max_replicas=s.max_cores, max_batch=s.max_batch)
        setup = ModelSetup(name, profile, scheduler, scaler=scaler)
    else:
        scheduler.set_max_batch(static[1])
        setup = ModelSetup(name, profile, scheduler, cores=static[0])
    result = simulate(setup, w, seed=s.seed, record=True)
    m = result.metrics
    assert result.outcomes is not None
    return {
        "requests": m.requests,
        "violations": m.misses,
        "answered": m.completed,
        "attainment": m.attainment,
        "latency_p50_ms": m.latency_p50 * 1e3,
        "latency_p99_ms": m.latency_p99 * 1e3,
        "core_seconds": m.core_seconds,
        "cores_mean": m.core_seconds / max(w.duration, 1e-9),
        "violations_per_s": violations_per_second(result.outcomes.arrival, result.outcomes.met, w.duration),
    }


def plot_violations(result: dict[str, Any], title: str, path: Path) -> Path:
    """Violations per second of arrival, server (solid) against simulator (dashed), per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (policy, pair) in enumerate(result["rows"].items()):
        color = f"C{i}"
        for where, style in (("server", "-"), ("simulator", "--")):
            counts = pair[where]["violations_per_s"]
            ax.step(range(len(counts)), counts, style, where="post", color=color, label=f"{policy}, {where}")
    ax.set_xlabel("second of the run (by arrival)")
    ax.set_ylabel("requests late or refused")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def read_profile(profile_file: Path, model: str) -> ModelProfile:
    """The one profile of ``model`` in ``profile_file`` (``--server-profile``); ConfigError when the
    file has none or several (on more than one hardware type)."""
    from sloserve.core.config import ConfigError
    from sloserve.core.profile_io import load_profiles

    profiles = load_profiles(profile_file)
    found = [p for (m, _), p in profiles.profiles.items() if m == model]
    where = f"--server-profile {profile_file}"
    if not found:
        known = sorted({m for m, _ in profiles.profiles})
        raise ConfigError(f"{where}: no profile for model {model!r} (the file has {known})")
    if len(found) > 1:
        raise ConfigError(
            f"{where}: model {model!r} has profiles on {len(found)} hardware types; give a file with one"
        )
    return found[0]


def compare(s: ServerSettings, profile_file: Path | None, out: Path, quick: bool) -> dict[str, Any]:
    """Run the three policies on the server and in the simulator; returns the side-by-side rows."""
    from sloserve.experiments.sponge import over_provisioned

    out.mkdir(parents=True, exist_ok=True)
    measured = out / f"profile_{s.model}.yaml"
    if profile_file is None:
        profile = measure_profile(s.model, measured, quick)
    else:
        profile = read_profile(profile_file, s.model)
        if Path(profile_file).resolve() != measured.resolve():
            shutil.copy(profile_file, measured)
    w = workload(s)
    budgets = w.deadline_array - w.arrivals
    static = over_provisioned(
        profile, s.rate, float(np.percentile(budgets, 1)), s.slo, s.max_cores, s.max_batch
    )
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="sloserve-sponge-") as tmp:
        for policy in ("sponge", "horizontal", "static"):
            repo = make_repository(s, policy, measured, static, Path(tmp))
            rows[policy] = {
                "server": run_on_server(s, repo, w),
                "simulator": run_in_sim(s, policy, profile, w, static),
            }
    return {
        "rows": rows,
        "static_choice": {"cores": static[0], "max_batch": static[1]},
        "workload": w.description,
    }
