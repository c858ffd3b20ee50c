"""Turning a load run's outcomes into the figures users read: attainment, goodput, percentiles."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from sloserve.bench.loadgen import LoadResult


def reason_class(status: int, reason: str) -> str:
    """A short, countable label for a failed request, e.g. ``503 deadline_unreachable``."""
    if status == -1:  # the exception's type and what it says first: refused and closed stay apart
        return "transport: " + ": ".join(reason.split(": ")[:2])[:80]
    first = reason.strip().split(":")[0].split(" (")[0][:60]
    return f"{status} {first}".strip()


def summarize(res: LoadResult) -> dict[str, Any]:
    """Figures of one run; refusals and errors count as misses (attainment over all requests)."""
    n = len(res.planned)
    lat_ok = res.latency[res.ok]
    duration = max(res.duration, 1e-9)
    lag = res.sent - res.planned
    failed = Counter(
        reason_class(int(s), r) for s, r, o in zip(res.status, res.reasons, res.ok, strict=True) if not o
    )

    def pct(q: float) -> float:
        return float(np.percentile(lat_ok, q) * 1e3) if lat_ok.size else float("nan")

    return {
        "requests": n,
        "answered": int(res.ok.sum()),
        "met": int(res.met.sum()),
        "attainment": float(res.met.sum() / n) if n else float("nan"),
        "offered_rps": n / duration,
        "throughput_rps": float(res.ok.sum() / duration),
        "goodput_rps": float(res.met.sum() / duration),
        "latency_ms": {
            "p50": pct(50),
            "p95": pct(95),
            "p99": pct(99),
            "max": float(lat_ok.max() * 1e3) if lat_ok.size else float("nan"),
        },
        "failures": dict(failed.most_common()),
        "client_lag_ms": {
            "p50": float(np.percentile(lag, 50) * 1e3) if n else 0.0,
            "p99": float(np.percentile(lag, 99) * 1e3) if n else 0.0,
        },
    }
