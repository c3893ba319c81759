"""Shared fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from downloader.simulator import Simulator, SimulatorConfig, running_simulator, simulator_in_thread

pytest_plugins = ["tests.s3_server"]  # moto_server, s3_bucket, s3_proxy


@pytest.fixture
def sim_config() -> SimulatorConfig:
    """A fresh simulator configuration (seed 0); tests may change it before or during use."""
    return SimulatorConfig(seed=0)


@pytest.fixture
async def simulator(sim_config: SimulatorConfig) -> AsyncIterator[Simulator]:
    """The PatSnap simulator serving on a free loopback port of the test's event loop."""
    async with running_simulator(sim_config) as sim:
        yield sim


@pytest.fixture
def threaded_simulator(sim_config: SimulatorConfig) -> Iterator[Simulator]:
    """The PatSnap simulator on its own loop in a thread, for sync tests and subprocesses."""
    with simulator_in_thread(sim_config) as sim:
        yield sim


@pytest.fixture
def prompt_simulator(sim_config: SimulatorConfig) -> Iterator[Simulator]:
    """`threaded_simulator` whose thread is woken first (real-time scheduling where allowed), so that
    it counts requests per second as a server on its own machine would, whatever this machine's load."""
    with simulator_in_thread(sim_config, prompt=True) as sim:
        yield sim
