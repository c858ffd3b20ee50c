"""``scheduler: slo`` and ``scaler: sponge`` in a model's config drive the real server: requests are
answered, hopeless ones refused with a reason, and the instance's threads change while serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import yaml

from sloserve.bench.loadgen import run_open_loop
from sloserve.bench.processes import SloserveServer, free_port
from sloserve.bench.runner import make_target
from sloserve.experiments.sponge_server import cores_now
from sloserve.runtime.demo import build_demo_model

PROFILE = {
    "format": "sloserve-profile/v1",
    "profiles": [
        # a made-up slow model: at ~50 req/s and a 100 ms budget one core is not enough for Sponge
        {"model": "mlp", "kind": "sponge", "gamma_ms": 4.0, "delta_ms": 0.0, "epsilon_ms": 0.5,
         "eta_ms": 0.2, "max_batch": 16},
    ],
}  # fmt: skip


@pytest.mark.slow
def test_slo_scheduler_and_sponge_scaler_in_the_server(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    build_demo_model("mlp", repo)
    model_dir = repo / "mlp"
    (model_dir / "profile.yaml").write_text(yaml.safe_dump(PROFILE), encoding="utf-8")
    config = yaml.safe_load((model_dir / "config.yaml").read_text(encoding="utf-8"))
    config.update(
        {
            "max_batch_size": 16,
            "preferred_batch_size": [],
            "profile": "profile.yaml",
            "slo_ms": 100,
            "instance_group": {"count": 1, "threads": 1},
            "scheduler": {"name": "slo"},
            "scaler": {"name": "sponge", "params": {"max_cores": 4}},
        }
    )
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    server = SloserveServer(repo)
    metrics_port = free_port()
    server.argv[server.argv.index("--metrics-port") + 1] = str(metrics_port)
    rng = np.random.default_rng(0)
    planned = np.cumsum(rng.exponential(1 / 50, 150))  # ~3 s at 50 req/s
    slo = np.full(len(planned), 0.1)
    slo[::25] = 1e-6  # hopeless: a microsecond of budget

    async def go() -> tuple[object, float]:
        target = make_target(server.url, "mlp", "http")
        await target.start()
        try:
            res = await run_open_loop(target, planned, slo)
        finally:
            await target.close()
        return res, cores_now(f"127.0.0.1:{metrics_port}", "mlp")

    with server:
        before = cores_now(f"127.0.0.1:{metrics_port}", "mlp")
        res, after = asyncio.run(go())
    hopeless = slo < 1e-3
    assert before == 1.0
    assert after > 1.0  # Sponge gave the instance more threads, in place, while it served
    assert res.ok[~hopeless].mean() > 0.9  # type: ignore[attr-defined]
    assert not res.ok[hopeless].any()  # type: ignore[attr-defined]
    assert set(res.status[hopeless].tolist()) == {503}  # type: ignore[attr-defined]
    reasons = [res.reasons[i] for i in np.flatnonzero(hopeless)]  # type: ignore[attr-defined]
    assert all("deadline" in r for r in reasons), reasons


def test_slo_batcher_is_the_default_with_a_profile_and_an_slo() -> None:
    from sloserve.runtime.model_config import ModelConfig

    assert ModelConfig.model_validate({"profile": "p.yaml", "slo_ms": 50}).scheduler.name == "slo"
    assert ModelConfig.model_validate({"slo_ms": 50}).scheduler.name == "triton"
    assert ModelConfig.model_validate({"profile": "p.yaml"}).scheduler.name == "triton"
    named = {"profile": "p.yaml", "slo_ms": 50, "scheduler": {"name": "ray"}}
    assert ModelConfig.model_validate(named).scheduler.name == "ray"
