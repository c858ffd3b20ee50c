"""``sloserve serve --plan``: a Harpagon plan made by ``sloserve plan`` deployed on a pipeline of
demo models, and a plan for hardware this machine lacks refused with a clear message."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as th
import yaml

from sloserve.cli import main
from sloserve.core.config import ConfigError
from sloserve.planning.plan_io import load_plan
from sloserve.policies.harpagon_dispatch import HarpagonDispatcher
from sloserve.runtime.demo.repository import build_demo_model
from sloserve.runtime.pipeline import pipeline_loop
from sloserve.runtime.plan_deploy import local_hardware
from sloserve.runtime.service import BackgroundServer, ServeOptions, Service

ROOT = Path(__file__).resolve().parents[1]


def _repo(root: Path) -> Path:
    build_demo_model("identity", root)
    build_demo_model("mlp", root)
    (root / "two_step").mkdir()
    steps = [
        {"model": "identity", "input_map": {"INPUT0": "INPUT0"}, "output_map": {"OUTPUT0": "x"}},
        {"model": "mlp", "input_map": {"input": "x"}, "output_map": {"logits": "logits"}},
    ]
    (root / "two_step" / "pipeline.yaml").write_text(yaml.safe_dump({"slo_ms": 200, "steps": steps}))
    return root


def _plan(tmp_path: Path) -> Path:
    """``sloserve plan`` on an app of the two demo models, profiled (illustratively) on ``cpu``."""
    cpu = {"hardware": "cpu", "kind": "affine", "max_batch": 64}
    profiles = {"format": "sloserve-profile/v1", "profiles": [
        {"model": "identity", **cpu, "alpha_ms": 1.0, "beta_ms": 0.05},
        {"model": "mlp", **cpu, "alpha_ms": 2.0, "beta_ms": 0.5},
    ]}  # fmt: skip
    app = {
        "format": "sloserve-app/v1", "name": "two_step", "slo_ms": 200, "rate": 40,
        "modules": [{"name": "identity", "model": "identity"}, {"name": "mlp", "model": "mlp"}],
        "edges": [{"from": "identity", "to": "mlp"}],
        "hardware": [{"name": "cpu", "cores": 1, "price_per_hour": 0.1}],
        "profiles": "profiles.yaml",
    }  # fmt: skip
    (tmp_path / "profiles.yaml").write_text(yaml.safe_dump(profiles))
    (tmp_path / "app.yaml").write_text(yaml.safe_dump(app))
    assert main(["plan", str(tmp_path / "app.yaml"), "--out", str(tmp_path / "plan.yaml")]) == 0
    return tmp_path / "plan.yaml"


def test_plan_deployed_on_pipeline(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "sloserve.runtime")  # as `sloserve serve` logs (it crashed there)
    plan_file = _plan(tmp_path)
    plan = load_plan(plan_file)
    repo = _repo(tmp_path / "repo")
    options = ServeOptions(repo, http_port=0, grpc_port=None, metrics_port=None, plan=plan_file)
    with BackgroundServer(options) as server:
        models = server.service.core.repository.models
        for module in plan.modules:
            loop = models[module.model].loop
            assert isinstance(loop.scheduler, HarpagonDispatcher)
            assert len(loop.views) == sum(t.count for t in module.tuples)
        pipe = pipeline_loop(models["two_step"])
        assert pipe is not None
        budgets = {m.name: m.budget for m in plan.modules}
        assert {n: s.weight for n, s in pipe.split.steps.items()} == pytest.approx(budgets)
        c = th.InferenceServerClient(server.http_url)
        try:
            x = np.random.default_rng(0).standard_normal((1, 784)).astype(np.float32)
            inp = th.InferInput("INPUT0", [1, 784], "FP32")
            inp.set_data_from_numpy(x)
            got = c.infer("two_step", [inp]).as_numpy("logits")
            inp2 = th.InferInput("input", [1, 784], "FP32")
            inp2.set_data_from_numpy(x)
            want = c.infer("mlp", [inp2], headers={"x-slo-timeout-ms": "200"}).as_numpy("logits")
        finally:
            c.close()
        np.testing.assert_allclose(got, want, rtol=1e-6)
        c = th.InferenceServerClient(server.http_url)
        try:  # found by review: a reload rebuilt the model from its config, and the plan was gone
            assert c.get_model_config("mlp")["parameters"]["scheduler"]["string_value"] == "harpagon"
            c.load_model("mlp")
            c.load_model("two_step")
            assert c.get_model_config("mlp")["parameters"]["scheduler"]["string_value"] == "harpagon"
        finally:
            c.close()
        models = server.service.core.repository.models
        mlp = next(m for m in plan.modules if m.model == "mlp")
        assert isinstance(models["mlp"].loop.scheduler, HarpagonDispatcher)
        assert len(models["mlp"].loop.views) == sum(t.count for t in mlp.tuples)
        pipe = pipeline_loop(models["two_step"])
        assert pipe is not None
        assert {n: s.weight for n, s in pipe.split.steps.items()} == pytest.approx(budgets)
    assert any(r.getMessage() == "plan module deployed" for r in caplog.records)


def test_a_plan_over_a_scaled_model_is_refused_and_its_queue_cap_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by review: a model's scaler went on changing the planned instances and batches, and
    its ``max_queue_size`` was dropped under the plan's dispatcher."""
    plan_file = _plan(tmp_path)
    repo = _repo(tmp_path / "repo")
    config = repo / "mlp" / "config.yaml"
    fields = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**fields, "scaler": {"name": "aimd"}}))
    capsys.readouterr()
    argv = ["serve", str(repo), "--plan", str(plan_file), "--http-port", "0", "--grpc-port", "-1"]
    assert main([*argv, "--metrics-port", "-1"]) == 2
    assert "modules.1.model: 'mlp' has a scaler (aimd) in its config" in capsys.readouterr().err

    from sloserve.core.decisions import DropReason
    from sloserve.core.request import Request
    from sloserve.policies.base import PolicyContext
    from sloserve.policies.registry import make_scheduler

    params = {"tuples": [{"batch": 4, "exec_ms": 5, "rate": 100}], "budget_ms": 100}
    for name in ("harpagon", "plan_round_robin"):
        dispatcher = make_scheduler(name, PolicyContext("m", max_batch=4, max_queue_size=2), params)
        outcomes = [dispatcher.submit(0.0, Request(i, "m", 0.0, 1.0)) for i in range(3)]
        assert outcomes[:2] == [None, None] and outcomes[2] is not None
        assert outcomes[2].reason == DropReason.QUEUE_FULL and len(dispatcher) == 2


def test_plan_for_other_hardware_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan_file = tmp_path / "traffic.yaml"
    assert main(["plan", str(ROOT / "examples" / "apps" / "traffic.yaml"), "--out", str(plan_file)]) == 0
    capsys.readouterr()
    repo = _repo(tmp_path / "repo")
    assert main(["serve", str(repo), "--plan", str(plan_file), "--http-port", "0"]) == 2
    err = capsys.readouterr().err
    name, cores = local_hardware()
    assert "the plan needs hardware" in err and f"only has {name!r} ({cores} cores" in err
    with pytest.raises(ConfigError, match=r"modules\.tuples\.hardware"):
        Service(ServeOptions(repo, http_port=0, grpc_port=None, metrics_port=None, plan=plan_file))


def test_a_plan_beyond_what_one_server_runs_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by fuzzing: a plan could deploy 1,000 instances of a model on this machine, and a
    budget of 1e300 ms left its requests waiting for ever."""
    plan_file = _plan(tmp_path)
    capsys.readouterr()
    doc = yaml.safe_load(plan_file.read_text())
    doc["modules"][0]["budget_ms"] = 1e300
    (tmp_path / "slow.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"modules\.0\.budget_ms"):
        load_plan(tmp_path / "slow.yaml")
    doc = yaml.safe_load(plan_file.read_text())
    doc["modules"][1]["tuples"][0]["count"] = 65
    (tmp_path / "many.yaml").write_text(yaml.safe_dump(doc))
    repo = _repo(tmp_path / "repo")
    argv = [
        "serve",
        str(repo),
        "--plan",
        str(tmp_path / "many.yaml"),
        "--http-port",
        "0",
        "--grpc-port",
        "-1",
    ]
    assert main([*argv, "--metrics-port", "-1"]) == 2
    assert (
        "modules.1.tuples.count: 65 instances of 'mlp'; one server runs at most 64" in capsys.readouterr().err
    )
