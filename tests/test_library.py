"""The library face against the simulator: `Job` awaited in a running loop, the sync twins in a cell
with a running loop and in a worker thread, results instead of exceptions, a process left alone,
and the contrib recipes (Dagster, Airflow) calling it. The library itself is never patched; the
orchestrators, which are not installed here, are stood in for by small fakes of this file.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import importlib.util
import resource
import signal
import subprocess
import sys
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest

import downloader
from downloader import InputError, Job, LockedError, UsageError, job_status, plan_job, report_job, run_job
from downloader.cli.status import render_status
from downloader.core.errors import FatalError
from downloader.core.model import Kind, NotFound, PatentKey
from downloader.state.lock import DirLock
from downloader.state.sqlite import STATE_FILE, SqliteStore

from .support import check_downloads, manifest, numbers, settings_for, write_csv

CONTRIB = Path(__file__).resolve().parents[1] / "contrib" / "orchestrators"


async def test_job_awaited_in_a_running_loop_returns_a_frozen_summary(tmp_path, threaded_simulator):
    """`await Job(out, settings).run(inputs)`: every patent settled, cost as the simulator counted it."""
    sim, out = threaded_simulator, tmp_path / "out"
    source = write_csv(tmp_path / "in.csv", numbers(30))
    summary = await Job(out, settings_for(sim)).run([source])
    assert summary.exit_code == 0 and summary.stop_reason is None and summary.error is None
    assert summary.api_calls == sim.counters.api_requests == 1 and summary.charged == sim.counters.charged
    assert summary.manifest == str(out / "manifest.csv") and len(manifest(out)) == 30
    assert check_downloads(out, sim) == summary.by_status["downloaded"] == summary.images
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.exit_code = 1  # type: ignore[misc]
    status = await Job(out, settings_for(sim)).status()
    assert dict(status.by_status) == dict(summary.by_status) and status.runs[0].exit_code == 0
    page = await Job(out).report()
    assert page == str(out / "report.html") and (await anyio.Path(page).stat()).st_size > 1000


async def test_the_sync_twins_work_in_a_cell_whose_loop_is_running(tmp_path, threaded_simulator):
    """A notebook cell: `run_job` called while this thread's loop runs; a rerun asks nothing again."""
    sim, out = threaded_simulator, tmp_path / "out"
    source = write_csv(tmp_path / "in.csv", numbers(20))
    asyncio.get_running_loop()  # the premise: a loop is running in this thread
    first = run_job([source], out, settings_for(sim))
    again = run_job([source], out, settings_for(sim))
    assert first.exit_code == again.exit_code == 0 and first.api_calls == 1 and again.api_calls == 0
    assert plan_job([source], out, settings_for(sim)).to_ask == 0
    assert job_status(out).total == 20 and await anyio.Path(report_job(out)).is_file()


def test_the_sync_twins_work_from_a_worker_thread(tmp_path, threaded_simulator):
    """An orchestrator's worker thread: plan, run, status and report each return their record."""
    sim, out = threaded_simulator, tmp_path / "out"
    source = write_csv(tmp_path / "in.csv", numbers(20))
    settings = settings_for(sim)
    with ThreadPoolExecutor(1) as pool:
        plan = pool.submit(plan_job, [source], out, settings).result()
        summary = pool.submit(run_job, [source], out, settings).result()
        status = pool.submit(job_status, out, settings).result()
    assert (plan.api_calls, plan.to_ask, plan.charged_at_most) == (1, 20, 20)
    assert summary.exit_code == 0 and summary.charged == sim.counters.charged and status.total == 20


def test_a_plan_makes_no_request_and_creates_nothing(tmp_path, threaded_simulator):
    """The dry run: exact calls from the inputs, no request of any kind, no --out folder made."""
    sim, out = threaded_simulator, tmp_path / "never" / "made"
    source = write_csv(tmp_path / "in.csv", numbers(250) + ["not a patent"])
    plan = plan_job([source], out, settings_for(sim, rate=5.0, max_charged=120))
    assert (plan.unique, plan.rejected, plan.api_calls, plan.charged_at_most, plan.seconds_at_rate) == (
        250, 1, 3, 120, 0.6)
    assert not (tmp_path / "never").exists()
    assert sim.counters.api_requests == sim.counters.image_requests == sim.counters.token_requests == 0


def test_a_dry_run_setting_never_bills(tmp_path, threaded_simulator):
    """`Settings(dry_run=True)` given to run is refused (UsageError, exit 2): the dry run is `plan`."""
    source = write_csv(tmp_path / "in.csv", numbers(5))
    with pytest.raises(UsageError, match="plan") as refused:
        run_job([source], tmp_path / "out", settings_for(threaded_simulator, dry_run=True))
    assert refused.value.exit_code == 2 and threaded_simulator.counters.api_requests == 0


def test_a_fatal_stop_is_a_result_with_its_error(tmp_path, sim_config, threaded_simulator):
    """The API refuses the account (67200005): exit 3 in the Summary, the FatalError and its hint with it."""
    sim_config.fatal_code = 67200005
    source = write_csv(tmp_path / "in.csv", numbers(10))
    summary = run_job([source], tmp_path / "out", settings_for(threaded_simulator))
    assert summary.exit_code == 3 and summary.stop_reason == "fatal"
    assert isinstance(summary.error, FatalError) and summary.error.exit_code == 3
    assert "67200005" in (summary.fatal or "") and {r["status"] for r in manifest(tmp_path / "out")} == {"pending"}


def test_what_the_caller_must_handle_raises_with_its_exit_code(tmp_path, threaded_simulator):
    """A missing input (InputError) and a folder another run holds (LockedError): exit code 2 on each."""
    settings = settings_for(threaded_simulator)
    with pytest.raises(InputError) as missing:
        run_job([tmp_path / "nope.csv"], tmp_path / "out", settings)
    out = tmp_path / "held"
    out.mkdir()
    with DirLock(out), pytest.raises(LockedError) as held:
        run_job([write_csv(tmp_path / "in.csv", numbers(3))], out, settings)
    assert missing.value.exit_code == held.value.exit_code == 2
    assert threaded_simulator.counters.api_requests == 0


def test_the_library_leaves_the_process_alone(tmp_path, threaded_simulator):
    """No signal handler, open-file limit or event-loop policy changed by a run that did not ask."""
    def snapshot() -> tuple[Any, ...]:
        return (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM),
                resource.getrlimit(resource.RLIMIT_NOFILE), type(asyncio.get_event_loop_policy()))

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 512) if hard == resource.RLIM_INFINITY else min(soft, 512, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))  # a raise would show against this
    try:
        before = snapshot()
        summary = run_job([write_csv(tmp_path / "in.csv", numbers(10))], tmp_path / "out",
                          settings_for(threaded_simulator))
        assert summary.exit_code == 0 and snapshot() == before
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_public_names_are_the_documented_ones():
    """`from downloader import …` gives the face the README documents, each exception with its exit code."""
    assert {"Job", "Settings", "Summary", "Plan", "JobStatus", "run_job", "plan_job", "job_status",
            "report_job"} <= set(downloader.__all__)
    assert [e.exit_code for e in (UsageError, InputError, LockedError, downloader.StateError)] == [2, 2, 2, 2]


# --- contrib/orchestrators: the same library calls, as an orchestrator makes them ---------------------


class _Failure(Exception):
    def __init__(self, description: str = "", metadata: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.metadata = metadata


def _fake_orchestrators(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-ins for the parts of Dagster and Airflow the recipes use (neither is installed here)."""
    def decorator(*args: Any, **kwargs: Any) -> Any:  # @asset, @asset(...), @task(...): the plain function
        return args[0] if args and callable(args[0]) else (lambda fn: fn)

    dagster = types.ModuleType("dagster")
    dagster.asset = decorator  # type: ignore[attr-defined]
    dagster.MaterializeResult = lambda metadata=None: types.SimpleNamespace(metadata=metadata)  # type: ignore[attr-defined]
    dagster.MetadataValue = types.SimpleNamespace(path=lambda p: ("path", str(p)))  # type: ignore[attr-defined]
    dagster.Failure = _Failure  # type: ignore[attr-defined]
    decorators, exceptions = types.ModuleType("airflow.decorators"), types.ModuleType("airflow.exceptions")
    decorators.task = decorator  # type: ignore[attr-defined]
    exceptions.AirflowException = type("AirflowException", (Exception,), {})  # type: ignore[attr-defined]
    exceptions.AirflowFailException = type("AirflowFailException", (exceptions.AirflowException,), {})  # type: ignore[attr-defined]
    for name, module in {"dagster": dagster, "airflow": types.ModuleType("airflow"),
                         "airflow.decorators": decorators, "airflow.exceptions": exceptions}.items():
        monkeypatch.setitem(sys.modules, name, module)


def _recipe(name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    _fake_orchestrators(monkeypatch)
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", CONTRIB / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def patsnap_env(monkeypatch: pytest.MonkeyPatch, threaded_simulator: Any) -> None:
    """The credentials a worker's environment gives the recipes, pointing at the simulator."""
    for name in ("PATSNAP_CLIENT_ID", "PATSNAP_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATSNAP_API_BASE", threaded_simulator.base_url)
    monkeypatch.setenv("PATSNAP_TOKEN", "demo-token")
    monkeypatch.setenv("PATSNAP_API_KEY", "demo-key")


@pytest.mark.usefixtures("patsnap_env")
async def test_the_dagster_asset_materializes_with_counts_and_cost_inside_a_running_loop(
        tmp_path, monkeypatch, threaded_simulator):
    """The asset body runs where a loop is running; its metadata is the run's counts and cost."""
    sim, out = threaded_simulator, tmp_path / "out"
    monkeypatch.setenv("PATENTS_CSV", str(write_csv(tmp_path / "in.csv", numbers(40))))
    monkeypatch.setenv("PATENTS_OUT", str(out))
    asset = _recipe("dagster_asset", monkeypatch)
    meta = asset.patent_drawings().metadata
    assert meta["exit_code"] == 0 and meta["api_calls"] == sim.counters.api_requests == 1
    assert meta["charged_results"] == sim.counters.charged and meta["manifest"] == ("path", str(out / "manifest.csv"))
    assert meta["downloaded"] + meta["no_image"] + meta["not_found"] == 40 and meta["left_for_next_run"] == 0
    sim.config.fatal_code = 67200005  # the account refused: the asset fails with the tool's words
    monkeypatch.setenv("PATENTS_CSV", str(write_csv(tmp_path / "more.csv", numbers(50)[40:])))
    with pytest.raises(_Failure, match="67200005") as failed:
        asset.patent_drawings()
    assert failed.value.metadata is not None and failed.value.metadata["exit_code"] == 3


@pytest.mark.usefixtures("patsnap_env")
def test_the_airflow_task_returns_counts_and_cost_from_a_worker_thread(tmp_path, monkeypatch, threaded_simulator):
    """The task body runs in a worker thread (as an executor runs it); a second run costs nothing."""
    sim, out = threaded_simulator, tmp_path / "out"
    source = str(write_csv(tmp_path / "in.csv", numbers(40)))
    recipe = _recipe("airflow_task", monkeypatch)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(recipe.download_patent_drawings, [source], str(out)).result()
        again = pool.submit(recipe.download_patent_drawings, [source], str(out)).result()
    assert first["exit_code"] == again["exit_code"] == 0 and first["charged_results"] == sim.counters.charged
    assert first["api_calls"] == 1 and again["api_calls"] == again["charged_results"] == 0
    assert first["manifest"] == str(out / "manifest.csv") and first["images"] == first["downloaded"]


# --- the README's library section, run as written ---------------------------------------------------


def _readme_blocks() -> list[str]:
    """The python blocks of the README's "Library use" section, in order (the async one, then the sync one)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Library use\n", 1)[1].split("\n## ", 1)[0]
    return [block.split("\n```", 1)[0] for block in section.split("```python\n")[1:]]


@pytest.fixture
def readme_env(tmp_path, monkeypatch, threaded_simulator) -> Path:
    """The README's setting: patents.csv in the working folder, PatSnap's OAuth client in the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATSNAP_API_BASE", threaded_simulator.base_url)
    monkeypatch.setenv("PATSNAP_CLIENT_ID", threaded_simulator.config.client_id)
    monkeypatch.setenv("PATSNAP_CLIENT_SECRET", threaded_simulator.config.client_secret)
    write_csv(tmp_path / "patents.csv", numbers(30))
    return tmp_path / "patent-images-out"


async def test_the_readme_async_block_runs_as_written_in_a_cell(readme_env, threaded_simulator, capsys):
    """Top-level awaits in a running loop, as a notebook cell runs them."""
    code = compile(_readme_blocks()[0], "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    await eval(code, {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "1 30 0.2" and printed[1].startswith("0 None {")
    assert threaded_simulator.counters.api_requests == 1 and (readme_env / "report.html").is_file()


@pytest.mark.slow
def test_the_readme_sync_block_runs_as_written_in_a_script_and_in_a_cell(readme_env, threaded_simulator):
    """A plain script (its own process, no loop), then the same lines where a loop is running."""
    block = _readme_blocks()[1]
    done = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.startswith("0 {"), done.stderr
    assert threaded_simulator.counters.api_requests == 1

    async def cell() -> None:
        exec(block, {})
    asyncio.run(cell())
    assert threaded_simulator.counters.api_requests == 1  # the rerun asked nothing: all settled


async def test_status_of_a_live_run_shows_its_elapsed_time_and_progress(tmp_path):
    """A run still going (a live lease) shows seconds since it started, keys settled of its total and its
    workers' figures so far, in the record and in `status`'s table; not `0.0 … unfinished`."""
    out = tmp_path
    store = await SqliteStore.open(out / STATE_FILE)
    keys = [PatentKey(Kind.NUMBER, f"US{100 + i}B2") for i in range(40)]
    run_id = await store.start_run({"inputs": ["in.csv"]})
    await store.ingest(keys, run_id)
    await store.apply([NotFound(k) for k in keys[:10]])
    await store.heartbeat(run_id, "host:1", {"counters": {"api_calls": 2, "charged": 10, "images": 0}}, 60.0)
    await store.close()
    status = await Job(out).status()
    live = status.runs[0]
    assert live.live and live.exit_code is None and (live.settled, live.total) == (10, 40)
    assert live.summary["seconds"] >= 0 and live.summary["api_calls"] == 2 and live.summary["charged"] == 10
    table = render_status(status.to_dict())
    assert "running: 10 of 40 settled (25%)" in table and "unfinished" not in table
