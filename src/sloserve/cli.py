"""The ``sloserve`` command line. Each area adds its own subcommands through a ``register`` function.

Modules listed here expose ``register(subparsers)``; heavy imports (ONNX Runtime, torch) happen
inside the command handlers, so ``sloserve --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "sloserve.runtime.cli",  # serve
    "sloserve.runtime.profile_cli",  # profile
    "sloserve.sim.cli",  # simulate
    "sloserve.plan_cli",  # plan (outside planning/: it reads the clock to time planners)
    "sloserve.rl.cli",  # train-rl
    "sloserve.bench.cli",  # bench
)
"""Modules adding top-level commands."""

EXPERIMENT_MODULES = (
    "sloserve.experiments.batching",
    "sloserve.experiments.sponge",
    "sloserve.experiments.dnnscaler",
    "sloserve.experiments.cofb",
    "sloserve.experiments.qos",
)
"""Modules adding ``sloserve experiment NAME``."""

EXTRA_OF_PACKAGE = {
    "onnx": "server",
    "onnxruntime": "server",
    "grpc": "server",
    "prometheus_client": "server",
    "httptools": "server",
    "uvloop": "server",
    "tritonclient": "server",
    "torch": "rl",
    "gymnasium": "rl",
    "stable_baselines3": "rl",
    "ray": "ray",
}
"""Packages of the optional extras (``pyproject.toml``), by import name: a command that needs one
that is not installed says which extra to install."""


def _register_all(
    names: Sequence[str], subparsers: argparse._SubParsersAction[argparse.ArgumentParser]
) -> None:
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # the area is not part of this build
                continue
            raise
        module.register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every available command."""
    parser = argparse.ArgumentParser(
        prog="sloserve",
        description="Serve DNN inference under latency objectives at the lowest cost: "
        "an Open Inference Protocol server, a trace-driven simulator and cost planners "
        "sharing one set of scheduling policies.",
    )
    from sloserve import __version__

    parser.add_argument("--version", action="version", version=f"sloserve {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _register_all(COMMAND_MODULES, commands)
    experiment = commands.add_parser(
        "experiment",
        help="run a published-system comparison in the simulator (and against the server)",
        description="Side-by-side experiments; each writes JSON, a terminal table and PNG plots.",
    )
    experiments = experiment.add_subparsers(dest="experiment", metavar="NAME")
    _register_all(EXPERIMENT_MODULES, experiments)

    def _experiment_help(args: argparse.Namespace) -> int:
        experiment.print_help()
        return 2

    experiment.set_defaults(handler=_experiment_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sloserve`` script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    from sloserve.core.config import ConfigError

    try:
        return int(handler(args) or 0)
    except ConfigError as exc:
        print(f"sloserve: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        package = (exc.name or "").partition(".")[0]
        extra = EXTRA_OF_PACKAGE.get(package)
        if extra is None:
            raise
        print(
            f"sloserve: error: this command needs {package}, which is not installed: "
            f"pip install 'sloserve[{extra}]' (from a checkout: pip install -e '.[{extra}]')",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`sloserve simulate --example | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit must not raise again
        return 141  # as a shell reports a process ended by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
