"""Simulator speed: simulated requests per wall-clock second, and peak memory as runs grow.

One model (affine profile, 5 ms + 1 ms per request, max batch 32), Poisson arrivals at 80% of its
capacity at full batches, Triton-like dynamic batcher (max_queue_delay 2 ms), 100 ms SLO.
Arrivals are generated in chunks and metrics aggregated incrementally, so memory should stay flat.

    python benchmarks/sim_throughput.py            # 1M and 10M requests (about a minute)
    python benchmarks/sim_throughput.py --quick    # 200k and 1M

Each size runs in a fresh, single-threaded process (so its peak RSS is its own). ``req/s (cpu)``
divides by the process's CPU time: on a shared machine it is the per-core speed, while the wall-clock
figure also counts time the process waited for a core. Writes results/sim_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

TARGET_RATE = 300_000.0
"""The issue's target: simulated requests per wall-clock second on one core."""


def one_run(n_requests: int) -> dict[str, float]:
    """Simulate about ``n_requests`` requests in this process; returns speed and peak RSS."""
    from sloserve.core.profiles import AffineProfile
    from sloserve.policies.triton import TritonDynamicBatcher
    from sloserve.sim.cluster import ModelSetup, simulate
    from sloserve.sim.workload import stream_poisson

    profile = AffineProfile("bench", alpha=0.005, beta=0.001, max_batch=32)
    capacity = 32 / profile.latency(32)
    rate = 0.8 * capacity
    workload = stream_poisson(rate, n_requests / rate, seed=1, slo=0.1)
    setup = ModelSetup("bench", profile, TritonDynamicBatcher(32, max_queue_delay=0.002))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    result = simulate(setup, workload, seed=1)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    m = result.metrics
    return {
        "requests": m.requests,
        "wall_s": wall,
        "cpu_s": cpu,
        "req_per_wall_s": m.requests / wall,
        "req_per_cpu_s": m.requests / cpu,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_run_mib": rss_before,
        "rate": rate,
        "capacity": capacity,
        "attainment": m.attainment,
        "mean_batch": m.mean_batch,
        "p99_ms": m.latency_p99 * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="200k and 1M requests")
    parser.add_argument("--sizes", type=int, nargs="*", help="request counts to run")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("results/sim_throughput.json"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(args.child)))
        return 0
    sizes = args.sizes or ([200_000, 1_000_000] if args.quick else [1_000_000, 10_000_000])
    rows = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--child", str(n)]
        # the simulator is single-threaded; keep numpy's helpers to one thread too
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"{'requests':>12} {'wall s':>8} {'req/s (wall)':>14} {'req/s (cpu)':>13} "
        f"{'peak RSS MiB':>13}  target"
    )
    for r in rows:
        print(
            f"{r['requests']:>12,} {r['wall_s']:>8.2f} {r['req_per_wall_s']:>14,.0f} "
            f"{r['req_per_cpu_s']:>13,.0f} {r['peak_rss_mib']:>13.1f}  >= {TARGET_RATE:,.0f} req/s"
        )
    if len(rows) > 1:
        growth = rows[-1]["peak_rss_mib"] - rows[0]["peak_rss_mib"]
        print(
            f"peak RSS grew by {growth:+.1f} MiB from {rows[0]['requests']:,} "
            f"to {rows[-1]['requests']:,} requests"
        )
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from sloserve.sim.report import write_json

    path = write_json(
        args.out,
        {"runs": rows, "target_req_per_s": TARGET_RATE},
        benchmark="sim_throughput",
        workload="stream_poisson at 80% of capacity (affine 5 ms + 1 ms/req, max batch 32), seed 1",
        policy="TritonDynamicBatcher(max_batch=32, max_queue_delay=2 ms)",
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
