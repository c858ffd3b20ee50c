"""The QoS setup file (``train-rl``, ``experiment qos``): each section's values are checked when
the file loads, and what is wrong is a ConfigError naming the file and the section or field."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from sloserve.core.config import ConfigError
from sloserve.rl.config import load_setup

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "qos"


def _setup_file(tmp_path: Path, path: str, value: Any) -> Path:
    shutil.copy(EXAMPLE / "profiles.yaml", tmp_path / "profiles.yaml")
    data = yaml.safe_load((EXAMPLE / "pool.yaml").read_text())
    *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    out = tmp_path / "setup.yaml"
    out.write_text(yaml.safe_dump(data))
    return out


def test_the_example_loads() -> None:
    setup = load_setup(EXAMPLE / "pool.yaml")
    assert setup.context().max_batch == setup.spec.batch_sizes[-1]


@pytest.mark.parametrize(
    ("path", "value", "said"),
    [
        ("qos.variants.0.name", "nosuch", "pool: no profile for model 'nosuch'"),
        ("pool.servers.0.hardware", "nosuch", "pool: no profile for model 'mobilenet_v2' on hardware"),
        ("pool.servers.0.count", 1_000_000, "pool.servers.0.count: Input should be less than or equal"),
        ("qos.utility.target_ms", 500, "qos: utility: need 0 < target < cutoff, got 0.5 s and 0.45 s"),
        ("qos.batch_sizes", [0], "setup.yaml: qos: batch_sizes must be ascending and >= 1"),
        ("train.net", [-4], "train.net.0: Input should be greater than or equal to 1"),
        ("train.workload.rate", [700, 40], "train.workload: rate: the range [700, 40] runs backwards"),
        ("train.workload.rate", [0, 40], "train.workload.rate.0: Input should be greater than 0"),
        ("train.workload.duration_s", 1e12, "train.workload: rate: 10500 req/s for 1e+12 s"),
        (
            "train.workload.burst_factor",
            [0.5, 0.9],
            "train.workload.burst_factor.0: Input should be greater than 1",
        ),
        (
            "train.workload.burst_factor",
            [1.0, 1.0],
            "train.workload.burst_factor.0: Input should be greater than 1",
        ),
        (
            "train.workload.bursty_share",
            0.8,
            "train.workload: bursty_share + piecewise_share: 0.8 + 0.5 = 1.3",
        ),
        ("triton.variant", "nosuch", "triton: qos_triton: unknown variant 'nosuch'"),
        ("triton.preferred_batch_size", [64], "triton: preferred_batch_sizes must lie in 1..max_batch=16"),
        ("eval.rates", [0], "eval.rates.0: Input should be greater than 0"),
        ("eval.rates", [1e9], "eval: rates: 1e+09 req/s for 30 s is 3e+10 requests per run"),
        ("pool.noise_cv", float("inf"), "pool.noise_cv: Input should be a finite number"),
        ("eval.trace", "nosuch.csv", "eval.trace: {dir}/nosuch.csv: file not found"),
        ("eval.trace_window_s", 3000, "eval.trace: {trace}: no requests in the window start=6000"),
    ],
)
def test_a_bad_value_is_refused_naming_the_section_or_field(
    tmp_path: Path, path: str, value: Any, said: str
) -> None:
    from sloserve.data import TRACES

    setup = _setup_file(tmp_path, path, value)
    with pytest.raises(ConfigError) as err:
        load_setup(setup)
    said = said.format(dir=tmp_path, trace=TRACES["azure_code"])
    assert str(err.value).startswith(f"{setup}: ") and said in str(err.value)


@pytest.mark.parametrize(("bursty", "piecewise"), [(0.7, 0.3), (1.0, 0.0)])
def test_training_episodes_at_the_edges_of_the_allowed_mix_are_drawn(bursty: float, piecewise: float) -> None:
    import numpy as np

    from sloserve.rl.config import TrainWorkloadParams, training_workload

    p = TrainWorkloadParams(
        rate=(10, 20),
        duration_s=2.0,
        bursty_share=bursty,
        piecewise_share=piecewise,
        burst_factor=(1.01, 1.5),
    )
    rng = np.random.default_rng(0)
    assert all(len(training_workload(rng, p).arrivals) > 0 for _ in range(20))


def _policy(tmp_path: Path, meta: Any, archive: bytes = b"not a zip") -> Path:
    """A ``policy.zip`` with ``archive`` as its bytes and ``meta`` (text, or data for JSON) beside it."""
    import json

    (tmp_path / "policy.zip").write_bytes(archive)
    (tmp_path / "policy.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return tmp_path / "policy.zip"


def _valid_meta() -> dict[str, Any]:
    from sloserve.rl.scheduler import FORMAT, qos_params_of

    setup = load_setup(EXAMPLE / "pool.yaml")
    servers = list(setup.pool.servers)
    return {"format": FORMAT, "qos": qos_params_of(setup.spec), "servers": servers, "n_oldest": 4}


@pytest.mark.parametrize(
    ("meta", "said"),
    [
        ("{not json", "policy.json: not a policy's metadata (JSON)"),
        ({"format": "sloserve-rl-policy/v1"}, "policy.json: qos, servers, n_oldest: missing"),
        ({"format": "other"}, "policy.json: format must be"),
        ([1, 2], "policy.json: format must be"),
        (None, "policy.zip: not a policy saved by `sloserve train-rl`"),
    ],
)
def test_a_policy_file_that_is_not_one_is_refused_naming_it(tmp_path: Path, meta: Any, said: str) -> None:
    from sloserve.rl.scheduler import load_rl_scheduler

    path = _policy(tmp_path, _valid_meta() if meta is None else meta)
    with pytest.raises(ConfigError) as err:
        load_rl_scheduler(path)
    assert said in str(err.value)
