"""CPU sets: pin a process (and the threads and processes it starts) to cores, split cores between sides.

A server is judged against raw ONNX Runtime on the *same* cores; the client that loads it should
not take those cores away from it (as a client on another machine would not). On Linux the
benchmark pins the server (and raw ONNX Runtime) to one CPU set and the load generator to the rest.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def available_cpus() -> list[int]:
    """The CPUs this process may run on (all of ``os.cpu_count()`` where affinity is unsupported)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def parse_cpu_list(text: str) -> list[int]:
    """``"0-3,6"`` → ``[0, 1, 2, 3, 6]``; a clear ``ValueError`` for anything else."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                cpus.update(range(lo, hi + 1))
            else:
                cpus.add(int(part))
        except ValueError:
            raise ValueError(f"bad CPU list {text!r}: expected numbers and ranges like 0-3,6") from None
    if not cpus or min(cpus) < 0:
        raise ValueError(f"bad CPU list {text!r}: expected numbers and ranges like 0-3,6")
    return sorted(cpus)


@dataclass(frozen=True)
class CpuSplit:
    """Where the server side and the client side of a benchmark run."""

    server: list[int]
    client: list[int]

    @property
    def shared(self) -> bool:
        """True when client and server compete for the same cores."""
        return bool(set(self.server) & set(self.client))

    def describe(self) -> str:
        """One line for reports."""
        if self.shared:
            return f"server and client share CPUs {_fmt(self.server)}"
        return f"server on CPUs {_fmt(self.server)}, client on CPUs {_fmt(self.client)}"


def split_cpus(server: str | None) -> CpuSplit:
    """The split for ``--server-cpus``: None → the first half of the available CPUs for the server
    (the rest for the client; all shared on one CPU); ``"all"`` → everything shared; else a list."""
    cpus = available_cpus()
    if server == "all" or (server is None and len(cpus) < 2):
        return CpuSplit(cpus, cpus)
    if server is None:
        half = len(cpus) // 2
        return CpuSplit(cpus[:half], cpus[half:])
    chosen = parse_cpu_list(server)
    unknown = sorted(set(chosen) - set(cpus))
    if unknown:
        raise ValueError(f"CPUs {unknown} are not available to this process (available: {_fmt(cpus)})")
    rest = [c for c in cpus if c not in chosen]
    return CpuSplit(chosen, rest or chosen)


def add_server_cpus_argument(parser: argparse.ArgumentParser, default: str | None) -> None:
    """``--server-cpus`` for a benchmark: where the server side runs (see :func:`split_cpus`)."""
    parser.add_argument(
        "--server-cpus",
        default=default,
        help="CPUs for the server(s) and raw ONNX Runtime, e.g. 0 or 0-3; the client gets the rest "
        f"('all': server and client share every CPU; default: {default or 'the first half'})",
    )


def split_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> CpuSplit:
    """The split ``--server-cpus`` asks for; a usage error naming the CPUs when it cannot be had."""
    try:
        return split_cpus(args.server_cpus)
    except ValueError as exc:
        parser.error(str(exc))


@contextmanager
def pinned(cpus: list[int] | None) -> Iterator[None]:
    """Run the block (and the threads and processes it starts) on ``cpus``; None = unchanged."""
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _fmt(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)
