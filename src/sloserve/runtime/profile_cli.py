"""``sloserve profile MODEL``: measure a model's latency profile and write the profile file."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sloserve import cli_args
from sloserve.runtime.model_config import MAX_BATCH_SIZE, MAX_INSTANCES, MAX_THREADS


def _ints(limit: int) -> Callable[[str], tuple[int, ...]]:
    """Comma-separated integers in 1..``limit`` (sorted, each once)."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        if not values or min(values) < 1 or max(values) > limit:
            raise argparse.ArgumentTypeError(f"expected integers in 1..{limit}, got {text!r}")
        return tuple(sorted(set(values)))

    return parse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``profile`` command."""
    p = subparsers.add_parser(
        "profile",
        help="measure a model's latency over batch sizes x threads x co-located instances",
        description="Measure median and p99 batch latency of an ONNX model on ONNX Runtime over batch "
        "sizes x intra-op threads x co-located instances (plus the slowdown s(k) of k instances), and "
        "write the profile file (sloserve-profile/v1) that the simulator and planners read.",
    )
    p.add_argument("model", metavar="MODEL", help="demo model name, model directory or .onnx file")
    p.add_argument(
        "--out",
        type=cli_args.output_file,
        help="profile file to write (.yaml or .json; default results/profiles/MODEL.yaml)",
    )
    p.add_argument("--quick", action="store_true", help="small grid: batches 1,4,16; 10 repeats")
    p.add_argument(
        "--batches", type=_ints(MAX_BATCH_SIZE), help="batch sizes, e.g. 1,2,4,8 (capped at max_batch_size)"
    )
    p.add_argument("--threads", type=_ints(MAX_THREADS), help="intra-op threads per instance, e.g. 1,2")
    p.add_argument(
        "--instances", type=_ints(MAX_INSTANCES), help="co-located instance counts 1..K, e.g. 1,2,3"
    )
    p.add_argument(
        "--repeats", type=cli_args.count, help="recorded batches per instance per point (default 30)"
    )
    p.add_argument(
        "--warmup", type=cli_args.int_range(0), help="unrecorded batches per instance per point (default 3)"
    )
    p.add_argument(
        "--variable-dim",
        type=cli_args.int_range(1, 4096),
        help="size of variable non-batch axes (default 64)",
    )
    p.add_argument("--hardware", default="cpu", help="hardware type name written into the profile")
    p.add_argument("--repository", type=Path, help="where demo models are built (default: the demo cache)")
    p.add_argument("--raw", action="store_true", help="also measure the peak raw ONNX Runtime throughput")
    p.set_defaults(handler=_handle)


def _grid(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from sloserve.runtime.profiler import ProfileGrid

    grid = ProfileGrid.quick() if args.quick else ProfileGrid()
    overrides = {
        "batches": args.batches,
        "threads": args.threads,
        "instances": args.instances,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "variable_dim": args.variable_dim,
    }
    return replace(grid, **{k: v for k, v in overrides.items() if v is not None})


def _handle(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from sloserve.core.config import ConfigError
    from sloserve.core.profile_io import save_profiles
    from sloserve.runtime.profiler import profile_model, resolve_model

    console = Console()
    source = resolve_model(args.model, args.repository)
    grid = _grid(args).limited_to(source.max_batch)
    if grid.instances != tuple(range(1, len(grid.instances) + 1)):
        raise ConfigError("--instances: must be 1..K (the slowdown s(k) is relative to one instance)")
    out: Path = args.out or Path("results") / "profiles" / f"{source.name}.yaml"
    console.print(
        f"profiling [bold]{source.name}[/] ({source.path}) on {os.cpu_count()} CPUs: "
        f"batches {list(grid.batches)}, threads {list(grid.threads)}, instances {list(grid.instances)}, "
        f"{grid.repeats} repeats"
    )
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("measuring", total=grid.blocks())

        def advance(point: Any) -> None:
            bar.update(task, advance=1, description=f"b={point.batch} c={point.cores} k={point.instances}")

        profile = profile_model(source, grid, hardware=args.hardware, progress=advance)
    save_profiles([profile], out)
    if out.suffix.lower() != ".json":
        header = (
            f"# sloserve profile of {source.name} ({source.path}); {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
            f"# machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
            f"{platform.system()} {platform.release()}; variable dims = {grid.variable_dim}; "
            f"{grid.repeats} repeats, {grid.warmup} warm-up per instance and point; seed {grid.seed}\n"
        )
        out.write_text(header + out.read_text(encoding="utf-8"), encoding="utf-8")

    table = Table(title=f"{source.name}: batch latency (ms)")
    for col in ("batch", "threads", "instances", "median", "p99", "rows/s (all instances)"):
        table.add_column(col, justify="right")
    for p in profile.points:
        table.add_row(
            str(p.batch), str(p.cores), str(p.instances), f"{p.median * 1e3:.3f}", f"{p.p99 * 1e3:.3f}",
            f"{p.instances * p.batch / p.median:.0f}",
        )  # fmt: skip
    console.print(table)
    if profile.slowdown:
        console.print(
            "slowdown s(k): " + ", ".join(f"s({k})={s:.2f}" for k, s in enumerate(profile.slowdown, 1))
        )
    console.print(f"wrote {out} in {time.perf_counter() - started:.1f} s")
    if args.raw:
        _raw(args, source, out, console)
    return 0


def _raw(args: argparse.Namespace, source: Any, out: Path, console: Any) -> None:
    from sloserve.runtime.raw_throughput import measure_raw_throughput

    batches = [b for b in (1, 4, 8, 16, 32) if source.max_batch is None or b <= source.max_batch] or [1]
    raw = measure_raw_throughput(
        source.path,
        batches=batches,
        duration_s=0.5 if args.quick else 1.0,
        variable_dim=args.variable_dim or 64,
        name=source.name,
    )
    b = raw.best
    console.print(
        f"peak raw ONNX Runtime throughput on {raw.cores} cores: {raw.rows_per_s:.0f} rows/s "
        f"(batch {b.batch}, {b.sessions} session(s) x {b.threads} thread(s), "
        f"spinning {'on' if b.spinning else 'off'})"
    )
    raw_path = out.with_name(out.stem + ".raw.json")
    raw_path.write_text(json.dumps(raw.to_dict(), indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {raw_path}")
