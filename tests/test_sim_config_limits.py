"""``sloserve simulate`` configs at their limits: what would crash, hang, do nothing or be silently
ignored is refused in one line naming the file and the field (found by review)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import sloserve.sim.experiment
from sloserve.cli import main
from sloserve.core.config import ConfigError
from sloserve.core.profiles import AffineProfile
from sloserve.data import AZURE_CODE_TRACE
from sloserve.policies.base import PolicyContext
from sloserve.policies.registry import make_scheduler
from sloserve.policies.triton import TritonDynamicBatcher
from sloserve.sim import ModelSetup, Simulation, simulate
from sloserve.sim import workload as wl
from sloserve.sim.cluster import TIMELINE_TAIL_ROWS
from sloserve.sim.experiment import MAX_TIMELINE_ROWS, Experiment, run_experiment
from sloserve.sim.metrics import MetricsCollector
from sloserve.sim.report import metrics_table

PROFILE = {"kind": "affine", "alpha_ms": 6, "beta_ms": 2, "max_batch": 32}
BASE: dict[str, Any] = {
    "name": "limits",
    "models": [{"name": "m", "profile": PROFILE}],
    "policies": [{"scheduler": "triton"}],
    "workload": {"kind": "poisson", "rate": 100, "duration_s": 5, "slo_ms": 100},
}
NETWORK = {"payload_bytes": 1000, "network": {"mean_bps": 2.0e4}}


def changed(model: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """``BASE`` with fields of its one model and top-level fields replaced."""
    data = {**BASE, **top}
    if model is not None:
        data["models"] = [{**BASE["models"][0], **model}]
    return data


def poisson(**fields: Any) -> dict[str, Any]:
    return {**BASE["workload"], **fields}


def write(tmp_path: Path, data: object, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("data", "said"),
    [
        # huge finite values that crashed or hung the run
        (changed({"noise_cv": 1e200}), "models.0.noise_cv: Input should be less than or equal to 100"),
        (
            changed({"noise_cv": 1e200, "noise": "gamma"}),
            "models.0.noise_cv: Input should be less than or equal to 100",
        ),
        (
            changed(workload=poisson(**NETWORK, payload_cv=1e200)),
            "workload.poisson.payload_cv: Input should be less than or equal to 100",
        ),
        (
            changed(workload=poisson(payload_bytes=1000, network={"mean_bps": 2e4, "cv": 1e200})),
            "workload.poisson.network.cv: Input should be less than or equal to 100",
        ),
        (
            changed(workload=poisson(payload_bytes=1000, network={"mean_bps": 1e-300})),
            "workload.poisson.network.mean_bps: Input should be greater than or equal to 1",
        ),
        (
            changed({"tail_noise": {"probability": 0.5, "factor": 1e308}}),
            "models.0.tail_noise.factor: Input should be less than or equal to 100",
        ),
        (
            changed({"profile": {**PROFILE, "alpha_ms": 1e300}}),
            "models.0.profile: a batch of 1 on 1 core(s) takes 1e+297 s; the simulator takes at most 3600 s",
        ),
        (
            changed({"profile": {**PROFILE, "alpha_ms": 1e9}}),
            "models.0.profile: a batch of 1 on 1 core(s) takes 1e+06 s",
        ),
        (
            changed({"instances": 0, "cold_start_s": 1e300, "scaler": {"name": "horizontal"}}),
            "models.0.cold_start_s: Input should be less than or equal to 3600",
        ),
        (changed({"actuation_delay_s": 1e300}), "models.0.actuation_delay_s: Input should be less than"),
        (
            changed(timeline_interval_s=1e-7),
            "timeline_interval_s: Input should be greater than or equal to 0.001",
        ),
        (
            changed(timeline_interval_s=1e300),
            "timeline_interval_s: Input should be less than or equal to 3600",
        ),
        (
            changed(workload={"kind": "gamma", "rate": 1, "cv": 100000, "duration_s": 5, "slo_ms": 100}),
            "workload.gamma.cv: Input should be less than or equal to 100",
        ),
        (
            changed(
                workload={
                    "kind": "mmpp",
                    "rate_on": 10,
                    "rate_off": 1,
                    "mean_on_s": 1e-300,
                    "mean_off_s": 1e-300,
                    "duration_s": 5,
                    "slo_ms": 100,
                }
            ),
            "workload.mmpp: mean_on_s, mean_off_s: 5e+300 ON/OFF periods in duration_s 5; at most 1e+06",
        ),
        # nothing to simulate
        (
            changed(
                workload={"kind": "piecewise", "rates": [0, 0], "slo_ms": 100}, capacity={"lo": 1, "hi": 100}
            ),
            "workload.rates, workload.segment_s: 0 req/s for 2 s (at load 1) plans 0 requests per run; a run "
            "needs at least 1",
        ),
        (
            changed(workload=poisson(duration_s=1e-300)),
            "workload.rate, workload.duration_s: 100 req/s for 1e-300 s",
        ),
        (changed(loads=[1e-9]), "loads: 1e-07 req/s for 5 s (at load 1e-09) plans 5e-07 requests"),
        (
            changed({"instances": 0}),
            "models.0: instances: 0 with no scaler: nothing would serve this model",
        ),
        # fields that would be silently ignored
        (
            changed(workload=poisson(payload_bytes=1000)),
            "workload.poisson: payload_bytes: payloads only matter with `network`",
        ),
        (
            changed(workload=poisson(payload_bytes=1000, payload_cv=0.5)),
            "workload.poisson: payload_bytes, payload_cv: payloads only matter with `network`",
        ),
        (
            changed(workload=poisson(payload_cv=0.5, network={"mean_bps": 2e4})),
            "workload.poisson: payload_cv: needs payload_bytes",
        ),
        (
            changed(
                workload={"kind": "trace", "path": str(AZURE_CODE_TRACE), "payload_column": "ContextTokens"}
            ),
            "workload.trace: payload_column: payloads only matter with `network`",
        ),
        (
            changed(
                workload={
                    "kind": "trace",
                    "path": str(AZURE_CODE_TRACE),
                    "payload_column": "ContextTokens",
                    **NETWORK,
                    "slo_ms": 100,
                }
            ),
            "workload.trace: payload_column, payload_bytes: give one or the other, not both",
        ),
        (
            changed(workload=poisson(slo_by_priority={1: 500, 2: 500}, classes=[0.5, 0.5])),
            "workload.poisson: slo_ms, slo_by_priority: give one or the other, not both",
        ),
        # outputs outside results/
        (changed(name="../../escape_here"), "name: '../../escape_here' must be a plain file name"),
        (changed(name="a/b"), "name: 'a/b' must be a plain file name"),
        # a batch larger than the model's largest, as Ray's max_batch_size is refused
        (
            changed(policies=[{"scheduler": "fixed", "params": {"batch_size": 64}}]),
            "policies (fixed): 'fixed' params: batch_size: 64 is above the largest batch of model 'm' (32)",
        ),
    ],
)
def test_configs_past_the_limits_are_refused_naming_the_field(data: dict[str, Any], said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        exp = Experiment.from_data(data, "exp.yaml")
        exp.setups(exp.spec.policies[0])  # policies' params are checked when built
    assert f"exp.yaml: {said}" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_refused_config_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, changed({"noise_cv": 1e200}))
    assert (
        main(["simulate", str(path), "--quick", "--no-plots", "--no-progress", "--out", str(tmp_path)]) == 2
    )
    err = capsys.readouterr().err
    assert err == f"sloserve: error: {path}: models.0.noise_cv: Input should be less than or equal to 100\n"


def test_fixed_refuses_a_batch_size_above_the_models_largest() -> None:
    ctx = PolicyContext(model="m", max_batch=32)
    with pytest.raises(
        ConfigError, match=r"'fixed' params: batch_size: 64 is above the largest batch of model 'm' \(32\)"
    ):
        make_scheduler("fixed", ctx, {"batch_size": 64})
    assert make_scheduler("fixed", ctx, {"batch_size": 32}).max_batch == 32
    assert make_scheduler("fixed", ctx, {}).max_batch == 32


def test_counts_read_from_a_csv_are_bounded_once_read(tmp_path: Path) -> None:
    """Found by review: ``counts`` from a CSV were never bounded (1e9 requests: MemoryError)."""
    (tmp_path / "big.csv").write_text("count\n5\n1.0e9\n")
    data = changed(workload={"kind": "counts", "path": "big.csv", "slo_ms": 100})
    with pytest.raises(ConfigError) as caught:
        Experiment.from_data(data, "exp.yaml", tmp_path)
    said = str(caught.value)
    assert said.startswith(
        "exp.yaml: workload.path: 5e+08 req/s for 2 s (at load 1) is 1e+09 requests per run"
    )
    assert "big.csv" in said and "at most 2e+07" in said
    (tmp_path / "zeros.csv").write_text("count\n0\n0\n")
    with pytest.raises(
        ConfigError, match=r"exp\.yaml: workload\.path: 0 req/s for 2 s .* a run needs at least 1"
    ):
        Experiment.from_data(
            {**data, "workload": {**data["workload"], "path": "zeros.csv"}}, "exp.yaml", tmp_path
        )
    (tmp_path / "ok.csv").write_text("count\n5\n7\n")
    exp = Experiment.from_data(
        {**data, "workload": {**data["workload"], "path": "ok.csv"}}, "exp.yaml", tmp_path
    )
    assert len(exp.workload(1.0, 0)) == 12


def test_a_gamma_workloads_start_up_burst_counts_against_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gamma process begun with an arrival adds (cv² - 1)/2 requests at its start whatever the
    rate: at cv 100, 5,000 of them, which the bound on a run's requests must count."""
    monkeypatch.setattr(sloserve.sim.experiment, "MAX_REQUESTS_PER_RUN", 1000)
    bursty = {"kind": "gamma", "rate": 1, "cv": 100, "duration_s": 5, "slo_ms": 100}
    with pytest.raises(
        ConfigError,
        match=r"workload: 1 req/s for 5 s \(at load 1\) plus a start-up burst of 5e\+03 is 5e\+03 requests",
    ):
        Experiment.from_data(changed(workload=bursty), "exp.yaml")
    Experiment.from_data(changed(workload={**bursty, "cv": 2}), "exp.yaml")


def test_a_quick_run_that_draws_no_request_is_refused(tmp_path: Path) -> None:
    """Found by review: an empty run divided by zero in the capacity search (or, without one,
    reported 100% attainment of nothing)."""
    exp = Experiment.from_data(changed(workload=poisson(rate=0.6, duration_s=2)), "exp.yaml")
    with pytest.raises(ConfigError, match=r"exp\.yaml: workload\.rate, workload\.duration_s: the workload "):
        run_experiment(exp, tmp_path, quick=True, plots=False, progress=False, echo=lambda _: None)


def test_latencies_are_null_and_shown_as_a_dash_when_nothing_was_answered() -> None:
    """Found by review: a run with every request dropped reported p50/p99/max latency 0.0 ms."""
    collector = MetricsCollector()
    collector.arrived(3)
    for _ in range(3):
        collector.dropped(0.1, "late")
    nothing = collector.result(1.0)
    d = json.loads(json.dumps(nothing.to_dict()))
    assert [d[k] for k in ("latency_mean", "latency_p50", "latency_p95", "latency_p99", "latency_max")] == [
        None
    ] * 5
    assert type(nothing).from_dict(d) == nothing
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(metrics_table({"none": nothing}, slo=0.1))
    row = next(line for line in console.export_text().splitlines() if "none" in line)
    assert row.split()[3:7] == ["—"] * 4


def test_the_timeline_stops_a_bounded_number_of_rows_after_the_arrivals() -> None:
    """Found by review: a batch of a 10⁶ s profile made a million timeline rows (125 MB of JSON)."""
    profile = AffineProfile("m", alpha=3000.0, beta=0.0, max_batch=1)
    result = simulate(
        ModelSetup("m", profile, TritonDynamicBatcher(1)), wl.Workload(np.zeros(3), duration=1.0)
    )
    assert result.metrics.completed == 3 and result.metrics.makespan == pytest.approx(9000.0)
    assert len(result.timeline.time) <= 1 + TIMELINE_TAIL_ROWS + 1


def test_a_long_run_gets_a_wider_timeline_interval() -> None:
    exp = Experiment.from_data(changed(workload=poisson(rate=0.001, duration_s=2e5)), "exp.yaml")
    timeline = exp.run(exp.spec.policies[0]).timeline
    assert len(timeline.time) <= MAX_TIMELINE_ROWS + TIMELINE_TAIL_ROWS
    assert timeline.time[1] - timeline.time[0] == pytest.approx(2e5 / MAX_TIMELINE_ROWS)


def test_gamma_noise_too_small_to_square_is_no_noise() -> None:
    """A ``noise_cv`` the config allows (1e-200) but whose square underflows to 0 is no noise."""
    setup = ModelSetup(
        "m",
        AffineProfile("m", 0.01, 0.0, max_batch=4),
        TritonDynamicBatcher(4),
        noise_cv=1e-200,
        noise="gamma",
    )
    outcomes = Simulation(setup, wl.poisson(10, 2, 0), record=True).run().outcomes
    assert outcomes is not None and len(outcomes.service) > 5
    assert np.all(outcomes.service == 0.01)  # the gamma shape 1/cv² would divide by zero


def test_seed_with_quick_is_every_runs_seed(tmp_path: Path) -> None:
    """Found by review: ``--seed`` with ``--quick`` left the load sweep on the config's first seed."""
    path = write(tmp_path, changed(seed=3, seeds=[0, 1], loads=[1.0]))
    args = ["simulate", str(path), "--quick", "--no-plots", "--no-progress", "--out", str(tmp_path / "o")]
    assert main([*args, "--seed", "7"]) == 0
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert doc["seed"] == 7 and doc["seeds"] == [7]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--plan", "p.yaml", "--example"], "--example: only for an experiment, not with --plan"),
        (["--plan", "p.yaml", "--no-plots"], "--no-plots: only for an experiment, not with --plan"),
    ],
)
def test_options_that_would_be_ignored_are_refused(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulate", *argv])
    assert exited.value.code == 2 and f"sloserve simulate: error: {said}" in capsys.readouterr().err
    assert main(["simulate", "exp.yaml", "--example"]) == 2
    assert "sloserve: error: give an experiment CONFIG or --example, not both" in capsys.readouterr().err


def test_help_says_what_plan_writes_and_example_names_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "writes only plan_simulation.json into --out, and nothing without --out" in text
    assert main(["simulate", "--example"]) == 0
    reference = capsys.readouterr().out.split("# Every field", 1)[1]
    for name in (
        "description:",
        "timeline_interval_s:",
        "tail_noise:",
        "payload_bytes:",
        "only with `network`",
    ):
        assert name in reference
