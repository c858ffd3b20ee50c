"""Reports of simulation runs: JSON files, a rich terminal table, PNG plots.

Every experiment reports the same way: :func:`write_json` (results plus the machine, workload and
seed), :func:`metrics_table` / :func:`print_metrics`, and the plots :func:`plot_latency_cdf`,
:func:`plot_attainment_vs_load` and :func:`plot_timeline` (matplotlib, Agg backend).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sloserve.sim.metrics import LatencyHistogram, Metrics

MS = 1e3
NONE = "—"
"""What a table shows for a latency when no request was answered."""


def machine_info() -> dict[str, Any]:
    """Where a run happened: cores, CPU, OS, Python, numpy; reports include it."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, Metrics):
        return x.to_dict()
    if hasattr(x, "to_dict"):
        return _jsonable(x.to_dict())
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def write_json(path: str | Path, data: Mapping[str, Any], **context: Any) -> Path:
    """Write ``data`` plus ``context`` (workload, seed, ...) and machine info as indented JSON.

    Non-finite floats become ``null`` / ``"inf"`` so the file is strict JSON.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        **_jsonable(dict(context)),
        "machine": machine_info(),
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
        **_jsonable(dict(data)),
    }
    p.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return p


def metrics_table(rows: Mapping[str, Metrics], title: str = "", slo: float | None = None) -> Any:
    """A ``rich.table.Table``, one row per labelled run (p99 in red when above ``slo``).

    ``drops`` is the total; reasons are in the JSON. ``batch`` is the mean batch size. Latencies
    read "—" for a run that answered no request."""
    from rich import box
    from rich.table import Table

    table = Table(title=title or None, title_justify="left", box=box.SIMPLE_HEAD)
    cols = (
        "run",
        "attain",
        "goodput/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "drops",
        "batch",
        "core·s",
        "cost",
    )
    for col in cols:
        table.add_column(col, justify="left" if col == "run" else "right", no_wrap=col == "run")
    for label, m in rows.items():
        answered = m.completed > 0  # no latency to show otherwise
        p50, p95, p99, top = (NONE,) * 4
        if answered:
            p50, p95, p99 = (f"{v * MS:.1f}" for v in (m.latency_p50, m.latency_p95, m.latency_p99))
            top = f"{m.latency_max * MS:.0f}"
        if answered and slo is not None and m.latency_p99 > slo:
            p99 = f"[red]{p99}[/red]"
        table.add_row(
            label,
            f"{m.attainment * 100:.2f}%",
            f"{m.goodput:.1f}",
            p50,
            p95,
            p99,
            top,
            str(m.dropped),
            f"{m.mean_batch:.1f}",
            f"{m.core_seconds:.0f}",
            f"{m.cost:.3g}",
        )
    return table


def print_metrics(rows: Mapping[str, Metrics], title: str = "", slo: float | None = None) -> None:
    """Print :func:`metrics_table` to the terminal."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=140)
    console.print(metrics_table(rows, title, slo))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency_cdf(
    histograms: Mapping[str, LatencyHistogram | np.ndarray],
    path: str | Path,
    *,
    slo: float | None = None,
    title: str = "Latency CDF",
) -> Path:
    """One CDF per run (from a histogram or an array of latencies), log-scaled x in ms."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, h in histograms.items():
        if isinstance(h, LatencyHistogram):
            x, y = h.cdf(400)
        else:
            x = np.sort(np.asarray(h, dtype=float))
            y = np.arange(1, len(x) + 1) / max(len(x), 1)
        if len(x):
            ax.step(x * MS, y, where="post", label=label)
    if slo is not None:
        ax.axvline(slo * MS, color="k", ls="--", lw=1, label=f"SLO {slo * MS:g} ms")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, answered requests)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_attainment_vs_load(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    *,
    target: float | None = 0.99,
    xlabel: str = "arrival rate (req/s)",
    title: str = "SLO attainment vs load",
    ceiling: tuple[str, float] | None = None,
) -> Path:
    """Attainment (drops count as misses) against load, one line per policy; ``ceiling`` (label,
    rate) draws a bound no policy passes as a vertical line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, pts in curves.items():
        xs, ys = zip(*sorted(pts), strict=True) if pts else ((), ())
        ax.plot(xs, [y * 100 for y in ys], marker="o", label=label)
    if target is not None:
        ax.axhline(target * 100, color="k", ls="--", lw=1, label=f"target {target * 100:g}%")
    if ceiling is not None:
        ax.axvline(ceiling[1], color="0.4", ls=":", lw=1.5, label=ceiling[0])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("SLO attainment (%)")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_timeline(timelines: Mapping[str, Any], path: str | Path, *, title: str = "Timeline") -> Path:
    """Four stacked panels over simulated time: arrival rate, batch size, instances, cores.

    ``timelines`` maps a label to a :class:`~sloserve.sim.cluster.Timeline` (or anything with the
    same array attributes).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(4, 1, figsize=(7.5, 8), sharex=True)
    for label, tl in timelines.items():
        axes[0].plot(tl.time, tl.rate, lw=1, label=label)
        axes[1].plot(tl.time, tl.mean_batch, lw=1, label=f"{label} mean batch")
        axes[1].plot(tl.time, tl.max_batch, lw=1, ls=":", label=f"{label} cap")
        axes[2].step(tl.time, tl.instances, where="post", lw=1, label=label)
        axes[3].step(tl.time, tl.cores, where="post", lw=1, label=label)
    for ax, ylabel in zip(axes, ("arrivals/s", "batch size", "instances", "cores"), strict=True):
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper right")
    axes[1].legend(fontsize=6, loc="upper right", ncol=2)
    axes[-1].set_xlabel("simulated time (s)")
    axes[0].set_title(title)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(p, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return p


__all__ = [
    "machine_info",
    "metrics_table",
    "plot_attainment_vs_load",
    "plot_latency_cdf",
    "plot_timeline",
    "print_metrics",
    "write_json",
]
