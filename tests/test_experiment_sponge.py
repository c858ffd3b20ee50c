"""``sloserve experiment sponge --quick`` runs end to end; its scenario behaves as described."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sloserve.cli import main
from sloserve.experiments.sponge import QUICK, build_workload, run_policies, summary, verdict


def test_workload_has_dynamic_budgets_and_a_rate_step() -> None:
    w = build_workload(QUICK, seed=0)
    budgets = w.deadline_array - w.arrivals
    assert np.all(budgets < QUICK.slo) and np.std(budgets) > 0.005
    first = np.sum(w.arrivals < QUICK.segments[0]) / QUICK.segments[0]
    second = np.sum((w.arrivals >= QUICK.segments[0]) & (w.arrivals < sum(QUICK.segments[:2])))
    assert second / QUICK.segments[1] > 3 * first


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "sponge", "--quick", "--out", str(tmp_path)]) == 0
    assert "horizontal/sponge violations" in capsys.readouterr().out
    doc = json.loads((tmp_path / "results.json").read_text())
    assert set(doc["summary"]) == {"sponge", "horizontal", "static"}
    assert (tmp_path / "timeline.png").stat().st_size > 0
    history = doc["scaler_history_first_seed"]["sponge"]
    assert len(history) >= 30 and max(h[3] for h in history) > min(h[3] for h in history)  # cores moved


def test_sponge_scales_cores_with_the_rate_and_beats_horizontal_on_violations() -> None:
    runs = [run_policies(QUICK, build_workload(QUICK, seed=0), seed=0)]
    rows = summary(runs)
    assert rows["sponge"]["violations"] <= rows["horizontal"]["violations"]
    assert rows["static"]["core_seconds"] > rows["sponge"]["core_seconds"]
    check = verdict(rows)
    assert check["core_seconds_ratio_sponge_over_horizontal"] > 0
    tl = runs[0]["sponge"][0].timeline
    step = (tl.time > QUICK.segments[0] + 3) & (tl.time < sum(QUICK.segments[:2]))
    calm = tl.time < QUICK.segments[0]
    assert tl.cores[step].mean() > tl.cores[calm].mean()


def test_server_configs_name_the_policies_and_are_valid() -> None:
    from sloserve.experiments.sponge_server import ServerSettings, policy_config
    from sloserve.runtime.model_config import ModelConfig

    s = ServerSettings()
    for policy, scaler in (("sponge", "sponge"), ("horizontal", "horizontal"), ("static", None)):
        config = ModelConfig.model_validate(policy_config(s, policy, (2, 4)))
        assert config.scheduler.name == "slo"
        assert (config.scaler.name if config.scaler else None) == scaler
    static = ModelConfig.model_validate(policy_config(s, "static", (2, 4)))
    assert static.instance_group.threads == 2 and static.scheduler.params == {"max_batch_size": 4}


def _metrics_page(monkeypatch: pytest.MonkeyPatch, *lines: str) -> Any:
    """The sponge_server module, its metrics endpoint answering ``lines``."""
    import io

    from sloserve.experiments import sponge_server

    text = "".join(line + "\n" for line in lines)
    monkeypatch.setattr(sponge_server.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(text.encode()))
    return sponge_server


def test_cores_gauge_is_summed_per_model(monkeypatch: pytest.MonkeyPatch) -> None:
    sponge_server = _metrics_page(
        monkeypatch,
        'sloserve_instance_cores{model="a",version="1",instance="0"} 2.0',
        'sloserve_instance_cores{model="a",version="1",instance="3"} 1.0',
        'sloserve_instance_cores{model="b",version="1",instance="1"} 4.0',
    )
    assert sponge_server.cores_now("127.0.0.1:1", "a") == 3.0


def test_batch_time_ratio_reads_the_two_counters_of_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    sponge_server = _metrics_page(
        monkeypatch,
        'sloserve_batch_compute_seconds_total{model="a",version="1"} 6.0',
        'sloserve_batch_profile_seconds_total{model="a",version="1"} 4.0',
        'sloserve_batch_compute_seconds_total{model="b",version="1"} 1.0',
    )
    assert sponge_server.batch_time_ratio("127.0.0.1:1", "a") == 1.5
    assert math.isnan(sponge_server.batch_time_ratio("127.0.0.1:1", "b"))  # no profile counter


def test_violations_are_counted_by_the_second_of_arrival() -> None:
    from sloserve.experiments.sponge_server import violations_per_second

    arrivals = np.array([0.1, 0.5, 1.2, 2.9, 2.95, 3.0])
    met = np.array([True, False, False, True, False, False])
    assert violations_per_second(arrivals, met, 3.0) == [1, 1, 2]  # the last bin takes t = 3.0 too


def test_the_simulators_side_reports_its_violations_per_second(tmp_path: Path) -> None:
    from dataclasses import replace

    from sloserve.core.profiles import AffineProfile
    from sloserve.experiments.sponge_server import ServerSettings, plot_violations, run_in_sim, workload

    # one instance of this profile serves ~150 req/s at batch 8: 200 req/s overloads it
    s = replace(ServerSettings(), model="m", rate=200.0, duration=6.0)
    profile = AffineProfile("m", alpha=0.010, beta=0.0055, max_batch=8, tail_factor=1.2)
    w = workload(s)
    rows = {p: {"simulator": run_in_sim(s, p, profile, w, (2, 8))} for p in ("sponge", "static")}
    for row in rows.values():
        sim = row["simulator"]
        assert len(sim["violations_per_s"]) == 6
        assert sim["violations"] > 0 and sum(sim["violations_per_s"]) == sim["violations"]
        row["server"] = sim  # the plot draws both sides
    path = plot_violations({"rows": rows}, "test", tmp_path / "v.png")
    assert path.stat().st_size > 1000


def _profile_file(path: Path, *entries: str) -> Path:
    path.write_text("format: sloserve-profile/v1\nprofiles:\n" + "".join(f"  - {e}\n" for e in entries))
    return path


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        (
            ["{model: identity, kind: affine, alpha_ms: 1.0, beta_ms: 0.25}"],
            "no profile for model 'mobilenet_v2'",
        ),
        (
            [
                "{model: mobilenet_v2, hardware: cpu, kind: affine, alpha_ms: 1.0, beta_ms: 0.25}",
                "{model: mobilenet_v2, hardware: gpu, kind: affine, alpha_ms: 1.0, beta_ms: 0.25}",
            ],
            "model 'mobilenet_v2' has profiles on 2 hardware types",
        ),
    ],
)
def test_server_profile_without_one_profile_of_the_model_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], entries: list[str], says: str
) -> None:
    path = _profile_file(tmp_path / "p.yaml", *entries)
    argv = [
        "experiment",
        "sponge",
        "--server",
        "--quick",
        "--server-profile",
        str(path),
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2  # before any server starts
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sloserve: error: --server-profile {path}: {says}") and "\n" not in err


def test_no_violations_under_either_policy_shows_no_ratio(tmp_path: Path) -> None:
    from sloserve.experiments.sponge import _outcome
    from sloserve.sim.report import write_json

    def rows(sponge: int, horizontal: int) -> dict[str, dict[str, float]]:
        return {
            "sponge": {"violations": sponge, "core_seconds": 1.0},
            "horizontal": {"violations": horizontal, "core_seconds": 2.0},
        }

    check = verdict(rows(0, 0))
    assert check["met"] is None and math.isnan(check["violations_ratio_horizontal_over_sponge"])
    assert _outcome(check).startswith("not shown")
    doc = json.loads(write_json(tmp_path / "v.json", {"target": check}).read_text())
    assert doc["target"]["met"] is None
    assert verdict(rows(0, 3))["met"] is True and _outcome(verdict(rows(0, 3))) == "met"
    assert verdict(rows(1, 3))["met"] is False and _outcome(verdict(rows(1, 3))) == "NOT met"


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--server-rate", "5"], "--server-rate: not used without --server"),
        (["--server-model", "identity"], "--server-model: not used without --server"),
        (["--server-profile", "PROFILE"], "--server-profile: not used without --server"),
        (["--server", "--cold-start", "0"], "--cold-start: not used with --server"),
        (["--server", "--actuation-delay", "1"], "--actuation-delay: not used with --server"),
        (["--server", "--bandwidth-csv", "PROFILE"], "--bandwidth-csv: not used with --server"),
        (["--server", "--column", "bps"], "--column: not used with --server"),
        (["--column", "bps"], "--column: only with --bandwidth-csv"),
    ],
)
def test_options_of_the_other_mode_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], says: str
) -> None:
    path = _profile_file(
        tmp_path / "p.yaml", "{model: mobilenet_v2, kind: affine, alpha_ms: 1.0, beta_ms: 0.25}"
    )
    argv = ["experiment", "sponge", "--quick", "--out", str(tmp_path / "out")]
    assert main(argv + [str(path) if o == "PROFILE" else o for o in options]) == 2
    assert capsys.readouterr().err.strip() == f"sloserve: error: {says}"
    assert not (tmp_path / "out").exists()  # refused before any work


def test_help_states_the_real_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from sloserve.experiments.sponge import Settings
    from sloserve.experiments.sponge_server import ServerSettings

    with pytest.raises(SystemExit):
        main(["experiment", "sponge", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"req/s for --server (default {ServerSettings.rate:g})" in text
    assert f"demo model for --server (default {ServerSettings.model})" in text
    assert f"seconds before a new replica serves (default {Settings.cold_start:g})" in text
