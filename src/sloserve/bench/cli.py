"""``sloserve bench``: open-loop load against any Open Inference Protocol endpoint."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from sloserve import cli_args
from sloserve.bench.input_data import input_data_option

DEFAULT_RATE = 50.0
DEFAULT_CV = 4.0
DEFAULT_TARGET = 0.99
DEFAULT_MAX_RATE = 400.0
DEFAULT_CONFIRM_RUNS = 1
MAX_CV = 100.0
"""Burstiest gamma arrivals taken: at cv 100 a burst holds about 10,000 requests (1/cv² is the
gamma shape), beyond it millions, whatever the rate asked."""
SEARCH_START = 5.0
"""The first rate a capacity search tries (lower when --max-rate is below twice it)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sloserve bench`` to the command line."""
    p = subparsers.add_parser(
        "bench",
        help="open-loop load generator for any Open Inference Protocol server (HTTP or gRPC)",
        description="Send requests at planned times (Poisson, bursty gamma or a replayed trace), each with "
        "the time left to its deadline as the 'timeout' parameter, and report attainment, goodput, "
        "latency percentiles and failures by reason. Refusals count as misses; nothing aborts the run. "
        "The generator first measures its own ceiling against a null server so a client-bound "
        "result is never taken for the server's.",
        formatter_class=cli_args.DefaultsHelpFormatter,
    )
    p.add_argument(
        "url",
        type=cli_args.endpoint,
        help="server address host:port (HTTP port for --protocol http, gRPC port for grpc)",
    )
    p.add_argument("-m", "--model", required=True, help="model name on the server")
    p.add_argument(
        "--protocol", choices=["http", "grpc"], default="http", help="how to reach the server at URL"
    )
    p.add_argument(
        "--rate",
        type=cli_args.positive,
        default=None,
        help=f"mean request rate, req/s (default: {DEFAULT_RATE:g}; not with --capacity, which picks "
        "the rates)",
    )
    p.add_argument(
        "--duration",
        type=cli_args.positive,
        default=20.0,
        help="seconds of load (with --capacity: per probed rate, at least long enough for three misses "
        "at --target on average: 300 requests at 0.99)",
    )
    p.add_argument(
        "--arrival",
        choices=["poisson", "gamma", "trace"],
        default="poisson",
        help="arrival process: Poisson, gamma renewal (bursty for --cv above 1) or a replayed --trace "
        "(a window of rate x duration consecutive requests, time-scaled to --rate)",
    )
    p.add_argument(
        "--cv",
        type=cli_args.positive_at_most(MAX_CV),
        default=None,
        help=f"with --arrival gamma: coefficient of variation of the inter-arrival times (default: "
        f"{DEFAULT_CV:g})",
    )
    p.add_argument(
        "--trace", type=cli_args.existing_file, help="with --arrival trace: a CSV with a TIMESTAMP column"
    )
    p.add_argument(
        "--slo-ms",
        type=cli_args.positive,
        default=None,
        help="per-request latency objective, measured from the planned send; the time left of it is "
        "sent as 'timeout'",
    )
    p.add_argument(
        "--seed",
        type=cli_args.seed,
        default=0,
        help="seed of the arrival times (and of a trace window's offset) and of random input values",
    )
    p.add_argument(
        "--capacity",
        action="store_true",
        help="search the highest rate meeting --target attainment of --slo-ms (which it needs)",
    )
    p.add_argument(
        "--target",
        type=cli_args.fraction,
        default=None,
        help=f"with --capacity: the attainment to keep (default: {DEFAULT_TARGET:g})",
    )
    p.add_argument(
        "--max-rate",
        type=cli_args.positive,
        default=None,
        help=f"with --capacity: the rate the search brackets first, from {SEARCH_START:g} req/s (or "
        "half this when lower); when it passes, the search doubles it up to 8 times "
        f"(default: {DEFAULT_MAX_RATE:g})",
    )
    p.add_argument(
        "--confirm-runs",
        type=cli_args.int_range(0, 100),
        default=None,
        help="with --capacity: run a rate whose attainment does not tell pass from fail (--target "
        "inside its 95%% Wilson interval) up to this many more times and judge it on all its requests "
        f"together (0: never; default: {DEFAULT_CONFIRM_RUNS})",
    )
    p.add_argument(
        "--shared-memory",
        action="store_true",
        help="HTTP only, client on the server's host: write the inputs once into a POSIX shared-memory "
        "object registered as a system shared-memory region, and name it in every request instead of "
        "sending the tensors (Triton's extension; outputs still come back in the response)",
    )
    p.add_argument(
        "-b",
        "--batch-size",
        type=cli_args.int_range(1, 1 << 20),
        default=1,
        help="rows per request, along each input's batch dimension (its first, when the model's "
        "metadata gives it as -1)",
    )
    p.add_argument(
        "--shape",
        type=cli_args.input_shape,
        action="append",
        default=[],
        metavar="NAME:D1,D2,...",
        help="sizes of one row of input NAME, the batch dimension left out (as perf_analyzer's "
        "--shape), e.g. input_ids:128; repeat for each input to set; a variable dimension not set "
        "is sent as 1",
    )
    p.add_argument(
        "--input-data",
        type=input_data_option,
        default="random",  # argparse passes a string default through the type
        metavar="{random,zero,FILE}",
        help="the values requests carry: random (drawn once, every request the same), zero, or a JSON "
        'file in perf_analyzer\'s format, {"data": [ENTRY, ...]}, an entry giving each input one row '
        'of values as a row-major list, {"b64": "..."} (little-endian bytes) or {"content": ..., '
        '"shape": [D1, ...]} (its own sizes of variable dimensions, over --shape); requests take the '
        "entries in turn, -b N consecutive entries each",
    )
    p.add_argument("--no-ceiling", action="store_true", help="skip measuring the client's own ceiling")
    p.add_argument(
        "--out", type=cli_args.output_dir, default=Path("results/bench"), help="directory for JSON and PNG"
    )
    p.set_defaults(handler=_run)


MAX_REQUESTS_PER_RUN = 10_000_000
"""Most requests one run plans (each is a planned send time and an outcome in memory; at the
generator's ceiling of a few thousand req/s, about an hour)."""


def _run(args: argparse.Namespace) -> int:
    from sloserve.bench.payload import PayloadError
    from sloserve.bench.targets import TargetError

    # SIGTERM stops a run as Ctrl-C does: the event loop's tasks are cancelled and each target
    # closes, so a shared-memory region the run registered is unregistered, not left on the server
    before = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _bench(args)
    except (TargetError, PayloadError) as exc:  # nothing was sent: the endpoint or model cannot be used
        print(f"sloserve bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sloserve bench: stopped before the run ended; no report written", file=sys.stderr)
        return 130
    finally:  # a caller running the command in its own process (tests) gets its handler back
        if before is not None:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGTERM, before)


def _refused_options(args: argparse.Namespace) -> str | None:
    """Why options that parse one by one cannot go together (None when they can); an option that
    would be ignored is refused, so a run is never taken for what it was not."""
    if args.arrival == "trace" and args.trace is None:
        return "--arrival trace needs --trace FILE"
    if args.trace is not None and args.arrival != "trace":
        return "--trace is replayed only with --arrival trace"
    if args.cv is not None and args.arrival != "gamma":
        return "--cv applies to --arrival gamma only"
    if args.shared_memory and args.protocol != "http":
        return "--shared-memory is supported with --protocol http only"
    if args.capacity:
        if args.rate is not None:
            return "--rate does not go with --capacity, which picks the rates (--max-rate sets the first)"
        if args.slo_ms is None:
            return "--capacity needs --slo-ms: attainment is the share of requests answered within it"
    else:
        alone = [o for o, v in (("--target", args.target), ("--max-rate", args.max_rate)) if v is not None]
        alone += ["--confirm-runs"] if args.confirm_runs is not None else []
        if alone:
            return f"{', '.join(alone)} apply with --capacity only"
    top = (args.max_rate or DEFAULT_MAX_RATE) if args.capacity else (args.rate or DEFAULT_RATE)
    if top * args.duration > MAX_REQUESTS_PER_RUN:
        option = "--max-rate" if args.capacity else "--rate"
        return (
            f"{option} {top:g} for --duration {args.duration:g} s is {top * args.duration:.3g} requests "
            f"per run; the generator sends at most {MAX_REQUESTS_PER_RUN:.0e}"
        )
    if (args.out / "bench.json").is_dir():
        return f"--out {args.out}: {args.out / 'bench.json'} is a directory (the report is written there)"
    names = [name for name, _ in args.shape]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        return f"--shape is given twice for input(s) {twice}"
    return None


CLIENT_BOUND_SHARE = 0.5
"""A rate above this share of the client's own ceiling may be the client's limit, not the server's."""


def _client_bound(report: dict[str, Any]) -> str | None:
    """A warning when the rate the report stands on (the run's offered rate, or the capacity found)
    comes near the generator's own ceiling measured before it; None when it is well below."""
    ceiling = float(report["client_ceiling"]["ceiling_rps"])
    if "capacity" in report:
        rate, what = float(report["capacity"]["rate"]), "the capacity found"
    else:
        rate, what = float(report["result"]["offered_rps"]), "the offered rate"
    if rate <= CLIENT_BOUND_SHARE * ceiling:
        return None
    return (
        f"{what}, {rate:.0f} req/s, is {rate / ceiling:.0%} of the client's own ceiling "
        f"({ceiling:.0f} req/s against a null server): the result may be the client's limit, not the "
        "server's (run the generator on another core or machine)"
    )


def _fill_defaults(args: argparse.Namespace) -> None:
    """The defaults of options left out (None so that one given where it does not apply is told)."""
    defaults = {
        "rate": DEFAULT_RATE,
        "cv": DEFAULT_CV,
        "target": DEFAULT_TARGET,
        "max_rate": DEFAULT_MAX_RATE,
        "confirm_runs": DEFAULT_CONFIRM_RUNS,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def _byte_range(sizes: list[int]) -> str:
    low, high = min(sizes), max(sizes)
    return f"{low:,} bytes each" if low == high else f"{low:,} to {high:,} bytes"


def _bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sloserve.bench.payload import Payload, request_bytes, sized_requests
    from sloserve.bench.plots import plot_capacity, plot_latency_cdf
    from sloserve.bench.runner import (
        ArrivalSpec,
        fetch_metadata,
        live_capacity,
        make_target,
        measure_ceiling,
        run_load,
    )
    from sloserve.bench.summary import summarize
    from sloserve.bench.tables import capacity_table, summary_table
    from sloserve.bench.targets import specs_from_metadata
    from sloserve.sim.report import write_json

    console = Console()
    refused = _refused_options(args)
    if refused is not None:
        print(f"sloserve bench: error: {refused}", file=sys.stderr)
        return 2
    _fill_defaults(args)
    shapes = dict(args.shape)
    payload = Payload(args.batch_size, shapes, args.input_data)
    meta = fetch_metadata(args.url, args.model, args.protocol)  # fails here, before any output
    specs = specs_from_metadata(meta)
    requests = sized_requests(specs, payload)  # as does a payload the model cannot take
    sizes = [request_bytes(request) for request in requests]
    sized, request_size = requests[0], round(sum(sizes) / len(sizes))
    slo_s = args.slo_ms / 1e3 if args.slo_ms else None
    arrivals = ArrivalSpec(args.arrival, args.cv, args.trace)
    # the run's arrivals before anything is measured: a trace that cannot be read fails here
    planned = None if args.capacity else arrivals.workload(args.rate, args.duration, args.seed)
    if args.capacity and args.trace is not None:
        arrivals.workload(args.max_rate, args.duration, args.seed)
    if planned is not None and len(planned) > MAX_REQUESTS_PER_RUN:  # a burst of gamma arrivals
        print(
            f"sloserve bench: error: the arrivals drawn for --seed {args.seed} are {len(planned):,} "
            f"requests; the generator sends at most {MAX_REQUESTS_PER_RUN:.0e}",
            file=sys.stderr,
        )
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. under /proc, which the parser's check cannot tell as root
        print(
            f"sloserve bench: error: --out {args.out}: cannot create it: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    report: dict[str, Any] = {
        "target": {
            "url": args.url,
            "model": args.model,
            "protocol": args.protocol,
            "shared_memory": args.shared_memory,
        },
        "payload": payload.describe()
        | {
            "inputs": [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in sized],
            "bytes": request_size,
            "bytes_min": min(sizes),
            "bytes_max": max(sizes),
            "distinct_requests": len(requests),
        },
        "workload": arrivals.describe(None if args.capacity else args.rate),
        "slo_ms": args.slo_ms,
        "seed": args.seed,
    }
    described = ", ".join(f"{s.name} {s.datatype}{list(s.shape)}" for s in sized)
    if len(requests) == 1:
        console.print(f"payload: {described} ({request_size:,} bytes a request)")
    else:
        console.print(
            f"payload: {len(requests)} distinct requests from {args.input_data.source}, sent in turn "
            f"({_byte_range(sizes)}; the first {described})"
        )
    unused = payload.unused_shapes()
    if unused:
        console.print(
            f"note: --shape for {', '.join(unused)} is not used: every entry of "
            f"{args.input_data.source} gives its own"
        )
    defaulted = payload.defaulted(specs)
    if defaulted:
        console.print(
            f"note: variable dimensions of {', '.join(defaulted)} are sent as 1 "
            "(--shape NAME:D1,D2,... sets them)"
        )
    if not args.no_ceiling:  # with the model's own inputs, so the ceiling holds for its payload size
        ceiling = measure_ceiling(
            args.protocol, metadata=meta, payload=payload, shared_memory=args.shared_memory
        )
        report["client_ceiling"] = ceiling
        console.print(
            f"client ceiling against a null server: {ceiling['ceiling_rps']:.0f} req/s "
            f"({args.protocol}, {ceiling['payload']})"
        )
    if args.capacity:

        def probe(rate: float, s: dict[str, Any]) -> None:
            again = f" (run {s['repeat'] + 1} at this rate)" if s["repeat"] else ""
            console.print(f"  {rate:8.1f} req/s → attainment {s['attainment']:.4f}{again}")

        result, runs = live_capacity(
            args.url,
            args.model,
            args.protocol,
            args.slo_ms / 1e3,
            arrivals=arrivals,
            target=args.target,
            lo=min(SEARCH_START, args.max_rate / 2),
            hi=args.max_rate,
            duration=args.duration,
            seeds=(args.seed,),
            confirm_runs=args.confirm_runs,
            payload=payload,
            shared_memory=args.shared_memory,
            on_probe=probe,
        )
        report["capacity"] = result.to_dict()
        report["runs"] = runs
        console.print(capacity_table(result, runs))
        plot_capacity(runs, args.target, args.out / "attainment_vs_rate.png")
    else:
        assert planned is not None
        with Progress(
            TextColumn("sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("ended {task.fields[done]}"),  # answered or refused
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("load", total=len(planned), done=0)
            res = run_load(
                make_target(
                    args.url,
                    args.model,
                    args.protocol,
                    payload=payload,
                    seed=args.seed,
                    shared_memory=args.shared_memory,
                ),
                planned,
                slo_s,
                on_progress=lambda sent, done: bar.update(task, completed=sent, done=done),
            )
        summary = summarize(res)
        report["result"] = summary
        console.print(summary_table(summary, title=f"{args.model} @ {args.rate:g} req/s ({args.protocol})"))
        plot_latency_cdf(res, args.out / "latency_cdf.png")
    if "client_ceiling" in report:
        warning = _client_bound(report)
        if warning is not None:
            report["client_bound"] = warning
            console.print(f"[yellow]warning:[/yellow] {warning}")
    path = write_json(args.out / "bench.json", report)  # strict JSON: no NaN when nothing was answered
    console.print(f"wrote {path}")
    return 0
