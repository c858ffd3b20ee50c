"""``sloserve plan`` and ``simulate --plan`` at their limits: app size, plan file bounds, bad input."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from app_files import app_data

from sloserve.cli import main
from sloserve.core.app import App, Edge, Module
from sloserve.core.config import ConfigError
from sloserve.planning.files import problem_from_data
from sloserve.planning.harpagon import plan_harpagon
from sloserve.planning.plan_io import load_plan, plan_to_dict

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "apps"


def write(tmp_path: Path, data: dict[str, Any], name: str = "app.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def layers(n: int) -> dict[str, Any]:
    """``n`` layers of two modules, each layer fully connected to the next: 2**n paths."""
    modules = [{"name": f"m{i}_{j}", "model": "resnet50"} for i in range(n) for j in range(2)]
    edges = [
        {"from": f"m{i}_{a}", "to": f"m{i + 1}_{b}"} for i in range(n - 1) for a in range(2) for b in range(2)
    ]
    return app_data(modules=modules, edges=edges, slo_ms=2000)


def _never_listed(self: App) -> Any:
    raise AssertionError("the paths were listed")


def test_paths_are_counted_without_listing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    data = layers(20)
    app = App(
        "layers",
        tuple(Module(m["name"], m["model"]) for m in data["modules"]),
        tuple(Edge(e["from"], e["to"]) for e in data["edges"]),
        slo=1.0,
    )
    small = App("a", (Module("x", "m"), Module("y", "m"), Module("z", "m")), (Edge("x", "z"),), slo=1.0)
    assert small.path_count() == len(list(small.paths())) == 2
    monkeypatch.setattr(App, "paths", _never_listed)
    assert app.path_count() == 2**20


def test_an_app_with_too_many_paths_is_refused_before_planning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by review: 20 layers of two (2**20 paths) ran over a minute and took 1.2 GB."""
    monkeypatch.setattr(App, "paths", _never_listed)  # refused on the count, before any path is listed
    with pytest.raises(ConfigError, match=r"app.yaml: edges: the graph has 1048576 source-to-sink paths"):
        problem_from_data(layers(20), "app.yaml")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"slo_ms": 1e300}, "slo_ms"),
        ({"rate": 1e300}, "rate"),
        ({"hardware": [{"name": "t4-g4dn.xlarge", "price_per_hour": 1e308}]}, "price_per_hour"),
        ({"name": "../../escaped"}, "name"),
        ({"name": "a/b"}, "name"),
        ({"name": "a\\b"}, "name"),
        ({"name": "/abs"}, "name"),
        ({"name": ""}, "name"),
    ],
)
def test_app_values_a_plan_file_cannot_hold_are_refused(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        problem_from_data(app_data(**changes), "app.yaml")
    assert str(err.value).startswith("app.yaml: ") and field in str(err.value)


@pytest.mark.parametrize("planner", ["harpagon", "nexus-even", "inferline"])
def test_a_tuple_over_the_machine_limit_makes_the_plan_infeasible(tmp_path: Path, planner: str) -> None:
    """A fan-out of 1e6 needs thousands of machines: infeasible, in a file the loader accepts."""
    app = write(tmp_path, app_data(edges=[{"from": "det", "to": "cls", "fanout": 1e6}]))
    out = tmp_path / "plan.yaml"
    assert main(["plan", str(app), "--planner", planner, "--out", str(out)]) == 1
    plan = load_plan(out)
    assert not plan.feasible and not plan.modules


def test_the_machine_limit_names_the_module(tmp_path: Path) -> None:
    app = write(tmp_path, app_data(rate=1e6, modules=[{"name": "det", "model": "yolov5s"}], edges=[]))
    out = tmp_path / "plan.yaml"
    assert main(["plan", str(app), "--out", str(out)]) == 1
    assert "module 'det' needs" in load_plan(out).reason and "at most 1024" in load_plan(out).reason


def test_compare_shows_no_ratio_for_infeasible_plans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = write(tmp_path, app_data(slo_ms=1))
    assert main(["plan", str(app), "--compare", "--out", str(tmp_path / "p.yaml")]) == 1
    out = capsys.readouterr().out
    assert "nan" not in out and "—" in out


def test_output_that_cannot_be_written_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = str(EXAMPLES / "qa.yaml")
    with pytest.raises(SystemExit) as exit_:
        main(["plan", app, "--out", str(tmp_path / ("x" * 300 + ".yaml"))])
    assert exit_.value.code == 2 and "cannot write" in capsys.readouterr().err
    if sys.platform == "linux":
        assert main(["plan", app, "--out", "/proc/sloserve-test.yaml"]) == 2
        assert "/proc/sloserve-test.yaml: cannot write: " in capsys.readouterr().err


def traffic_plan(tmp_path: Path) -> Path:
    plan = plan_harpagon(problem_from_data(app_data(), str(tmp_path / "app.yaml")))
    write(tmp_path, app_data())
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan_to_dict(plan, str(tmp_path / "app.yaml"))))
    return path


def test_simulating_on_a_catalogue_without_the_plans_hardware_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = traffic_plan(tmp_path)
    used = load_plan(plan).modules[0].tuples[0].hardware
    other = write(
        tmp_path, app_data(hardware=[{"name": "cpu-c6i.2xlarge", "price_per_hour": 0.34}]), "cpu.yaml"
    )
    assert main(["simulate", "--plan", str(plan), "--app", str(other), "--duration", "1"]) == 2
    said = f"{plan}: modules.0.tuples.0.hardware: {used!r} is not in the catalogue of {other}"
    assert said in capsys.readouterr().err


def test_the_request_cap_counts_every_module_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """100 req/s in and 200 req/s at the child (fan-out 2): 300 module req/s against the cap."""
    import sloserve.sim.experiment

    plan = traffic_plan(tmp_path)
    monkeypatch.setattr(sloserve.sim.experiment, "MAX_REQUESTS_PER_RUN", 500)
    assert main(["simulate", "--plan", str(plan), "--duration", "2"]) == 2  # 200 in, 600 in all
    assert "600 module requests" in capsys.readouterr().err
    assert main(["simulate", "--plan", str(plan), "--duration", "0.001"]) == 2  # 0.1 input requests
    assert "at least 1 input" in capsys.readouterr().err


def test_simulation_reports_are_strict_json() -> None:
    from sloserve.plan_cli import _no_nan

    report = _no_nan({"attainment": math.nan, "module_met": {"det": math.nan, "cls": 1.0}, "requests": 0})
    assert report == {"attainment": None, "module_met": {"det": None, "cls": 1.0}, "requests": 0}
    json.dumps(report, allow_nan=False)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--app", "a.yaml"], "--app"),
        (["--duration", "5", "--dispatch", "harpagon"], "--dispatch, --duration"),
    ],
)
def test_plan_options_without_a_plan_are_refused(
    args: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", *args])
    assert exit_.value.code == 2
    assert f"{named} only apply with --plan" in capsys.readouterr().err


def test_quick_shortens_a_plan_simulation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = traffic_plan(tmp_path)
    out = tmp_path / "sim"
    args = ["simulate", "--plan", str(plan), "--duration", "5", "--quick", "--dispatch", "harpagon"]
    assert main([*args, "--out", str(out)]) == 0
    assert "for 1 s" in capsys.readouterr().out
    (result,) = json.loads((out / "plan_simulation.json").read_text())["results"]
    assert result["duration"] == 1.0
