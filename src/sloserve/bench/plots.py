"""PNG plots for load-generator results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sloserve.bench.loadgen import LoadResult


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency_cdf(res: LoadResult, path: Path) -> None:
    """Latency CDF of the answered requests, with the SLO marked."""
    plt = _pyplot()
    lat = np.sort(res.latency[res.ok]) * 1e3
    fig, ax = plt.subplots(figsize=(6, 4))
    if lat.size:
        ax.plot(lat, np.arange(1, lat.size + 1) / len(res.planned))
    finite = res.slo[np.isfinite(res.slo)]
    if finite.size:
        ax.axvline(float(finite[0]) * 1e3, color="red", linestyle="--", label="SLO")
        ax.legend()
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of all requests answered")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_capacity(runs: list[dict[str, Any]], target: float, path: Path) -> None:
    """Attainment against offered rate for every probed rate."""
    plt = _pyplot()
    pts = sorted((r["rate"], r["attainment"]) for r in runs)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
    ax.axhline(target, color="red", linestyle="--", label=f"target {target:.0%}")
    ax.set_xlabel("offered rate (req/s)")
    ax.set_ylabel("SLO attainment")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
