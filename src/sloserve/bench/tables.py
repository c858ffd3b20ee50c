"""Terminal tables for load-generator results."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from sloserve.sim.capacity import CapacityResult


def summary_table(s: dict[str, Any], title: str) -> Table:
    """One run: attainment, goodput, percentiles, failures by reason."""
    t = Table(title=title)
    t.add_column("figure")
    t.add_column("value", justify="right")
    lat = s["latency_ms"]
    rows = [
        ("requests", f"{s['requests']}"),
        ("attainment", f"{s['attainment']:.4f}"),
        ("offered (req/s)", f"{s['offered_rps']:.1f}"),
        ("throughput (req/s)", f"{s['throughput_rps']:.1f}"),
        ("goodput (req/s)", f"{s['goodput_rps']:.1f}"),
        (
            "latency p50 / p95 / p99 / max (ms)",
            " / ".join(f"{lat[k]:.2f}" for k in ("p50", "p95", "p99", "max")),
        ),
        ("client lag p99 (ms)", f"{s['client_lag_ms']['p99']:.2f}"),
    ]
    rows += [(f"failed: {k}", str(v)) for k, v in s["failures"].items()]
    for r in rows:
        t.add_row(*r)
    return t


def capacity_table(result: CapacityResult, runs: list[dict[str, Any]]) -> Table:
    """Every probed rate and the capacity found."""
    found = f"{result.rate:.1f} req/s"
    if not result.bounded and result.rate > 0:  # every rate tried passed: a lower bound only
        found = f"at least {found} (no rate tried failed; raise --max-rate)"
    t = Table(title=f"capacity at {result.target:.0%} attainment: {found}")
    for col in ("rate (req/s)", "run", "attainment", "goodput", "p99 (ms)", "failures"):
        t.add_column(col, justify="right")
    for r in sorted(runs, key=lambda r: (r["rate"], r.get("repeat", 0))):
        t.add_row(
            f"{r['rate']:.1f}",
            str(r.get("repeat", 0) + 1),
            f"{r['attainment']:.4f}",
            f"{r['goodput_rps']:.1f}",
            f"{r['latency_ms']['p99']:.1f}",
            str(sum(r["failures"].values())),
        )
    return t
