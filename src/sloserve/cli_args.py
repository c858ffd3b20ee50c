"""Argument types for the command line: a bad value is refused by argparse, naming the option,
with exit status 2, before any work starts (not a traceback from deep inside a run).

Each is an ``argparse`` ``type=``: it takes the text and returns the value or raises
:class:`argparse.ArgumentTypeError` with what is wrong.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

from sloserve.core.config import MAX_SEED


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default, except where there is none to show (None, False):
    a required option or a flag would otherwise read "(default: None)"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _number(text: str, kind: type[float] | type[int]) -> float:
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive(text: str) -> float:
    """A finite number > 0 (rates, durations, sizes)."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return value


def positive_at_most(limit: float) -> Callable[[str], float]:
    """A finite number in (0, ``limit``] (a simulated duration the run can finish)."""

    def parse(text: str) -> float:
        value = positive(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"{text} must be at most {limit:g}")
        return value

    parse.__name__ = "number"
    return parse


def non_negative(text: str) -> float:
    """A finite number >= 0 (delays, timeouts)."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be >= 0")
    return value


def fraction(text: str) -> float:
    """A number in (0, 1] (an attainment target)."""
    value = _number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} must lie in (0, 1]")
    return value


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer in ``low..high`` (``high`` None: no upper bound)."""

    def parse(text: str) -> int:
        value = int(_number(text, int))
        if high is None and value < low:
            raise argparse.ArgumentTypeError(f"{text} must be >= {low}")
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} must lie in {low}..{high}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its "invalid ... value" message
    return parse


count = int_range(1)
"""An integer >= 1."""

seed = int_range(0, MAX_SEED)
"""A random seed: 0 .. 2**32 - 1."""


MAX_PORT = 65535


def _port(text: str, low: int, what: str) -> int:
    value = int(_number(text, int))
    if not low <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"{text} is not a port ({what})")
    return value


def port_or_off(text: str) -> int:
    """A TCP port (0: any free one) or -1 for "off"."""
    return _port(text, -1, f"0..{MAX_PORT}, or -1: off")


def port(text: str) -> int:
    """A TCP port (0: any free one)."""
    return _port(text, 0, f"0..{MAX_PORT}")


def endpoint(text: str) -> str:
    """A server's address, ``host:port`` (port 1..65535; ``http://`` before it allowed)."""
    rest = text.split("://", 1)[1] if "://" in text else text
    host, colon, port = rest.rstrip("/").rpartition(":")
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"{text!r} is not host:port (a port in 1..{MAX_PORT})")
    return text


MAX_DIMENSION = 1 << 31
"""Largest size of one tensor dimension a command takes (a payload's total is checked against the
model later)."""


def input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``NAME:D1,D2,...``: an input's name and the sizes of its dimensions (perf_analyzer's
    ``--shape``); each size an integer in 1..2**31."""
    name, colon, dims = text.rpartition(":")
    if not colon or not name or not dims:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not NAME:D1,D2,... (an input's name and its dimensions)"
        )
    sizes = []
    for part in dims.split(","):
        digits = part.isascii() and part.isdigit() and len(part) <= len(str(MAX_DIMENSION))
        if not digits or not 1 <= int(part) <= MAX_DIMENSION:
            raise argparse.ArgumentTypeError(
                f"{text[:80]!r}: dimension {part[:20]!r} is not an integer in 1..{MAX_DIMENSION}"
            )
        sizes.append(int(part))
    return name, tuple(sizes)


def existing_file(text: str) -> Path:
    """A file to read: it must exist (and not be a directory)."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: {'is a directory' if path.is_dir() else 'no such file'}")
    return path


def output_file(text: str) -> Path:
    """A file to write: not an existing directory, and in a directory that exists or can be made."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name")
    _creatable(path.parent, text)
    return path


def output_dir(text: str) -> Path:
    """A directory to write into: not an existing file, and one that exists or can be made."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a directory")
    _creatable(path, text)
    return path


def _creatable(directory: Path, text: str) -> None:
    """Refuse a directory that neither exists nor can be made (a file in the way, no permission)."""
    for parent in (directory, *directory.parents):
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise argparse.ArgumentTypeError(f"{text}: cannot write in {parent}")
            return
