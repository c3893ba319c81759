"""The API gate end to end: requests counted per one-second window where the server counts them."""

from __future__ import annotations

import json

import pytest

from .support import cli_args, numbers, run_cli, write_csv


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 3])
def test_the_simulator_never_counts_more_than_rate_requests_in_one_second(tmp_path, sim_config, prompt_simulator,
                                                                          workers):
    """--rate 20, one call per patent, the worker processes starting together: no second at the simulator
    holds 21 requests (its own limit would throttle the 21st), none throttled, every patent asked once."""
    sim = prompt_simulator
    sim_config.qps_limit = 20
    source = write_csv(tmp_path / "in.csv", numbers(100))
    done = run_cli(*cli_args(sim, [source], tmp_path / "out", "--workers", str(workers), "--batch-size", "1",
                             "--rate", "20", "--json"))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    times = sorted(sim.counters.api_times)
    print(f"\n[gate] {workers} worker(s): {len(times)} calls in {times[-1] - times[0]:.2f} s, busiest second "
          f"{sim.counters.busiest_second()}, throttled {sim.counters.throttled}")
    assert summary["workers"] == workers
    assert sim.counters.busiest_second() <= 20
    assert sim.counters.throttled == 0 and summary["api_calls"] == sim.counters.api_requests == 100
    assert max(sim.counters.asks.values()) == 1
