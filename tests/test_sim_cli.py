"""``sloserve simulate``: the built-in experiment, user configs, and errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sloserve.cli import main
from sloserve.core.config import ConfigError, read_document
from sloserve.data import AZURE_CODE_TRACE
from sloserve.sim.experiment import DEFAULT_EXPERIMENT, Experiment

CONFIG = {
    "name": "mine",
    "seed": 3,
    "models": [
        {
            "name": "cnn",
            "profile": {"kind": "affine", "alpha_ms": 5, "beta_ms": 1, "max_batch": 16},
            "noise_cv": 0.1,
        }
    ],
    "policies": [
        {"scheduler": "triton", "params": {"max_queue_delay_microseconds": 2000}},
        {"label": "ray8", "scheduler": "ray", "params": {"max_batch_size": 8}},
    ],
    "workload": {"kind": "poisson", "rate": 200, "duration_s": 10, "slo_ms": 50},
    "loads": [0.5, 1.0],
    "capacity": {"target": 0.95, "lo": 50, "hi": 1000, "tol": 0.1},
}


def write(tmp_path: Path, data: object, name: str = "exp.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_builtin_experiment_runs_quick_and_writes_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for label in ("triton", "ray", "fixed-16"):
        assert label in out
    doc = json.loads((tmp_path / "results.json").read_text())
    assert set(doc["runs"]) == {p["label"] for p in DEFAULT_EXPERIMENT["policies"]}
    assert doc["seed"] == 0 and "gamma" in doc["workload"] and doc["machine"]["cores"] >= 1
    for png in ("latency_cdf.png", "timeline.png", "attainment_vs_load.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_example_prints_a_config_that_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--example"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert Experiment.from_file(write(tmp_path, data)).spec.name == "batchers"


def test_user_config_with_loads_and_capacity(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG)
    out = tmp_path / "out"
    assert main(["simulate", str(path), "--quick", "--no-plots", "--no-progress", "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["runs"]) == {"triton", "ray8"}
    assert [p["multiplier"] for p in doc["loads"]["triton"]] == [0.5, 1.0]
    assert doc["capacity"]["triton"]["rate"] > 100
    assert doc["seed"] == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"models": [{"name": "cnn", "cores": 0}]},
            "models.0.cores: Input should be greater than or equal to 1",
        ),
        ({"workload": {"kind": "poisson", "duration_s": 5}}, "workload.poisson.rate: Field required"),
        ({"workload": {"kind": "zipf"}}, "workload: Input tag 'zipf' found using 'kind' does not match"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"policies": [{"scheduler": "nope"}]}, "policies (nope): unknown scheduler 'nope'"),
        ({"models": [{"name": "cnn", "profile": "resnet"}]}, "models.0.profile"),
        (
            {"models": [{"name": "cnn", "profile": {"kind": "affine", "alpha_ms": -1, "beta_ms": 1}}]},
            "models.0.profile: profiles.0.affine.alpha_ms",
        ),
        ({"workload": {"kind": "trace", "path": "missing.csv"}}, "missing.csv: file not found"),
        ({"capacity": {"lo": 10, "hi": 5}}, "capacity: lo (10.0) must be below hi (5.0)"),
        ({"models": [{"name": "cnn", "cores": True}]}, "models.0: cores: expected a number, got True"),
        (
            {"workload": {"kind": "poisson", "rate": "50"}},
            "workload.poisson: rate: expected a number, got '50'",
        ),
        ({"seeds": [0, True]}, "seeds.1: expected a number, got True"),  # inside a list too
    ],
)
def test_bad_configs_name_the_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, object], message: str
) -> None:
    path = write(tmp_path, {**CONFIG, **change})
    assert (
        main(["simulate", str(path), "--quick", "--no-plots", "--no-progress", "--out", str(tmp_path)]) == 2
    )
    err = capsys.readouterr().err
    assert message in err
    assert "sloserve: error:" in err


def test_unreadable_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        Experiment.from_file(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        Experiment.from_file(bad)


TRACE = AZURE_CODE_TRACE


@pytest.mark.parametrize(
    "workload",
    [
        {
            "kind": "gamma",
            "rate": 100,
            "cv": 2,
            "duration_s": 20,
            "slo_by_priority": {1: 50, 2: 200},
            "classes": [1, 3],
        },
        {
            "kind": "mmpp",
            "rate_on": 200,
            "rate_off": 10,
            "mean_on_s": 1,
            "mean_off_s": 2,
            "duration_s": 20,
            "slo_ms": 80,
        },
        {"kind": "piecewise", "rates": [50, 150, 100], "segment_s": 5, "slo_ms": 80},
        {"kind": "diurnal", "rate": 100, "amplitude": 0.5, "period_s": 10, "duration_s": 20, "slo_ms": 80},
        {"kind": "counts", "counts": [100, 50, 100, 150], "slo_ms": 80},
        {"kind": "trace", "path": str(TRACE), "target_rate": 100, "duration_s": 600, "slo_ms": 80},
        {
            "kind": "poisson",
            "rate": 100,
            "duration_s": 20,
            "slo_ms": 200,
            "payload_bytes": 50000,
            "payload_cv": 0.5,
            "network": {"mean_bps": 1.0e6, "cv": 0.5, "base_delay_ms": 5},
        },
    ],
)
def test_every_workload_kind_builds_scales_and_gets_slos(workload: dict[str, object]) -> None:
    exp = Experiment.from_data({**CONFIG, "workload": workload}, "<test>")
    base = exp.workload(1.0, seed=1)
    double = exp.workload(2.0, seed=1)
    assert len(base) > 50
    assert double.mean_rate == pytest.approx(2 * base.mean_rate, rel=0.15)
    slos = base.slos
    assert (slos < 0.25).all() and (slos > 0).any()
    if "network" in workload:
        assert slos.max() < 0.2 - 0.005 and len(set(slos.round(6))) > 10  # dynamic per request
    if "classes" in workload:
        assert set(slos.round(6)) == {0.05, 0.2}
    assert exp.workload(1.0, seed=1).arrivals.tolist() == base.arrivals.tolist()


def test_network_needs_an_slo() -> None:
    wl_spec = {"kind": "poisson", "rate": 10, "duration_s": 5, "network": {"mean_bps": 1e6}}
    exp = Experiment.from_data({**CONFIG, "workload": wl_spec}, "<test>")
    with pytest.raises(ConfigError, match=r"workload\.network: needs slo_ms"):
        exp.workload()


def test_a_key_given_twice_is_refused_naming_it(tmp_path: Path) -> None:
    """YAML and JSON parsers keep the last of two values for one key; a config file saying a thing
    twice is refused instead, naming the key and (YAML) its line. A YAML merge (``<<:``) may still
    be overridden."""
    twice = tmp_path / "twice.yaml"
    twice.write_text("duration: 5\nseed: 1\nduration: 50\n")
    said = r"twice\.yaml: not valid YAML: duplicate key 'duration'[^$]*line 3"
    with pytest.raises(ConfigError, match=said):
        Experiment.from_file(twice)
    as_json = tmp_path / "twice.json"
    as_json.write_text('{"duration": 5, "policies": [{"duration": 1, "duration": 2}]}')
    with pytest.raises(ConfigError, match=r"twice\.json: not valid JSON: duplicate key 'duration'"):
        Experiment.from_file(as_json)
    merged = tmp_path / "merged.yaml"
    merged.write_text("base: &b {x: 1, y: 2}\nitem:\n  <<: *b\n  x: 3\n")
    assert read_document(merged) == {"base": {"x": 1, "y": 2}, "item": {"x": 3, "y": 2}}
