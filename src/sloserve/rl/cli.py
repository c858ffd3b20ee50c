"""``sloserve train-rl CONFIG``: train the QoS scheduling policy in the simulator and save it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from sloserve import cli_args


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "train-rl",
        help="train the RL QoS scheduler (PPO/DQN, CPU) on a heterogeneous pool in the simulator",
        description="Train the RL scheduler of a QoS setup file (sloserve-qos/v1; see "
        "examples/qos/pool.yaml) and save OUT.zip + OUT.json, scheduler 'qos_rl' of `sloserve "
        "experiment qos` (it chooses among the setup's variants).",
    )
    p.add_argument("config", help="QoS setup file (YAML/JSON)")
    p.add_argument(
        "--out",
        type=cli_args.output_file,
        default=None,
        help="where to save the policy (default: the config's train.out)",
    )
    p.add_argument(
        "--timesteps", type=cli_args.count, default=None, help="decisions to train on (overrides the config)"
    )
    p.add_argument("--seed", type=cli_args.seed, default=None, help="training seed (overrides the config)")
    p.set_defaults(handler=_handler)


def train_with_progress(
    setup: Any, *, out: str | Path | None = None, params: Any = None
) -> tuple[Any, float]:
    """Train with a rich progress bar showing the recent mean utility; returns (result, seconds)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sloserve.rl.train import planned_timesteps, train

    t0 = time.perf_counter()
    columns = (
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[utility]}"),
    )
    with Progress(*columns) as bar:
        task = bar.add_task("train", total=planned_timesteps(params or setup.file.train), utility="")

        def report(done: int, total: int, utility: float | None) -> None:
            text = "" if utility is None else f"recent episodes: utility/request {utility:.4f}"
            bar.update(task, completed=done, total=total, utility=text)

        result = train(setup, params=params, out=out, progress=report)
    return result, time.perf_counter() - t0


def _handler(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sloserve.rl.config import load_setup
    from sloserve.rl.train import policy_path

    setup = load_setup(args.config)
    updates = {k: v for k, v in (("timesteps", args.timesteps), ("seed", args.seed)) if v is not None}
    params = setup.file.train.model_copy(update=updates)
    if args.out is None:
        policy_path(params.out, f"{args.config}: train.out")  # refused before the progress bar shows
    result, seconds = train_with_progress(setup, out=args.out, params=params)
    Console().print(
        f"saved {result.path} (+ {result.path.with_suffix('.json').name}): {result.timesteps} decisions, "
        f"{result.episodes} episodes, {seconds:.0f} s; compare it with `sloserve experiment qos --config "
        f"{args.config} --policy {result.path}`"
    )
    return 0
