"""A small training run: reproducible from a seed, better than random, save/load round trip, by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("stable_baselines3")

import torch

from sloserve.policies.base import PolicyContext
from sloserve.policies.qos_scheduling import RandomQos
from sloserve.policies.registry import make_scheduler
from sloserve.rl.config import load_setup
from sloserve.rl.scheduler import RLQosScheduler, load_act
from sloserve.rl.train import train
from sloserve.sim.hetero import HeteroSim
from sloserve.sim.workload import gamma

torch.set_num_threads(1)

SETUP = {
    "format": "sloserve-qos/v1",
    "qos": {
        "variants": [{"name": "small", "accuracy": 0.70}, {"name": "large", "accuracy": 0.80}],
        "profiles": [
            {"model": "small", "hardware": "fast", "kind": "affine", "alpha_ms": 5, "beta_ms": 3},
            {"model": "large", "hardware": "fast", "kind": "affine", "alpha_ms": 12, "beta_ms": 20},
            {"model": "small", "hardware": "slow", "kind": "affine", "alpha_ms": 12.5, "beta_ms": 7.5},
            {"model": "large", "hardware": "slow", "kind": "affine", "alpha_ms": 30, "beta_ms": 50},
        ],
        "utility": {"target_ms": 150, "cutoff_ms": 450, "alpha": 2},
        "batch_sizes": [1, 4, 16],
    },
    "pool": {
        "servers": [{"hardware": "fast", "count": 1}, {"hardware": "slow", "count": 2}],
        "noise_cv": 0.1,
    },
    "train": {
        "timesteps": 3072,
        "seed": 7,
        "net": [32, 32],
        "n_steps": 512,
        "batch_size": 128,
        "n_epochs": 4,
        "learning_rate": 1e-3,
        "gamma": 0.99,
        "ent_coef": 0.01,
        "target_kl": None,
        "imitation_steps": 0,  # pure RL from random weights: the test is that learning beats random
        "workload": {"rate": [150, 300], "duration_s": 3.0},
    },
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, Path]:
    d = tmp_path_factory.mktemp("rl")
    cfg = d / "qos.yaml"
    cfg.write_text(yaml.safe_dump(SETUP), encoding="utf-8")
    setup = load_setup(cfg)
    a = train(setup, out=d / "a.zip").path
    b = train(setup, out=d / "b.zip").path
    return setup, a, b


def _observations(setup: object, n: int = 200) -> np.ndarray:
    """Observations met by a random policy on a fixed workload."""
    from sloserve.rl.env import QosEnv

    env = QosEnv(setup.pool, lambda rng: gamma(250.0, 2.0, 2.0, 99))  # type: ignore[attr-defined]
    obs, _ = env.reset(seed=0)
    out = [obs]
    rng = np.random.default_rng(0)
    while len(out) < n:
        obs, _, done, _, _ = env.step(int(rng.integers(env.action_space.n)))
        if done:
            obs, _ = env.reset()
        out.append(obs)
    return np.array(out)


@pytest.mark.slow
def test_training_is_reproducible_from_the_seed(trained: tuple[object, Path, Path]) -> None:
    setup, a, b = trained
    obs = _observations(setup)
    act_a, act_b = load_act(a), load_act(b)
    assert [act_a(o) for o in obs] == [act_b(o) for o in obs]
    import zipfile

    with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
        assert za.read("policy.pth") == zb.read("policy.pth")


@pytest.mark.slow
def test_the_saved_policy_loads_by_name_and_beats_random(trained: tuple[object, Path, Path]) -> None:
    setup, a, _ = trained
    ctx = PolicyContext(model="task", max_batch=16, runs_variants=True)
    rl_utility, rand_utility = [], []
    for seed in (1, 2):
        w = gamma(250.0, 2.0, 5.0, seed=100 + seed)
        sched = make_scheduler("qos_rl", ctx, {"model_path": str(a)})
        assert isinstance(sched, RLQosScheduler)
        rl_utility.append(HeteroSim(setup.pool, sched, w, seed=seed).run().qos.mean_utility)  # type: ignore[attr-defined]
        rand = RandomQos(setup.spec, seed=seed)  # type: ignore[attr-defined]
        rand_utility.append(HeteroSim(setup.pool, rand, w, seed=seed).run().qos.mean_utility)  # type: ignore[attr-defined]
    assert np.mean(rl_utility) > 1.1 * np.mean(rand_utility)


@pytest.mark.slow
def test_save_load_round_trip_gives_the_same_actions(
    trained: tuple[object, Path, Path], tmp_path: Path
) -> None:
    from stable_baselines3 import PPO

    setup, a, _ = trained
    model = PPO.load(str(a), device="cpu")
    obs = _observations(setup, 100)
    before = [int(model.predict(o, deterministic=True)[0]) for o in obs]
    model.save(str(tmp_path / "again.zip"))
    (tmp_path / "again.json").write_text(a.with_suffix(".json").read_text(encoding="utf-8"), encoding="utf-8")
    again = load_act(tmp_path / "again.zip")
    assert [again(o) for o in obs] == before


@pytest.mark.slow
def test_train_rl_and_experiment_commands_run_end_to_end(
    trained: tuple[object, Path, Path], tmp_path: Path
) -> None:
    import json

    from sloserve.cli import main

    _, a, _ = trained
    trace = tmp_path / "trace.csv"
    times = np.sort(np.random.default_rng(0).uniform(0, 20, 2000))
    trace.write_text("TIMESTAMP\n" + "\n".join(f"{t:.6f}" for t in times) + "\n", encoding="utf-8")
    cfg = tmp_path / "qos.yaml"
    doc = {
        **SETUP,
        "train": {**SETUP["train"], "timesteps": 512, "n_steps": 256, "batch_size": 64},  # type: ignore[dict-item]
        "eval": {
            "seeds": [1, 2, 3],
            "rates": [200],
            "duration_s": 3,
            "trace": "trace.csv",
            "trace_rate": 200,
            "trace_window_s": 5,
        },
        "triton": {"variant": "small", "max_batch_size": 4},
    }
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert main(["train-rl", str(cfg), "--out", str(tmp_path / "p.zip")]) == 0
    assert (tmp_path / "p.zip").exists() and (tmp_path / "p.json").exists()
    out = tmp_path / "res"
    assert (
        main(["experiment", "qos", "--quick", "--config", str(cfg), "--policy", str(a), "--out", str(out)])
        == 0
    )
    result = json.loads((out / "qos.json").read_text(encoding="utf-8"))
    assert (out / "qos.png").stat().st_size > 0
    assert len(result["runs"]) == 2 * 2 * 4  # 2 seeds x (1 rate + trace) x 4 policies
    overall = result["summary"]["overall"]
    assert set(overall) == {"rl", "heuristic", "triton", "random", "rl_vs_heuristic"}
    for fig in ("mean_utility", "attainment", "mean_accuracy"):
        assert overall["heuristic"][fig]["ci95"] >= 0


@pytest.mark.slow
def test_imitation_warm_start_reproduces_the_heuristic(trained: tuple[object, Path, Path]) -> None:
    from sloserve.rl.train import build_model, imitate_heuristic, make_env

    setup, _, _ = trained
    p = setup.file.train.model_copy(update={"imitation_steps": 2000, "imitation_epochs": 10})  # type: ignore[attr-defined]
    agreement = imitate_heuristic(build_model(make_env(setup, p), p), make_env(setup, p), p)  # type: ignore[arg-type]
    assert agreement > 0.95


TINY = {
    **SETUP["train"],  # type: ignore[dict-item]
    "timesteps": 100,
    "n_steps": 64,
    "batch_size": 32,
    "n_epochs": 1,
}


def _tiny_setup(tmp_path: Path, **changes: object) -> Path:
    """SETUP with a tiny PPO (64-step rollouts) and ``changes`` to its sections, as a file."""
    doc = {**SETUP, "train": TINY}
    for section, values in changes.items():
        doc[section] = {**doc.get(section, {}), **values}  # type: ignore[dict-item]
    cfg = tmp_path / "qos.yaml"
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return cfg


def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("trained")

    monkeypatch.setattr("sloserve.rl.train.build_model", fail)


def test_ppo_reports_the_decisions_it_trained_on_and_logs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PPO trains whole rollouts: 100 asked, 2 x 64 trained; SB3 makes no log folder."""
    import json
    import tempfile

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    calls: list[tuple[int, int]] = []
    result = train(
        load_setup(_tiny_setup(tmp_path)),
        out=tmp_path / "p.zip",
        progress=lambda d, t, u: calls.append((d, t)),
    )
    assert result.timesteps == 128
    assert json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))["timesteps"] == 128
    assert calls[-1] == (128, 128) and all(done <= total == 128 for done, total in calls)
    assert not list(temp.glob("SB3-*"))


def test_dqn_reports_the_decisions_it_trained_on(tmp_path: Path) -> None:
    from sloserve.rl.train import planned_timesteps

    setup = load_setup(_tiny_setup(tmp_path, train={"algo": "dqn", "timesteps": 10}))
    result = train(setup, out=tmp_path / "p.zip")
    assert result.timesteps == planned_timesteps(setup.file.train) == 12  # whole collections of 4


def test_train_rl_prints_the_decisions_trained_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sloserve.cli import main

    cfg = _tiny_setup(tmp_path)
    assert main(["train-rl", str(cfg), "--timesteps", "70", "--out", str(tmp_path / "p.zip")]) == 0
    assert ": 128 decisions" in capsys.readouterr().out


def test_a_train_out_that_cannot_be_written_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sloserve.cli import main

    (tmp_path / "afile").write_text("", encoding="utf-8")
    cfg = _tiny_setup(tmp_path, train={"out": str(tmp_path / "afile" / "x.zip")})
    _no_training(monkeypatch)
    assert main(["train-rl", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: train.out: " in err and "afile is a file, not a directory" in err
    assert main(["experiment", "qos", "--quick", "--config", str(cfg), "--out", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: train.out: " in err and "afile is a file, not a directory" in err


@pytest.mark.parametrize(
    ("evals", "said"),
    [
        ({"trace": "nosuch.csv"}, "eval.trace: "),
        ({"trace": "trace.csv", "trace_window_s": 25}, "no requests in the window"),
    ],
)
def test_experiment_qos_refuses_a_bad_eval_trace_before_training(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    evals: dict[str, object],
    said: str,
) -> None:
    from sloserve.cli import main

    (tmp_path / "trace.csv").write_text("TIMESTAMP\n" + "\n".join(str(t) for t in range(20)) + "\n")
    cfg = _tiny_setup(tmp_path, eval={"seeds": [1, 2], "rates": [100], "duration_s": 2, **evals})
    _no_training(monkeypatch)
    policy = tmp_path / "missing.zip"
    args = ["experiment", "qos", "--quick", "--config", str(cfg), "--policy", str(policy)]
    assert main([*args, "--out", str(tmp_path / "res")]) == 2
    assert said in capsys.readouterr().err
