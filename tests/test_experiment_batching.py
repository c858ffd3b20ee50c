"""``sloserve experiment batching --quick`` runs end to end and reports what it promises."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sloserve.cli import main
from sloserve.experiments.batching import BUILTIN_PROFILES, Case, Settings, capacity, make_slo, make_triton


@pytest.mark.slow
def test_quick_run_writes_table_json_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "batching", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "Capacity at 99% attainment" in printed and "targets" in printed
    assert "rows where no scheduler reaches 1.5x Triton default" in printed
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["experiment"] == "batching" and "machine" in doc
    # the default profiles are the demo models' measured ones, and the report says so
    assert {r["model"] for r in doc["rows"]} == {"mobilenet_v2", "resnet18", "bert"}
    assert "demo_1core.yaml" in doc["profiles"] and "demo_1core.yaml" in printed
    for row in doc["rows"]:
        caps = row["capacity"]
        assert set(caps) == {
            "slo",
            "triton default",
            "triton best",
            "ray default",
            "ray best",
            "clipper aimd",
        }
        assert all(v >= 0 for v in caps.values())
        assert row["ratio_vs_triton_default"] == pytest.approx(caps["slo"] / caps["triton default"])
        assert row["settings"]["triton best"]["max_batch_size"] >= 1
        # the clairvoyant bound sits above every policy (within the searches' tolerance)
        bound = row["bound"]
        assert bound["kind"] == "clairvoyant" and bound["capacity"] >= 0.95 * max(caps.values()) > 0
        assert bound["vs_triton_default"] == pytest.approx(bound["capacity"] / caps["triton default"])
    pngs = sorted(p.name for p in tmp_path.glob("attainment_*.png"))
    assert len(pngs) == len(doc["rows"])


def test_capacity_search_ranks_a_sensible_policy_above_a_bad_one() -> None:
    # batch 1 cannot exploit batching: its capacity is far below the SLO-aware batcher's
    p = BUILTIN_PROFILES[0]
    case = Case(p, "loose", (16 * p.tail_latency(1),))
    s = Settings(duration=3.0, seeds=(0,), tol=0.1)
    good = capacity(case, make_slo(p, case.slo), s, seeds=s.seeds, tol=s.tol)
    bad = capacity(case, make_triton(1), s, seeds=s.seeds, tol=s.tol)
    assert good > 2 * bad > 0


def test_a_ratio_the_search_leaves_open_against_its_target_is_searched_finer() -> None:
    from sloserve.experiments.batching import PolicyResult, refine_near_targets

    p = BUILTIN_PROFILES[0]
    case = Case(p, "loose", (16 * p.tail_latency(1),))
    s = Settings(duration=3.0, seeds=(0,), tol=0.1)
    makes = {"slo": make_slo(p, case.slo), "triton default": make_triton(4)}

    def first() -> dict[str, PolicyResult]:
        return {
            k: PolicyResult(capacity(case, m, s, seeds=s.seeds, tol=s.tol), tol=s.tol)
            for k, m in makes.items()
        }

    results = first()
    ratio = results["slo"].capacity / results["triton default"].capacity
    far = first()
    refine_near_targets(case, makes, far, s, targets={"triton default": 1.2 * ratio})  # decided: left alone
    assert {k: (r.capacity, r.tol) for k, r in far.items()} == {
        k: (r.capacity, r.tol) for k, r in results.items()
    }
    near = first()
    refine_near_targets(case, makes, near, s, targets={"triton default": 1.02 * ratio})  # inside the brackets
    for k, r in near.items():
        assert r.tol == pytest.approx(s.tol / 4)
        # searched again from its bracket: never below what passed, never past the bracket's top by much
        assert results[k].capacity <= r.capacity <= results[k].capacity / (1 - s.tol) * 1.01


def test_the_bound_of_several_instances_is_their_fluid_ceiling_over_the_target() -> None:
    from sloserve.experiments.batching import SCENARIOS, bound_capacity, run_once
    from sloserve.sim.bounds import fluid_ceiling

    p = BUILTIN_PROFILES[0]
    case = Case(p, "loose", (16 * p.tail_latency(1),), SCENARIOS["inst4"])
    s = Settings(duration=2.0, seeds=(0,), tol=0.1)
    bound, kind = bound_capacity(case, s)
    # at 99% attainment 1% may miss: the offered rate may pass the ceiling by up to 1/0.99
    assert kind == "fluid" and bound == pytest.approx(fluid_ceiling(p, case.slo, 4) / 0.99)
    # past it the queue grows without end: a run of 2 s per instance misses far more than 1%
    assert run_once(case, make_slo(p, case.slo), 1.2 * bound, 0, 8.0).attainment < 0.95


def test_scenarios_add_rows_with_their_conditions() -> None:
    from sloserve.experiments.batching import COLOCATED_SLOWDOWN, SCENARIOS, load_cases

    quick, _ = load_cases(["published"], quick=True)
    assert {c.scenario.key for c in quick} == {"base"} and len(quick) == 6
    full, _ = load_cases(["published"], quick=False)
    assert {c.scenario.key for c in full} == set(SCENARIOS)
    extra = [c for c in full if c.scenario.key != "base"]
    assert {c.label for c in extra} == {"tight", "loose"}
    coloc = [c for c in full if c.scenario.key == "coloc4"]
    assert all(
        c.profile.latency(1, 1, 4) == pytest.approx(COLOCATED_SLOWDOWN[3] * c.profile.latency(1))
        for c in coloc
    )
    # runs: as many requests as a one-instance run per instance; bursty ones at least 4000
    assert SCENARIOS["base"].duration(100.0, 20.0) == 20.0
    assert SCENARIOS["inst4"].duration(100.0, 20.0) == 5.0
    assert SCENARIOS["gamma3"].duration(10.0, 20.0) == 400.0
    # the SLOs stay those of the plain profile (4 and 16 times its batch-1 tail)
    base = {(c.profile.model, c.label): c.slos for c in full if c.scenario.key == "base"}
    assert all(c.slos == base[(c.profile.model, c.label)] for c in coloc)


def test_trace_arrivals_are_scaled_to_the_rate_under_test() -> None:
    from sloserve.experiments.batching import AZURE_CODE_TRACE, trace_arrivals

    if not AZURE_CODE_TRACE.exists():
        pytest.skip(f"{AZURE_CODE_TRACE} not present")
    a = trace_arrivals(200.0, 0, 5.0)
    b = trace_arrivals(200.0, 1, 5.0)
    assert len(a) == len(b) == 1000
    assert (len(a) - 1) / a.arrivals[-1] == pytest.approx(200.0 * (999 / 1000), rel=0.01)
    assert not np.array_equal(np.diff(a.arrivals), np.diff(b.arrivals))  # seeds pick other windows
    # bursty: inter-arrival CV far above Poisson's 1
    gaps = np.diff(a.arrivals)
    assert gaps.std() / gaps.mean() > 2


def test_four_instances_serve_what_one_cannot() -> None:
    from sloserve.experiments.batching import SCENARIOS, run_once

    p = BUILTIN_PROFILES[1]
    slo = 16 * p.tail_latency(1)
    one_max = p.max_batch / p.latency(p.max_batch)  # one instance's best throughput
    rate = 2.5 * one_max
    one = Case(p, "loose", (slo,))
    four = Case(p, "loose", (slo,), SCENARIOS["inst4"])
    assert run_once(one, make_slo(p, slo), rate, 0, 2.0).attainment < 0.6
    assert run_once(four, make_slo(p, slo), rate, 0, 2.0).attainment >= 0.99


def test_the_default_profiles_are_the_demo_models_measured_on_one_core() -> None:
    from sloserve.core.profiles import TabulatedProfile
    from sloserve.experiments.batching import load_cases
    from sloserve.runtime.demo import DEMO_MODELS

    cases, source = load_cases(["demo"], quick=True)
    assert "measured" in source
    models = {c.profile.model: c.profile for c in cases}
    assert set(models) == {"mobilenet_v2", "resnet18", "bert"}
    for name, profile in models.items():
        assert isinstance(profile, TabulatedProfile)
        # measured at one thread, one instance, up to the demo model's max_batch_size
        assert {(pt.cores, pt.instances) for pt in profile.points} == {(1, 1)}
        assert profile.max_batch == DEMO_MODELS[name]().config["max_batch_size"]
        # a measured curve: time grows with the batch, the tail is at or above the median
        times = [profile.latency(b) for b in sorted(pt.batch for pt in profile.points)]
        assert times == sorted(times) and all(pt.p99 >= pt.median for pt in profile.points)
    # SLOs derive from each profile's measured batch-1 tail
    tight = {c.profile.model: c.slo for c in cases if c.label == "tight"}
    assert tight["resnet18"] == pytest.approx(4 * models["resnet18"].tail_latency(1), abs=1e-4)


def test_profile_sources_combine_and_a_model_given_twice_is_refused(tmp_path: Path) -> None:
    from sloserve.core.config import ConfigError
    from sloserve.core.profile_io import save_profiles
    from sloserve.experiments.batching import load_profile_sources

    # one's own profile files beside the shipped ones
    own = tmp_path / "own.yaml"
    save_profiles([BUILTIN_PROFILES[1]], own)
    profiles, source = load_profile_sources(["demo", own])
    assert [p.model for p in profiles] == ["mobilenet_v2", "resnet18", "bert", "resnet50"]
    assert "demo_1core.yaml" in source and str(own) in source
    loaded, source = load_profile_sources(["published"])
    assert loaded == list(BUILTIN_PROFILES) and "published-style" in source
    # rows are named by model: the published mobilenet_v2 and the measured one cannot share a run
    with pytest.raises(ConfigError, match="--profiles: mobilenet_v2 given more than once"):
        load_profile_sources(["published", "demo"])


def test_a_profile_source_that_cannot_be_read_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.yaml"
    args = ["experiment", "batching", "--quick", "--profiles", str(missing), "--out", str(tmp_path)]
    assert main(args) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_what_a_fast_or_odd_profile_would_break_is_refused_or_kept_in_range() -> None:
    """Found by review: SLOs rounded to 0.1 ms made a profile of microseconds an SLO of 0 (a
    crash); a search's probe could plan billions of requests; grids tried batch caps above the
    model's largest batch."""
    from sloserve.core.config import ConfigError
    from sloserve.core.profiles import AffineProfile
    from sloserve.experiments.batching import ray_grid, slos_for, triton_grid, workload_for

    fast = AffineProfile("fast", alpha=2e-6, beta=1e-6, max_batch=4)
    slos = slos_for(fast)
    assert slos["tight"][0] == pytest.approx(4 * fast.tail_latency(1), rel=0.01) and slos["tight"][0] > 0
    assert slos_for(BUILTIN_PROFILES[0])["tight"][0] == round(4 * BUILTIN_PROFILES[0].tail_latency(1), 4)
    case = Case(fast, "tight", slos["tight"])
    with pytest.raises(ConfigError, match=r"would simulate 3\.6e\+09 requests, over the 2e\+07"):
        workload_for(case, 1e6, 0, 3600.0)
    quick = Settings(grid_batches=(8, 32))
    for grid in (triton_grid(case, quick), ray_grid(case, quick)):
        assert {params["max_batch_size"] for params, _ in grid.values()} == {4}
