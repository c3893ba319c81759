"""PATENT_IMAGES_LOOP=asyncio|uvloop|auto: which event loop runs the job (the benchmark measures both)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from typing import Any

import pytest

from downloader.core.errors import UsageError
from downloader.job import LOOP_ENV, _has_uvloop, run_job

from .support import check_downloads, cli_args, numbers, one_clear_line, run_cli, settings_for, write_csv

UVLOOP = importlib.util.find_spec("uvloop") is not None


def test_the_variable_chooses_the_loop():
    assert _has_uvloop({}) is UVLOOP and _has_uvloop({LOOP_ENV: "auto"}) is UVLOOP
    assert _has_uvloop({LOOP_ENV: ""}) is UVLOOP
    assert _has_uvloop({LOOP_ENV: "asyncio"}) is False and _has_uvloop({LOOP_ENV: " AsyncIO "}) is False
    with pytest.raises(UsageError, match="expected asyncio, uvloop or auto"):
        _has_uvloop({LOOP_ENV: "trio"})


def test_uvloop_asked_for_but_missing_is_a_usage_error():
    if UVLOOP:
        assert _has_uvloop({LOOP_ENV: "uvloop"}) is True
    else:
        with pytest.raises(UsageError, match="not installed"):
            _has_uvloop({LOOP_ENV: "uvloop"})


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_job_runs_on_the_loop_asked_for(loop, tmp_path, monkeypatch, threaded_simulator):
    """The progress events are sent from inside the loop: they see which one it is; the files are right."""
    if loop == "uvloop" and not UVLOOP:
        pytest.skip("uvloop is not installed (the 'fast' extra)")
    monkeypatch.setenv(LOOP_ENV, loop)
    seen: set[str] = set()

    def sink(event: Any) -> None:
        seen.add(type(asyncio.get_running_loop()).__module__.split(".")[0])

    source = write_csv(tmp_path / "in.csv", numbers(20))
    summary = run_job([source], tmp_path / "out", settings_for(threaded_simulator), events=sink)
    assert summary.exit_code == 0 and check_downloads(tmp_path / "out", threaded_simulator) == summary.images > 0
    assert seen == {loop}


def test_a_bad_value_is_one_clear_line_and_exit_2(tmp_path, threaded_simulator):
    source = write_csv(tmp_path / "in.csv", numbers(3))
    done = run_cli(*cli_args(threaded_simulator, [source], tmp_path / "out"),
                   env={**os.environ, LOOP_ENV: "fastest"})
    assert done.returncode == 2 and f"{LOOP_ENV}=fastest" in one_clear_line(done.stderr)
