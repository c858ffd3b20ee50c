"""App files, hardware catalogues and plan files: documented formats, errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from app_files import app_data

from sloserve.core.config import ConfigError
from sloserve.planning.files import load_problem, problem_from_data
from sloserve.planning.harpagon import plan_harpagon
from sloserve.planning.nexus import plan_nexus
from sloserve.planning.plan_io import load_plan, plan_from_data, plan_to_dict, save_plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "apps"


@pytest.mark.parametrize("name", ["traffic", "traffic_branch", "qa"])
def test_example_apps_load_and_plan(name: str) -> None:
    problem = load_problem(EXAMPLES / f"{name}.yaml")
    plan = plan_harpagon(problem)
    assert plan.feasible
    assert {m.name for m in plan.modules} == {m.name for m in problem.app.modules}


def load(data: dict[str, Any]) -> None:
    problem_from_data(data, "app.yaml", EXAMPLES)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"slo_ms": -5}, "slo_ms"),
        ({"rate": None}, "rate"),
        ({"modules": []}, "modules"),
        ({"edges": [{"from": "det", "to": "nope"}]}, "edges.0.to"),
        ({"edges": [{"from": "det", "to": "cls", "fanout": 0}]}, "edges.0.fanout"),
        ({"edges": [{"from": "det", "to": "cls"}, {"from": "cls", "to": "det"}]}, "edges"),
        ({"modules": [{"name": "det", "model": "yolov5s"}, {"name": "det", "model": "x"}]}, "modules.1.name"),
        ({"modules": [{"name": "det", "model": "unknown"}], "edges": []}, "modules.0.model"),
        ({"hardware": [{"name": "t4", "price_per_hour": 0}]}, "hardware"),
        ({"planner": {"grid_steps": 0}}, "planner.grid_steps"),
        ({"planner": {"wait_quantile": 1.5}}, "planner.wait_quantile"),
        ({"slo": 200}, "slo"),
    ],
)
def test_app_file_errors_name_the_file_and_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(app_data(**changes))
    assert "app.yaml" in str(err.value) and field in str(err.value)


def test_missing_catalogue_is_reported(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text(yaml.safe_dump(app_data(hardware="nowhere.yaml")))
    with pytest.raises(ConfigError, match=r"nowhere\.yaml"):
        load_problem(tmp_path / "app.yaml")


def test_inline_hardware_and_planner_settings() -> None:
    hw = [{"name": "t4-g4dn.xlarge", "cores": 4, "price_per_hour": 0.5}]
    p = problem_from_data(
        app_data(hardware=hw, planner={"grid_steps": 10, "wait_quantile": None, "utilizations": [1.0]}),
        "app.yaml",
        EXAMPLES,
    )
    assert [h.name for h in p.hardware] == ["t4-g4dn.xlarge"]
    assert (p.grid_steps, p.wait_quantile, p.utilizations) == (10, None, (1.0,))
    assert p.app.slo == pytest.approx(0.2) and p.app.module_rates() == {"det": 100, "cls": 200}


def test_plan_files_round_trip(tmp_path: Path) -> None:
    problem = load_problem(EXAMPLES / "traffic_branch.yaml")
    for plan in (plan_harpagon(problem), plan_nexus(problem)):
        path = tmp_path / f"{plan.planner}.yaml"
        save_plan(plan, path)
        back = load_plan(path)
        assert back.cost_per_hour == pytest.approx(plan.cost_per_hour)
        assert [m.name for m in back.modules] == [m.name for m in plan.modules]
        for a, b in zip(plan.modules, back.modules, strict=True):
            assert a.budget == pytest.approx(b.budget) and len(a.tuples) == len(b.tuples)
            for x, y in zip(a.tuples, b.tuples, strict=True):
                assert (x.hardware, x.batch, x.count) == (y.hardware, y.batch, y.count)
                assert x.exec_time == pytest.approx(y.exec_time) and x.wait == pytest.approx(y.wait)
        assert len(back.shared) == len(plan.shared)
        assert back.edges == plan.edges
        # JSON works the same
        save_plan(plan, tmp_path / "p.json")
        assert load_plan(tmp_path / "p.json").cost_per_hour == pytest.approx(plan.cost_per_hour)


def test_plan_files_keep_the_app_file_relative(tmp_path: Path) -> None:
    from dataclasses import replace

    plan = replace(plan_harpagon(load_problem(EXAMPLES / "qa.yaml")), app_file=str(EXAMPLES / "qa.yaml"))
    out = tmp_path / "plans" / "qa.yaml"
    save_plan(plan, out)
    stored = yaml.safe_load(out.read_text())["app_file"]
    assert not Path(stored).is_absolute()
    assert Path(load_plan(out).app_file or "").resolve() == (EXAMPLES / "qa.yaml").resolve()


def test_plan_file_errors_name_the_field() -> None:
    data = plan_to_dict(plan_harpagon(load_problem(EXAMPLES / "qa.yaml")))
    data["modules"][0]["tuples"][0]["batch"] = 0
    with pytest.raises(ConfigError, match=r"plan.yaml: modules\.0\.tuples\.0\.batch"):
        plan_from_data(data, "plan.yaml")


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda d: d["edges"][0].update(to="nosuch"), "edge detect->nosuch names unknown module 'nosuch'"),
        (lambda d: d["edges"][0].update(to=d["edges"][0]["from"]), "the module graph has a cycle"),
        (lambda d: d["modules"][1].update(name=d["modules"][0]["name"]), "module names must be unique"),
        (lambda d: d["modules"][0].update(tuples=[]), "modules.0.tuples: a feasible plan runs module"),
        (lambda d: d.update(modules=[], edges=[]), "modules: a feasible plan has at least one module"),
        (lambda d: d["modules"][0]["tuples"][0].update(count=10**9), "modules.0.tuples.0.count"),
    ],
)
def test_a_plan_file_whose_modules_do_not_hold_together_is_refused(edit: Any, said: str) -> None:
    data = plan_to_dict(plan_harpagon(load_problem(EXAMPLES / "traffic.yaml")))
    edit(data)
    with pytest.raises(ConfigError) as err:
        plan_from_data(data, "plan.yaml")
    assert str(err.value).startswith("plan.yaml: ") and said in str(err.value)


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (
            lambda d: d["modules"][0]["tuples"][0].update(hardware="nosuch"),
            "modules.0.tuples.0.hardware: 'nosuch' is not in the catalogue of",
        ),
        (lambda d: d["modules"][0].update(model="nosuch"), "modules.0.tuples.0: no profile for model 'no"),
        (lambda d: d.update(rate=1e9), "rate: 1e+09 req/s for --duration 5 s"),
        (lambda d: d.update(rate=0), "rate: 0 req/s"),
    ],
)
def test_simulating_a_plan_its_app_cannot_run_is_refused(
    tmp_path: Path, edit: Any, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from sloserve.cli import main

    plan = plan_harpagon(load_problem(EXAMPLES / "traffic.yaml"))
    data = plan_to_dict(plan, str((EXAMPLES / "traffic.yaml").resolve()))
    edit(data)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["simulate", "--plan", str(path), "--duration", "5"]) == 2
    assert f"{path}: {said}" in capsys.readouterr().err


def test_a_brute_force_search_too_large_to_finish_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Six modules on a 50-step grid would be 1.8e10 budget splits for the exhaustive searches
    (bruteforce, nexus-dp): refused before they start; --compare reports them instead of hanging."""
    from sloserve.cli import main

    app = yaml.safe_load((EXAMPLES / "traffic.yaml").read_text())
    app["modules"] = [{"name": f"m{i}", "model": "resnet50"} for i in range(6)]
    app["edges"] = [{"from": f"m{i}", "to": f"m{i + 1}"} for i in range(5)]
    app["planner"] = {"grid_steps": 50}
    app["hardware"], app["profiles"] = str(EXAMPLES / "hardware.yaml"), str(EXAMPLES / "profiles.yaml")
    path = tmp_path / "chain6.yaml"
    path.write_text(yaml.safe_dump(app))
    out = tmp_path / "plan.yaml"
    assert main(["plan", str(path), "--planner", "bruteforce", "--out", str(out)]) == 2
    assert main(["plan", str(path), "--planner", "nexus-dp", "--out", str(out)]) == 2
    assert capsys.readouterr().err.count("an exhaustive budget split would try 1.8e+10 splits") == 2
    assert main(["plan", str(path), "--compare", "--out", str(out)]) == 0  # bruteforce skipped
    assert capsys.readouterr().out.count("too large to search") == 2
    assert out.is_file()
    app["modules"] = [{"name": f"m{i}", "model": "resnet50"} for i in range(300)]
    app["edges"] = []
    path.write_text(yaml.safe_dump(app))
    with pytest.raises(ConfigError, match=r"chain6.yaml: modules: List should have at most 256 items"):
        load_problem(path)
