"""Every ``sloserve`` command's ``--help`` renders as written (argparse %-formats help texts)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from sloserve.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, path: str = "sloserve") -> Iterator[tuple[str, str, str]]:
    """(command path, its help, its summary line in the parent's listing) for every subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listing = parser.format_help()
            for name, sub in action.choices.items():
                yield f"{path} {name}", sub.format_help(), listing
                yield from _parsers(sub, f"{path} {name}")


def test_every_help_text_renders_without_formatting_leaks() -> None:
    seen = list(_parsers(build_parser()))
    assert len(seen) >= 10
    for command, text, listing in seen:
        for leak in ("option_strings", "%(", "{'"):
            assert leak not in text, f"{command} --help shows {leak!r}"
            assert leak not in listing, f"the listing above {command} shows {leak!r}"


def test_the_batching_summary_says_99_percent(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["experiment", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Clipper batching: capacity at 99% attainment sponge" in out


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """Found by review: ``sloserve simulate --example | head`` ended in a BrokenPipeError traceback."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "sloserve", "simulate", "--example"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # before the command writes
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 141 and "Traceback" not in err


def test_a_command_whose_extra_is_not_installed_says_which_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    """Found by review: ``train-rl`` without the ``rl`` extra ended in an ImportError traceback."""
    import sys

    from sloserve.cli import main

    for name in list(sys.modules):  # as on a machine without gymnasium: nothing of it imported yet
        if name.startswith(("gymnasium", "stable_baselines3", "sloserve.rl.")) and name != "sloserve.rl.cli":
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # importing it now fails as when absent
    from pathlib import Path

    pool = Path(__file__).parents[1] / "examples" / "qos" / "pool.yaml"
    status = main(["train-rl", str(pool), "--timesteps", "10", "--out", f"{tmp_path}/p"])
    err = capsys.readouterr().err
    assert status == 2 and "needs gymnasium, which is not installed" in err and "'.[rl]'" in err
