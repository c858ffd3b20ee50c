"""Per demo model: the server's throughput at its best configuration against raw ONNX Runtime.

For each model, in the same run:

1. **raw**: :func:`sloserve.runtime.raw_throughput.measure_raw_throughput` — sessions driven back
   to back with a pre-built batch, no server (the best of batch × threads × sessions);
2. **server**: ``sloserve serve`` with that best configuration (instances = sessions, threads per
   instance, ``preferred_batch_size`` = the best batch, a queue delay long enough to fill it, no
   SLO), loaded by a closed-loop client (``benchmarks/lean_client.py``: one process, enough
   keep-alive connections to fill the batches) sending one sample per request (binary tensors);
   then client-side batches of the best size (of 256 rows when the best batch runs in under 2 ms,
   where a client sends big requests to amortise the per-request cost; the server's batch cap then
   allows them, and raw is measured up to batch 256 too), and the same batches through
   Triton's system shared-memory extension (``SharedMemoryRequests``: the client writes its batch
   into a registered region once, each connection has its own output region, and the requests
   carry only a JSON header naming them — what a client on the same machine can do).

The ratio server / raw is the figure (target ≥ 90%): raw is measured just before and just after the
server in each of ``--rounds`` rounds (the machine's speed drifts) and each ratio is the median over
rounds of the server's rate over that round's raw rate. Raw ONNX Runtime and the server run on the
same CPUs (``--server-cpus``, by default the first half of the machine's); the client runs on the
others, as a client on another machine would, so that its cost is not charged to the server. The
server's own front end (HTTP parsing, decoding, batching) shares the CPUs with its ONNX Runtime
sessions, so its overhead is in the ratio. ``--server-cpus all`` puts everything on every core.

    python benchmarks/server_vs_raw.py [--quick] [--models mlp,resnet18] [--server-cpus 0]

Writes ``results/server_vs_raw.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lean_client import SharedMemoryRequests, http_infer_bytes, http_peak
from sloserve.runtime.cpus import add_server_cpus_argument, pinned, split_from_args

MODELS = ("mlp", "mobilenet_v2", "resnet18", "bert")
SEQUENCE = 64


RAW_BATCHES = (1, 4, 8, 16, 32, 64, 128, 256)
"""Batch sizes raw ONNX Runtime is measured at; its peak over them is the reference."""
LARGE_REQUEST_ROWS = 256
SHORT_BATCH_S = 0.002
"""When raw's best batch takes less than this, the server's front end (~0.1-0.3 ms of Python per
request) is a large share of it; the client-batch modes then send ``LARGE_REQUEST_ROWS`` rows per
request, as a client of such a model would, and the server's batch cap allows it."""


def server_repository(
    src: Path,
    root: Path,
    name: str,
    batch: int,
    threads: int,
    sessions: int,
    max_batch: int | None = None,
) -> Path:
    """A one-model repository serving ``name`` with the given configuration: batches of ``batch``
    preferred (formed from single rows within 20 ms), up to ``max_batch`` (default ``batch``)."""
    dst = root / name
    shutil.copytree(src, dst, dirs_exist_ok=True)
    config = yaml.safe_load((dst / "config.yaml").read_text())
    config.pop("slo_ms", None)
    config["max_batch_size"] = max(batch, max_batch or batch)
    config["preferred_batch_size"] = [batch]
    config["max_queue_delay_microseconds"] = 20_000
    config["instance_group"] = {"count": sessions, "threads": threads}
    (dst / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def raw_at(model: Path, cpus: list[int], batch: int, trial_s: float, name: str) -> float:
    """Raw ONNX Runtime rows/s at ``batch`` on ``cpus``, measured now (the best split of the CPUs
    into sessions × threads, as in the search for the best configuration)."""
    from sloserve.runtime.raw_throughput import measure_raw_throughput

    return measure_raw_throughput(
        model,
        cpus=cpus,
        batches=(batch,),
        duration_s=max(trial_s, 2.0),
        variable_dim=SEQUENCE,
        spinning=(False,),
        name=name,
    ).rows_per_s


SERVER_KEYS = (
    ("server_rows_per_s", "ratio"),
    ("server_client_batch_rows_per_s", "ratio_client_batch"),
    ("server_client_batch_shm_rows_per_s", "ratio_client_batch_shm"),
)


def summarise_rounds(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """Medians over rounds: of each rate, and of each round's server / raw ratio."""
    out: dict[str, Any] = {"raw_rows_per_s": float(np.median([r["raw_rows_per_s"] for r in rounds]))}
    for key, ratio in SERVER_KEYS:
        out[key] = float(np.median([r[key] for r in rounds]))
        out[ratio] = float(np.median([r[key] / r["raw_rows_per_s"] for r in rounds]))
    out["rounds"] = rounds
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter trials")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of raw-server-raw runs; each ratio is the median over rounds of server / raw",
    )
    add_server_cpus_argument(parser, None)
    parser.add_argument("--out", type=Path, default=Path("results/server_vs_raw.json"))
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from sloserve.bench.processes import SloserveServer
    from sloserve.runtime.demo.repository import build_demo_model
    from sloserve.runtime.onnx_backend import OnnxBackend
    from sloserve.runtime.raw_throughput import measure_raw_throughput
    from sloserve.runtime.stacking import example_inputs

    split = split_from_args(parser, args)
    cores = len(split.server)
    trial_s, load_s = (0.4, 3.0) if args.quick else (1.0, 6.0)
    cache = Path(tempfile.gettempdir()) / "sloserve-bench-demo"
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()},
        "cpus": {"server": split.server, "client": split.client, "note": split.describe()},
        "workload": "closed loop, one sample per request and client batches; answers counted over "
        f"max({load_s:g} s, 20 batches) after a warm-up of max(0.5 s, 2 batches); "
        f"raw {max(trial_s, 2.0):g} s before and after the server in each of {args.rounds} round(s); "
        "ratios: median over rounds of server / that round's raw",
        "models": {},
    }
    console = Console()
    console.print(split.describe())
    for name in [m for m in args.models.split(",") if m]:
        src = build_demo_model(name, cache)
        raw = measure_raw_throughput(
            src / "model.onnx",
            cpus=split.server,
            batches=RAW_BATCHES,
            duration_s=trial_s,
            variable_dim=SEQUENCE,
            spinning=(False,),
            name=name,
        )
        best = raw.best
        backend = OnnxBackend(src / "model.onnx", 1)
        one = http_infer_bytes(name, example_inputs(backend.inputs, 1, variable_dim=SEQUENCE))
        short = best.batch * best.sessions / best.rows_per_s < SHORT_BATCH_S
        request_rows = max(best.batch, LARGE_REQUEST_ROWS) if short else best.batch
        many_inputs = example_inputs(backend.inputs, request_rows, variable_dim=SEQUENCE)
        many = http_infer_bytes(name, many_inputs)
        backend.close()
        conns = max(8, 3 * best.batch * best.sessions)  # a full batch always waits
        batch_s = best.batch * best.sessions / best.rows_per_s
        # counted over at least 20 batches, after 2 (a long batch makes a short window coarse)
        window = {"duration": max(load_s, 20 * batch_s), "warmup": max(0.5, 2 * batch_s)}

        rounds: list[dict[str, float]] = []
        errors = 0
        with tempfile.TemporaryDirectory() as tmp:
            repo = server_repository(
                src, Path(tmp), name, best.batch, best.threads, best.sessions, request_rows
            )
            with (
                SloserveServer(repo, cpus=split.server) as server,
                SharedMemoryRequests(server.url, name, many_inputs, 3 * best.sessions) as shm_requests,
            ):
                # The machine's speed drifts (a shared VM): each round measures raw ONNX Runtime just
                # before and just after the server runs, and its ratios use the mean of the two.
                for _ in range(args.rounds):
                    before = raw_at(src / "model.onnx", split.server, best.batch, trial_s, name)
                    with pinned(split.client):  # the client's processes start on the client's CPUs
                        peak = http_peak(server.url, one, procs=1, conns=conns, **window)
                        batched = http_peak(server.url, many, procs=1, conns=3 * best.sessions, **window)
                        shared = http_peak(
                            server.url,
                            shm_requests.requests,
                            procs=1,
                            conns=3 * best.sessions,
                            **window,
                        )
                    after = raw_at(src / "model.onnx", split.server, best.batch, trial_s, name)
                    raw_rate = (before + after) / 2
                    errors += int(peak["errors"] + batched["errors"] + shared["errors"])
                    rounds.append(
                        {
                            "raw_rows_per_s": raw_rate,
                            "server_rows_per_s": peak["rps"],
                            "server_client_batch_rows_per_s": batched["rps"] * request_rows,
                            "server_client_batch_shm_rows_per_s": shared["rps"] * request_rows,
                        }
                    )

        row = {
            **summarise_rounds(rounds),
            "raw_best": {"batch": best.batch, "threads": best.threads, "sessions": best.sessions},
            "server_errors": errors,
            "connections": conns,
            "client_batch_rows": request_rows,
        }
        results["models"][name] = row
        console.print(name, row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    table = Table(title=f"server vs raw ONNX Runtime on {cores} CPU(s); {split.describe()}")
    for col in (
        "model",
        "best config (batch, threads x sessions)",
        "raw rows/s",
        "server rows/s (1 row/request)",
        "server / raw",
        "client batch rows",
        "server rows/s (client batch)",
        "server / raw (client batch)",
        "server rows/s (client batch, system shared memory)",
        "server / raw (client batch, shm)",
    ):
        table.add_column(col, justify="right")
    for name, r in results["models"].items():
        b = r["raw_best"]
        table.add_row(
            name,
            f"{b['batch']}, {b['threads']} x {b['sessions']}",
            f"{r['raw_rows_per_s']:.0f}",
            f"{r['server_rows_per_s']:.0f}",
            f"{r['ratio']:.0%}",
            str(r["client_batch_rows"]),
            f"{r['server_client_batch_rows_per_s']:.0f}",
            f"{r['ratio_client_batch']:.0%}",
            f"{r['server_client_batch_shm_rows_per_s']:.0f}",
            f"{r['ratio_client_batch_shm']:.0%}",
        )
    console.print(table)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
