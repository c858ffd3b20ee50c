"""CPU sets for benchmarks: parsing, splitting server from client, pinning a block."""

from __future__ import annotations

import os

import pytest

from sloserve.runtime.cpus import available_cpus, parse_cpu_list, pinned, split_cpus


def test_parse_cpu_list() -> None:
    assert parse_cpu_list("0-3,6") == [0, 1, 2, 3, 6]
    assert parse_cpu_list(" 2 , 1 ") == [1, 2]
    for bad in ("", "a", "3-1", "-1", "0,,1"):
        with pytest.raises(ValueError, match="bad CPU list"):
            parse_cpu_list(bad)


def test_split_keeps_server_and_client_apart() -> None:
    cpus = available_cpus()
    default = split_cpus(None)
    if len(cpus) >= 2:
        assert not default.shared and sorted(default.server + default.client) == cpus
        assert len(default.server) == len(cpus) // 2
        assert "client on CPUs" in default.describe()
    else:
        assert default.shared
    everything = split_cpus("all")
    assert everything.shared and everything.server == cpus and "share" in everything.describe()
    one = split_cpus(str(cpus[0]))
    assert one.server == [cpus[0]] and (one.client == cpus[1:] or one.client == [cpus[0]])
    with pytest.raises(ValueError, match="not available"):
        split_cpus(str(max(cpus) + 1000))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_pinned_restores_the_affinity() -> None:
    before = os.sched_getaffinity(0)
    first = min(before)
    with pinned([first]):
        assert os.sched_getaffinity(0) == {first}
    assert os.sched_getaffinity(0) == before
    with pinned(None):
        assert os.sched_getaffinity(0) == before


def test_server_cpus_argument_gives_a_usage_error_naming_the_cpus(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from sloserve.runtime.cpus import add_server_cpus_argument, split_from_args

    parser = argparse.ArgumentParser(prog="bench")
    add_server_cpus_argument(parser, "all")
    assert split_from_args(parser, parser.parse_args([])).shared
    with pytest.raises(SystemExit):
        split_from_args(parser, parser.parse_args(["--server-cpus", "9999"]))
    assert "CPUs [9999] are not available" in capsys.readouterr().err
