"""``sloserve serve [REPO]``: serve a model repository (the built-in demo repository by default)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from sloserve import cli_args
from sloserve.runtime.log_settings import LEVELS

MAX_BODY_MB = 2047.0
"""Largest ``--max-body-mb``: gRPC's message limit is a C int (under 2 GiB)."""
MIN_BODY_MB = 1 / 1024
"""Smallest ``--max-body-mb``: a KiB (below it no inference request fits)."""


def _body_limit(text: str) -> float:
    """``--max-body-mb``: MiB in ``MIN_BODY_MB..MAX_BODY_MB``."""
    value = cli_args.positive_at_most(MAX_BODY_MB)(text)
    if value < MIN_BODY_MB:
        raise argparse.ArgumentTypeError(f"{text} must be at least {MIN_BODY_MB:g} (a KiB)")
    return value


def register(subparsers: Any) -> None:
    """Add ``serve`` to the ``sloserve`` command line."""
    p = subparsers.add_parser(
        "serve",
        help="serve a model repository over HTTP and gRPC (Open Inference Protocol)",
        description="Serve the models of REPO (default: the built-in demo repository, built on first "
        "run) over HTTP/REST (KServe v2 + Triton extensions), gRPC (inference.GRPCInferenceService) "
        "and Prometheus metrics. SIGTERM / SIGINT drain queued requests, then stop (during start-up: "
        "after the model being loaded, without loading the rest).",
    )
    p.add_argument(
        "repository", nargs="?", type=Path, help="model repository directory (default: demo models)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--http-port", type=cli_args.port, default=8000, help="HTTP port (default: 8000)")
    p.add_argument(
        "--grpc-port", type=cli_args.port_or_off, default=8001, help="gRPC port (default: 8001; -1: off)"
    )
    p.add_argument(
        "--metrics-port",
        type=cli_args.port_or_off,
        default=8002,
        help="metrics port (default: 8002; -1: off)",
    )
    p.add_argument("--model", action="append", dest="models", help="load only this model (repeatable)")
    p.add_argument(
        "--max-body-mb",
        type=_body_limit,
        default=64.0,
        help=f"largest request body in MiB, {MIN_BODY_MB * 1024:g} KiB to {MAX_BODY_MB:g} MiB (default: 64)",
    )
    p.add_argument(
        "--drain-timeout",
        type=cli_args.non_negative,
        default=30.0,
        help="seconds to finish queued requests at stop (default: 30)",
    )
    p.add_argument(
        "--decode-workers",
        type=cli_args.int_range(0, 64),
        default=0,
        help="decode HTTP infer bodies on N threads (default 0: inline; gRPC bodies are decoded by grpcio)",
    )
    p.add_argument(
        "--decode-balance",
        choices=["load", "connection"],
        default="load",
        help="decode worker choice: by load (CoFB flow scheduling, default) or by connection",
    )
    p.add_argument(
        "--exit-on-error",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stop with an error naming them if models fail to load at start-up, as Triton does "
        "(default); --no-exit-on-error serves the models that loaded and lists the others as "
        "UNAVAILABLE in the repository index",
    )
    p.add_argument(
        "--plan",
        type=Path,
        help="deploy this plan file (sloserve plan): per module its dispatcher, instances, batch sizes "
        "and budgets; refused if it needs hardware other than this machine's 'cpu'",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=LEVELS,
        help="write log records of this level and above (default: info); clients change it with "
        "Triton's logging extension (GET/POST /v2/logging)",
    )
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from sloserve.runtime.logs import configure_logging
    from sloserve.runtime.service import ServeOptions, serve

    configure_logging(args.log_level)
    # gRPC's C core writes plain-text lines to stderr (e.g. "File descriptor limit reached" once a
    # second), not the server's JSON lines; read when grpc is imported, so set before the service
    # imports it. GRPC_VERBOSITY=ERROR in the environment brings them back.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    repository = args.repository
    if repository is None:
        from sloserve.runtime.demo.repository import ensure_demo_repository

        repository = ensure_demo_repository()
    elif not repository.is_dir():
        from sloserve.core.config import ConfigError

        raise ConfigError(f"{repository}: not a directory (a model repository has one directory per model)")
    if args.plan is not None:  # refuse a plan this machine cannot run before starting anything
        from sloserve.runtime.plan_deploy import read_plan

        read_plan(args.plan)
    options = ServeOptions(
        repository=repository,
        host=args.host,
        http_port=args.http_port,
        grpc_port=None if args.grpc_port < 0 else args.grpc_port,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        models=args.models,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        drain_timeout=args.drain_timeout,
        decode_workers=args.decode_workers,
        decode_balance=args.decode_balance,
        plan=args.plan,
        exit_on_error=args.exit_on_error,
        freeze_gc=True,
    )
    return serve(options)
