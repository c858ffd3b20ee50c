"""The learned QoS scheduler selected by name in a model's config and serving through the server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as th
import yaml

from server_fakes import FakeBackends, write_model
from sloserve.rl.config import load_setup
from sloserve.rl.scheduler import RLQosScheduler
from sloserve.rl.train import train
from sloserve.runtime.service import BackgroundServer, ServeOptions

PROFILE = {"kind": "affine", "alpha_ms": 2.0, "beta_ms": 0.5, "max_batch": 4}


@pytest.mark.slow
def test_qos_rl_scheduler_serves_requests_in_the_server(tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    setup_doc = {
        "format": "sloserve-qos/v1",
        "qos": {
            "variants": [{"name": "qmodel", "accuracy": 0.9}],
            "profiles": [{"model": "qmodel", "hardware": "cpu", **PROFILE}],
            "utility": {"target_ms": 200, "cutoff_ms": 1000},
            "batch_sizes": [1, 2, 4],
        },
        "pool": {"servers": [{"hardware": "cpu", "count": 1}]},
        "train": {
            "timesteps": 256,
            "n_steps": 128,
            "batch_size": 64,
            "n_epochs": 1,
            "net": [16],
            "imitation_steps": 256,
            "imitation_epochs": 1,
            "workload": {"rate": [50, 200], "duration_s": 1.0},
        },
    }
    cfg = tmp_path / "qos.yaml"
    cfg.write_text(yaml.safe_dump(setup_doc), encoding="utf-8")
    policy = train(load_setup(cfg), out=tmp_path / "policy.zip").path

    root = tmp_path / "repo"
    config = {
        "backend": "fake",
        "max_batch_size": 4,
        "slo_ms": 1000,
        "scheduler": {"name": "qos_rl", "params": {"model_path": str(policy)}},
    }
    write_model(root, "qmodel", config, PROFILE)
    options = ServeOptions(
        root, http_port=0, grpc_port=None, metrics_port=0, backends={"fake": FakeBackends()}
    )
    with BackgroundServer(options) as server:
        loop = server.service.core.repository.models["qmodel"].loop
        assert isinstance(loop.scheduler, RLQosScheduler)
        client = th.InferenceServerClient(server.http_url, concurrency=8)
        try:
            pending = []
            for k in range(16):
                inp = th.InferInput("INPUT0", [1, 3], "FP32")
                inp.set_data_from_numpy(np.full((1, 3), float(k), dtype=np.float32))
                pending.append(client.async_infer("qmodel", [inp]))
            outs = [p.get_result().as_numpy("OUTPUT0") for p in pending]
        finally:
            client.close()
    for k, out in enumerate(outs):
        np.testing.assert_array_equal(out, np.full((1, 3), float(k), dtype=np.float32))
