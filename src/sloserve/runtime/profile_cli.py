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


def _output_file(text: str) -> Path:
    """:func:`cli_args.output_file`, with an OS error on the name (one too long) an argument error."""
    try:
        return cli_args.output_file(text)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{text}: {exc.strerror or exc}") from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``profile`` command."""
    p = subparsers.add_parser(
        "profile",
        help="measure a model's latency over batch sizes x threads x co-located instances",
        description="Measure median and p99 batch latency of an ONNX model on ONNX Runtime over batch "
        "sizes x intra-op threads x co-located instances (plus the slowdown s(k) of k instances), and "
        "write the profile file (sloserve-profile/v1) that the simulator and planners read. "
        "The p99 is the nearest-rank 99th percentile of a point's samples (instances x repeats; fewer "
        "where a point reaches its time cap, 10 s, 1 s with --quick): with fewer than 100 samples it "
        "is the largest one. A model with max_batch_size 0 is measured at batch 1 with its full "
        "input shapes.",
    )
    p.add_argument("model", metavar="MODEL", help="demo model name, model directory or .onnx file")
    p.add_argument(
        "--out",
        type=_output_file,
        help="profile file to write (.yaml or .json; default results/profiles/MODEL.yaml)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small grid: batches 1,4,16; threads 1,2; instances 1,2; 100 repeats, 2 warm-up; "
        "at most 1 s per point",
    )
    p.add_argument(
        "--batches",
        type=_ints(MAX_BATCH_SIZE),
        help="batch sizes, e.g. 1,2,4,8 (default 1,2,4,8,16,32 up to the model's max_batch_size; "
        "one above it is refused)",
    )
    p.add_argument("--threads", type=_ints(MAX_THREADS), help="intra-op threads per instance (default 1,2)")
    p.add_argument(
        "--instances", type=_ints(MAX_INSTANCES), help="co-located instance counts 1..K (default 1,2)"
    )
    p.add_argument(
        "--repeats",
        type=cli_args.count,
        help="recorded batches per instance per point (default 100: a p99 needs 100 samples)",
    )
    p.add_argument(
        "--warmup",
        type=cli_args.int_range(0),
        help="unrecorded batches per instance at the start of each of a point's 5 rounds (default 3)",
    )
    p.add_argument(
        "--variable-dim",
        type=cli_args.int_range(1, 4096),
        help="size of variable non-batch axes (default 64)",
    )
    p.add_argument(
        "--hardware", default="cpu", help="hardware type name written into the profile (default cpu)"
    )
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
    _check_batches(args.batches, source)
    grid = _grid(args).limited_to(source.max_batch)
    if grid.instances != tuple(range(1, len(grid.instances) + 1)):
        raise ConfigError("--instances: must be 1..K (the slowdown s(k) is relative to one instance)")
    out: Path = args.out or Path("results") / "profiles" / f"{source.name}.yaml"
    _check_writable(out, "--out" if args.out else "the profile file")
    if args.raw:
        _check_writable(out.with_name(out.stem + ".raw.json"), "--raw's file")
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
    try:
        save_profiles([profile], out)
        if out.suffix.lower() != ".json":
            header = (
                f"# sloserve profile of {source.name} ({source.path}); "
                f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
                f"# machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
                f"{platform.system()} {platform.release()}; variable dims = {grid.variable_dim}; "
                f"{grid.repeats} repeats, {grid.warmup} warm-up per instance, point and round "
                f"({grid.rounds_taken()} rounds); seed {grid.seed}\n"
                "# median_ms: median of a point's samples (instances x repeats, fewer where the point "
                f"reached its {grid.max_seconds:g} s cap); p99_ms: their nearest-rank 99th percentile "
                "(the largest sample when there are fewer than 100)\n"
            )
            out.write_text(header + out.read_text(encoding="utf-8"), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write the profile: {exc.strerror or exc}") from None

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


def _check_batches(batches: tuple[int, ...] | None, source: Any) -> None:
    """Refuse ``--batches`` above the model's ``max_batch_size`` (the default grid is only cut)."""
    from sloserve.core.config import ConfigError

    if batches is None or source.max_batch is None:
        return
    above = [b for b in batches if b > source.max_batch]
    if not above:
        return
    if not source.batched:
        raise ConfigError(
            f"--batches: {source.name} has max_batch_size 0 (no batch dimension): it is profiled at "
            f"batch 1 only, not {', '.join(map(str, above))}"
        )
    raise ConfigError(
        f"--batches: {', '.join(map(str, above))} above {source.name}'s max_batch_size {source.max_batch}"
    )


def _check_writable(path: Path, what: str) -> None:
    """Make sure ``path`` can be written before measuring for minutes: create it (and remove it
    again) where it does not exist, open it for appending where it does; a ConfigError if not."""
    from sloserve.core.config import ConfigError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            with path.open("a", encoding="utf-8"):
                pass
        else:
            path.open("x", encoding="utf-8").close()
            path.unlink()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot write: {exc.strerror or exc}") from None


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
    try:
        raw_path.write_text(json.dumps(raw.to_dict(), indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        from sloserve.core.config import ConfigError

        raise ConfigError(f"{raw_path}: cannot write: {exc.strerror or exc}") from None
    console.print(f"wrote {raw_path}")
