"""``sloserve plan`` and ``sloserve simulate --plan``, run as the examples README shows them."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from sloserve.cli import main

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "examples" / "apps" / "README.md"


def readme_commands() -> list[list[str]]:
    """The ``$ sloserve ...`` lines of the examples README, as argument lists."""
    return [shlex.split(line)[1:] for line in re.findall(r"^\$ (sloserve .+)$", README.read_text(), re.M)]


def test_the_readme_commands_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    commands = readme_commands()
    assert [c[0] for c in commands] == ["plan", "simulate"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    for args in commands:
        assert main(args) == 0, args
    out = capsys.readouterr().out
    assert "harpagon plan for traffic" in out and "SLO met" in out
    plan_dir = tmp_path / "results" / "plans"
    plan = yaml.safe_load((plan_dir / "traffic.yaml").read_text())
    assert plan["format"] == "sloserve-plan/v1" and plan["feasible"] is True
    assert (plan_dir / plan["app_file"]).resolve() == (ROOT / "examples" / "apps" / "traffic.yaml").resolve()


def test_plan_compare_and_simulate_write_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan_file = tmp_path / "branch.yaml"
    app = ROOT / "examples" / "apps" / "traffic_branch.yaml"
    assert main(["plan", str(app), "--out", str(plan_file), "--compare"]) == 0
    out = capsys.readouterr().out
    for name in ("bruteforce", "nexus-dp", "nexus-even", "inferline"):
        assert name in out
    assert (
        main(
            [
                "simulate",
                "--plan",
                str(plan_file),
                "--duration",
                "5",
                "--dispatch",
                "harpagon",
                "--seed",
                "3",
                "--out",
                str(tmp_path / "sim"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "sim" / "plan_simulation.json").read_text())
    (result,) = report["results"]
    assert result["dispatch"] == "harpagon" and result["seed"] == 3 and result["attainment"] >= 0.99


def test_bad_app_file_exits_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load((ROOT / "examples" / "apps" / "traffic.yaml").read_text())
    data["edges"][0]["to"] = "clasify"
    data["hardware"] = str(ROOT / "examples" / "apps" / "hardware.yaml")
    data["profiles"] = str(ROOT / "examples" / "apps" / "profiles.yaml")
    bad.write_text(yaml.safe_dump(data))
    assert main(["plan", str(bad), "--out", str(tmp_path / "p.yaml")]) == 2
    assert "edges.0.to: unknown module 'clasify'" in capsys.readouterr().err


def test_infeasible_plan_exits_1_and_is_written(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "examples" / "apps" / "qa.yaml").read_text())
    data.update(
        slo_ms=1,
        hardware=str(ROOT / "examples" / "apps" / "hardware.yaml"),
        profiles=str(ROOT / "examples" / "apps" / "profiles.yaml"),
    )
    app = tmp_path / "tight.yaml"
    app.write_text(yaml.safe_dump(data))
    assert main(["plan", str(app), "--out", str(tmp_path / "p.yaml")]) == 1
    written = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert written["feasible"] is False and written["reason"]
