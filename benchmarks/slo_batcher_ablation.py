"""The SLO-aware batcher's rules one at a time, on every row of ``sloserve experiment batching``.

    python benchmarks/slo_batcher_ablation.py [--profiles demo|published|FILE ...] [--scenarios ...] [--quick]

For each row this prints the SLO-aware capacity at 99% attainment with every rule on (the
default) and with one rule off, each as a ratio to the default, and Triton's default for
reference, on the same arrivals and seeds (the simulator is deterministic for a seed), and writes
``results/slo_batcher_ablation/results.json``. The rules (``sloserve.policies.slo_batcher``):

- ``efficient cap`` (``SloBatcher(efficient_cap=...)``): no batch larger than the profile's most
  efficient size;
- ``head-of-line cap`` (``head_of_line_cap``): no batch longer than half the smallest recent budget;
- ``queue plan`` (``plan_queue``): the urgent requests are passed over for a wider batch only if
  planning the queue both ways predicts fewer misses (off: the wider batch always wins);
- ``tail calibration`` (``tail_window=0`` turns it off): the tail of batch times is learnt from
  the finished batches where it is wider than the profile's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sloserve.experiments import batching
from sloserve.policies.slo_batcher import TAIL_WINDOW, SloBatcher

RULES = {
    "efficient cap": "efficient_cap",
    "head-of-line cap": "head_of_line_cap",
    "queue plan": "plan_queue",
    "tail calibration": "tail_window",
}
"""Column name: the ``SloBatcher`` argument that turns it off (a flag set False, or ``tail_window=0``)."""


def make_batcher(case: batching.Case, off: str | None = None) -> batching.Make:
    """The experiment's SLO-aware batcher for ``case``, with the rule flag ``off`` turned off."""
    shared = bool(case.scenario.slowdown)

    def build() -> tuple[Any, None]:
        p = case.profile
        batcher = SloBatcher(
            p,
            max_batch=p.max_batch,
            slo=case.slo,
            shared_hardware=shared,
            efficient_cap=off != "efficient_cap",
            head_of_line_cap=off != "head_of_line_cap",
            plan_queue=off != "plan_queue",
            tail_window=0 if off == "tail_window" else TAIL_WINDOW,
        )
        return batcher, None

    return build


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenarios", nargs="+", choices=list(batching.SCENARIOS), help="rows to run (all)")
    parser.add_argument("--quick", action="store_true", help="short runs, one seed, tight and loose only")
    parser.add_argument("--out", type=Path, default=Path("results/slo_batcher_ablation"))
    parser.add_argument(
        "--profiles",
        nargs="+",
        default=["demo"],
        help="as for 'sloserve experiment batching': demo (default), published, or profile files",
    )
    args = parser.parse_args()
    settings = batching.QUICK if args.quick else batching.Settings()
    cases, source = batching.load_cases(args.profiles, args.quick, args.scenarios)
    console = Console(width=160)
    rows: list[dict[str, Any]] = []
    with Progress(console=console) as bar:
        task = bar.add_task("capacity searches", total=(len(RULES) + 2) * len(cases))
        for case in cases:
            makes = {
                "all rules": make_batcher(case),
                **{f"no {rule}": make_batcher(case, flag) for rule, flag in RULES.items()},
                "triton default": batching.make_triton(case.profile.max_batch),
            }
            caps: dict[str, float] = {}
            for name, make in makes.items():
                caps[name] = batching.capacity(case, make, settings, seeds=settings.seeds, tol=settings.tol)
                bar.advance(task)
            rows.append(
                {
                    "scenario": case.scenario.name,
                    "model": case.profile.model,
                    "slo": case.label,
                    "slo_ms": [round(s * 1e3, 1) for s in case.slos],
                    "capacity": caps,
                }
            )
    table = Table(title=f"SLO-aware capacity at 99% (req/s), every rule and one rule off — {source}")
    for col in ("scenario", "model", "SLO", "all rules", *(f"no {r}" for r in RULES), "Triton default"):
        table.add_column(col, justify="left" if col in ("scenario", "model", "SLO") else "right")
    for r in rows:
        caps = r["capacity"]
        full = caps["all rules"]
        table.add_row(
            r["scenario"],
            r["model"],
            r["slo"],
            f"{full:.1f}",
            *(_versus(caps[f"no {rule}"], full) for rule in RULES),
            f"{caps['triton default']:.1f}",
        )
    console.print(table)
    console.print("each 'no RULE' column: that rule's capacity (its ratio to every rule on)")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "profiles": source,
        "settings": {**asdict(settings), "quick": args.quick},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "rows": rows,
    }
    path = args.out / "results.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    console.print(f"wrote {path}")


def _versus(value: float, full: float) -> str:
    return f"{value:.1f} ({value / full:.2f})" if full > 0 else f"{value:.1f}"


if __name__ == "__main__":
    main()
