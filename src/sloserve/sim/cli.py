"""``sloserve simulate [CONFIG.yaml]``: run an experiment in the simulator.

With no config it runs the embedded default (Triton vs Ray Serve vs fixed batching on a built-in
profile); ``--example`` prints that default as YAML, a starting point for your own config (the
format is documented in :mod:`sloserve.sim.experiment`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sloserve import cli_args


def register(subparsers: Any) -> None:
    """Add ``simulate`` to the ``sloserve`` command line."""
    p = subparsers.add_parser(
        "simulate",
        help="compare policies in the discrete-event simulator (default: the built-in batcher comparison)",
        description="Run an experiment in the simulator: every policy at the configured load, an "
        "optional load sweep and capacity search. Prints a table and writes results.json and PNG "
        "plots into --out (default: results/<name>/). Without CONFIG it runs the built-in "
        "comparison of the Triton, Ray Serve and fixed batchers. Config format: `sloserve simulate "
        "--example`. With --plan it simulates a plan file instead: it prints a table and writes "
        "only plan_simulation.json into --out, and nothing without --out.",
    )
    p.add_argument("config", nargs="?", help="experiment file (YAML or JSON); omit for the built-in one")
    p.add_argument(
        "--out",
        type=cli_args.output_dir,
        help="output folder (default: results/<name>/; with --plan: none, nothing is written)",
    )
    p.add_argument("--quick", action="store_true", help="a short run: 1/5 of the duration, one seed")
    p.add_argument(
        "--seed",
        type=cli_args.seed,
        help="override the config's seed (its main run; with --quick, every run: the sweep's too)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (not with --plan)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--example",
        action="store_true",
        help="print the built-in experiment as YAML and exit (no CONFIG, not with --plan)",
    )
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    import yaml

    from sloserve.core.config import ConfigError
    from sloserve.sim.experiment import DEFAULT_EXPERIMENT, Experiment, run_experiment

    if args.example:
        if args.config:
            raise ConfigError("give an experiment CONFIG or --example, not both")
        print(yaml.safe_dump(DEFAULT_EXPERIMENT, sort_keys=False), end="")
        print(_field_reference())
        return 0
    if args.config:
        exp = Experiment.from_file(args.config)
    else:
        exp = Experiment.from_data(DEFAULT_EXPERIMENT, "<built-in experiment>")
    if args.seed is not None:
        exp.spec = exp.spec.model_copy(update={"seed": args.seed})
    out = args.out or Path(exp.spec.out or Path("results") / exp.spec.name)
    run_experiment(exp, out, quick=args.quick, plots=not args.no_plots, progress=not args.no_progress)
    return 0


def _field_reference() -> str:
    """The documented config example of :mod:`sloserve.sim.experiment`, as YAML comments."""
    from sloserve.sim import experiment

    doc = experiment.__doc__ or ""
    body = doc.split("::", 1)[1].split("\n\n", 2)[1] if "::" in doc else ""
    lines = [line[4:] if line.startswith("    ") else line for line in body.splitlines()]
    return "\n# Every field (sloserve.sim.experiment):\n" + "\n".join(f"#   {line}" for line in lines)
