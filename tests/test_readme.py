"""The README's commands are real: every ``sloserve`` command parses, every script exists.

Running them all would take minutes to hours (they are the benchmarks); each area's tests run
its command's ``--quick`` form. Here the README is checked against the code it describes.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sloserve.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = [re.split(r"\s+# ", line)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_readme_opens_with_the_two_setup_commands() -> None:
    first = _commands()[:2]
    assert first[0].startswith("pip install -e '.[server]'") and first[0].endswith("sloserve serve")
    assert first[1] == "pip install -e '.[dev]' && python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q -e '.[dev]'" in ci and "python -m pytest" in ci


@pytest.mark.parametrize("line", [c for c in _commands() if c.startswith("sloserve ")])
def test_sloserve_commands_in_the_readme_parse(line: str) -> None:
    argv = shlex.split(line.split("|")[0].split(">")[0])[1:]
    args = build_parser().parse_args(argv)
    assert getattr(args, "handler", None) is not None, line


@pytest.mark.parametrize("line", [c for c in _commands() if c.startswith("python benchmarks/")])
def test_benchmark_scripts_in_the_readme_exist(line: str) -> None:
    assert (ROOT / shlex.split(line)[1]).is_file(), line
