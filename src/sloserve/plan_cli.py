"""``sloserve plan APP.yaml`` and ``sloserve simulate --plan PLAN``.

:func:`register` is called by :mod:`sloserve.cli` after the simulator's commands are registered:
it adds ``plan`` and, when the ``simulate`` command exists, extends it with ``--plan`` (the plain
``simulate`` behaviour is unchanged without it).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sloserve import cli_args

PLANNERS = ("harpagon", "bruteforce", "nexus-dp", "nexus-even", "inferline")
DEFAULT_DURATION = 60.0
"""Seconds of input ``simulate --plan`` runs without ``--duration``."""


def register(subparsers: Any) -> None:
    """Add ``plan`` (and ``simulate --plan``) to the ``sloserve`` command line."""
    add_plan_parser(subparsers)
    simulate = subparsers.choices.get("simulate")
    if simulate is not None:
        add_simulate_plan_options(simulate)


def add_plan_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The ``plan`` command."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "plan",
        help="plan the cheapest serving configuration of a multi-model app under its SLO (Harpagon)",
        description="Read an app file (DAG, SLO, rate, hardware catalogue, profiles), print the plan "
        "as a table and write it as a plan file. Format: see examples/apps/README.md.",
    )
    p.add_argument("app", type=Path, help="application file (YAML or JSON)")
    p.add_argument("--planner", choices=PLANNERS, default="harpagon", help="planner (default: harpagon)")
    p.add_argument("--out", type=_output_file, help="plan file (default: results/plans/<app>.<planner>.yaml)")
    p.add_argument(
        "--grid-steps", type=cli_args.int_range(1, 1000), help="override the app file's budget grid"
    )
    p.add_argument("--compare", action="store_true", help="also run the other planners and compare costs")
    p.set_defaults(handler=_plan_command)
    return p


def _output_file(text: str) -> Path:
    """:func:`cli_args.output_file`, with an unusable name (e.g. too long) an argument error."""
    try:
        return cli_args.output_file(text)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{text}: cannot write: {exc.strerror or exc}") from None


def _make_plan(planner: str, problem: Any) -> Any:
    from sloserve.planning.assemble import within_machine_limit
    from sloserve.planning.bruteforce import plan_bruteforce
    from sloserve.planning.harpagon import plan_harpagon
    from sloserve.planning.inferline import plan_inferline
    from sloserve.planning.nexus import plan_nexus

    makers: dict[str, Callable[[Any], Any]] = {
        "harpagon": plan_harpagon,
        "bruteforce": plan_bruteforce,
        "nexus-dp": lambda p: plan_nexus(p, "dp"),
        "nexus-even": lambda p: plan_nexus(p, "even"),
        "inferline": plan_inferline,
    }
    start = time.perf_counter()
    plan = within_machine_limit(makers[planner](problem))
    return replace(plan, planning_time=time.perf_counter() - start)


def _plan_command(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rich.console import Console
    from rich.table import Table

    from sloserve.core.config import ConfigError
    from sloserve.planning.bruteforce import SearchTooLarge
    from sloserve.planning.files import load_problem
    from sloserve.planning.plan_io import save_plan
    from sloserve.planning.report import plan_table

    problem = load_problem(args.app)
    if args.grid_steps is not None:
        problem = replace(problem, grid_steps=args.grid_steps)
    console = Console(width=max(Console().width, 130))
    try:
        plan = replace(_make_plan(args.planner, problem), app_file=str(args.app))
    except SearchTooLarge as exc:
        raise ConfigError(f"{args.app}: {exc}") from None
    console.print(plan_table(plan))
    out = args.out or Path("results") / "plans" / f"{problem.app.name}.{args.planner}.yaml"
    try:
        save_plan(plan, out)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write: {exc.strerror or exc}") from None
    console.print(f"plan written to {out}")
    if args.compare:
        t = Table(title="planners compared", title_justify="left")
        for col in ("planner", "$/h", "vs " + args.planner, "planning ms"):
            t.add_column(col, justify="left" if col == "planner" else "right")
        for name in PLANNERS:
            try:
                other = plan if name == args.planner else _make_plan(name, problem)
            except SearchTooLarge:
                t.add_row(name, "too large to search", "", "")
                continue
            both = plan.feasible and other.feasible
            t.add_row(
                name,
                f"{other.cost_per_hour:.3f}" if other.feasible else "infeasible",
                f"{other.cost_per_hour / plan.cost_per_hour:.2f}×" if both else "—",
                f"{other.planning_time * 1e3:.1f}",
            )
        console.print(t)
    return 0 if plan.feasible else 1


def add_simulate_plan_options(simulate: argparse.ArgumentParser) -> None:
    """Extend ``simulate`` with ``--plan``; without it the original command runs unchanged."""
    simulate.add_argument("--plan", type=Path, help="simulate a plan file (from `sloserve plan`) instead")
    simulate.add_argument("--app", type=Path, help="with --plan: app file (default: the plan's app_file)")
    simulate.add_argument(
        "--dispatch",
        choices=("planned", "harpagon", "round_robin", "both"),
        help="with --plan: dispatch ('both', the default: batch-aware and round-robin)",
    )
    simulate.add_argument(
        "--duration",
        type=cli_args.positive,
        help=f"with --plan: seconds of input (default {DEFAULT_DURATION:g}; --quick: 1/5 of it)",
    )
    original = simulate.get_default("handler")

    def handler(args: argparse.Namespace) -> int:
        if args.plan is None:
            given = [f"--{n}" for n in ("app", "dispatch", "duration") if getattr(args, n) is not None]
            if given:
                simulate.error(f"{', '.join(given)} only apply with --plan")
            return int(original(args) or 0)
        if getattr(args, "config", None):
            simulate.error("give either an experiment CONFIG or --plan, not both")
        useless = [f"--{n.replace('_', '-')}" for n in ("example", "no_plots") if getattr(args, n, False)]
        if useless:
            simulate.error(f"{' and '.join(useless)}: only for an experiment, not with --plan")
        return _simulate_plan_command(args)

    simulate.set_defaults(handler=handler)


def _simulate_plan_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from sloserve.core.config import ConfigError
    from sloserve.planning.files import load_problem
    from sloserve.planning.plan import DispatchPolicy
    from sloserve.planning.plan_io import load_plan
    from sloserve.planning.simulate import simulate_plan
    from sloserve.sim.experiment import MAX_REQUESTS_PER_RUN

    plan = load_plan(args.plan)
    app_file = args.app or (Path(plan.app_file) if plan.app_file else None)
    if app_file is None:
        raise ConfigError(f"{args.plan}: the plan names no app_file; give --app APP.yaml for its profiles")
    problem = load_problem(app_file)
    if not plan.feasible:
        raise ConfigError(f"{args.plan}: the plan is infeasible ({plan.reason})")
    if plan.shared:
        raise ConfigError(f"{args.plan}: plans with shared duty-cycle nodes (Nexus) cannot be simulated")
    catalogue = {h.name for h in problem.hardware}
    for i, module in enumerate(plan.modules):
        for j, planned in enumerate(module.tuples):
            where = f"{args.plan}: modules.{i}.tuples.{j}"
            if planned.hardware not in catalogue:
                raise ConfigError(
                    f"{where}.hardware: {planned.hardware!r} is not in the catalogue of {app_file}"
                )
            try:
                problem.profiles.get(module.model, planned.hardware)
            except KeyError as exc:
                raise ConfigError(f"{where}: {exc.args[0]} (profiles of {app_file})") from None
    duration = (args.duration or DEFAULT_DURATION) / (5 if args.quick else 1)
    inputs = plan.rate * duration
    total = sum(m.rate for m in plan.modules) * duration  # every module request the run holds
    if inputs < 1 or max(inputs, total) > MAX_REQUESTS_PER_RUN:
        raise ConfigError(
            f"{args.plan}: rate: {plan.rate:g} req/s for --duration {duration:g} s makes {inputs:g} input "
            f"and {total:g} module requests; the simulator takes at least 1 input and at most "
            f"{MAX_REQUESTS_PER_RUN:.0e} module requests per run"
        )
    both: list[DispatchPolicy | None] = ["harpagon", "round_robin"]
    dispatch = args.dispatch or "both"
    kinds = both if dispatch == "both" else [None if dispatch == "planned" else args.dispatch]
    seed = args.seed if args.seed is not None else 0
    results = [
        simulate_plan(plan, problem.profiles, problem.hardware, dispatch=k, duration=duration, seed=seed)
        for k in kinds
    ]
    t = Table(
        title=f"{plan.app}: {plan.planner} plan, Poisson input at {plan.rate:g} req/s for "
        f"{duration:g} s (seed {seed}), SLO {plan.slo * 1e3:g} ms",
        title_justify="left",
    )
    for col in ("dispatch", "requests", "SLO met", "p50 ms", "p99 ms", "unanswered", "module budgets met"):
        t.add_column(col, justify="left" if col in ("dispatch", "module budgets met") else "right")
    for r in results:
        mods = ", ".join(f"{n} {v:.1%}" for n, v in r.module_met.items())
        t.add_row(
            r.dispatch,
            str(r.requests),
            f"{r.attainment:.2%}",
            f"{r.latency_p50 * 1e3:.1f}",
            f"{r.latency_p99 * 1e3:.1f}",
            str(r.dropped),
            mods,
        )
    Console(width=max(Console().width, 130)).print(t)
    if args.out:
        report = {"plan": str(args.plan), "results": [_no_nan(r.to_dict()) for r in results]}
        out = args.out / "plan_simulation.json"
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        except OSError as exc:
            raise ConfigError(f"{out}: cannot write: {exc.strerror or exc}") from None
    return 0


def _no_nan(value: Any) -> Any:
    """``value`` with every NaN (no requests to measure) as None, for strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    return value
