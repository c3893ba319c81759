"""--metrics-file: Prometheus text format, read back with prometheus_client's own parser."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from downloader.cli import app as cli
from downloader.cli.metrics import LAST_SUCCESS, render_metrics, write_metrics
from downloader.core.outcome import Summary

from .support import cli_args, manifest, numbers, write_csv


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}; the parser refuses malformed text."""
    found = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge" and family.documentation
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found[(f"patent_images_{name}", tuple(sorted(labels.items())))]


def test_render_has_every_figure_with_labels():
    """Counts by status, calls, charged, recharged, bytes, seconds, exit code, times; label values escaped."""
    summary = Summary(run_id=7, exit_code=1, seconds=61.5, unique=10, rejected=2, duplicates=3,
                      by_status={"downloaded": 6, "failed": 1, "not_found": 3}, api_calls=4, charged=9,
                      recharged=1, retries=5, images=6, bytes=123_456)
    out = 'C:\\jobs\\"nightly"'
    found = samples(render_metrics(summary, 1_700_000_000.0, finished=1_700_000_100.0, labels={"out": out}))
    assert value(found, "last_run_patents", out=out, status="downloaded") == 6
    assert value(found, "last_run_patents", out=out, status="pending") == 0
    assert value(found, "last_run_api_calls", out=out) == 4
    assert value(found, "last_run_charged_results", out=out) == 9
    assert value(found, "last_run_recharged_results", out=out) == 1
    assert value(found, "last_run_bytes", out=out) == 123_456
    assert value(found, "last_run_rejected_rows", out=out) == 2
    assert value(found, "last_run_duration_seconds", out=out) == 61.5
    assert value(found, "last_run_exit_code", out=out) == 1
    assert value(found, "last_run_timestamp_seconds", out=out) == 1_700_000_100
    assert value(found, "last_success_timestamp_seconds", out=out) == 1_700_000_000


def test_a_run_that_never_started_reports_no_counts():
    """Bad input or a locked folder (run_id 0): exit code and times only, no zeros posing as counts."""
    found = samples(render_metrics(Summary(exit_code=2, seconds=0.1), None, finished=5.0))
    assert {name for name, _ in found} == {f"patent_images_last_run_{x}" for x in (
        "exit_code", "duration_seconds", "timestamp_seconds")}


def test_last_success_is_kept_when_a_run_fails_and_moves_when_one_succeeds(tmp_path):
    """Exit 0 sets the last success time; a failing run keeps the previous one; the file is replaced whole."""
    path = tmp_path / "patent-images.prom"
    write_metrics(path, Summary(run_id=1, exit_code=0), finished=1000.0)
    write_metrics(path, Summary(run_id=2, exit_code=3), finished=2000.0)
    found = samples(path.read_text())
    assert value(found, "last_success_timestamp_seconds") == 1000 and value(found, "last_run_exit_code") == 3
    write_metrics(path, Summary(run_id=3, exit_code=0), finished=3000.0)
    assert value(samples(path.read_text()), "last_success_timestamp_seconds") == 3000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["patent-images.prom"]  # no temporary file left
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_no_success_yet_means_no_last_success_series(tmp_path):
    """A first run that fails writes no last-success time (absent, not 0)."""
    path = tmp_path / "m.prom"
    write_metrics(path, Summary(run_id=1, exit_code=1))
    assert LAST_SUCCESS not in path.read_text()


def test_run_writes_the_metrics_file(tmp_path, threaded_simulator):
    """`run --metrics-file`: the file matches the run (manifest rows by status, API calls)."""
    source, out, prom = write_csv(tmp_path / "in.csv", numbers(50)), tmp_path / "out", tmp_path / "job.prom"
    code = cli.main(cli_args(threaded_simulator, [source], out, "--metrics-file", str(prom)))
    found = samples(prom.read_text())
    rows = manifest(out)
    for status in ("downloaded", "no_image", "not_found"):
        assert value(found, "last_run_patents", out=str(out), status=status) == sum(r["status"] == status for r in rows)
    assert value(found, "last_run_exit_code", out=str(out)) == code
    assert value(found, "last_run_api_calls", out=str(out)) == threaded_simulator.counters.api_requests


def test_a_fatal_run_still_writes_its_exit_code(tmp_path, sim_config, threaded_simulator):
    """Credentials refused (exit 3): the metrics file says 3 and keeps no success time it never had."""
    sim_config.refuse_credentials = True
    source, prom = write_csv(tmp_path / "in.csv", numbers(5)), tmp_path / "job.prom"
    args = cli_args(threaded_simulator, [source], tmp_path / "out", "--metrics-file", str(prom), credentials=False)
    assert cli.main([*args, "--client-id", "x", "--client-secret", "y"]) == 3
    assert value(samples(prom.read_text()), "last_run_exit_code", out=str(tmp_path / "out")) == 3


def test_metrics_file_in_a_missing_folder_is_a_usage_error_before_any_work(tmp_path, threaded_simulator, capsys):
    """A typo in the folder is said at once (exit 2), not after hours of downloading."""
    source = write_csv(tmp_path / "in.csv", numbers(5))
    missing = tmp_path / "no" / "such" / "m.prom"
    args = cli_args(threaded_simulator, [source], tmp_path / "out", "--metrics-file", str(missing))
    assert cli.main(args) == 2
    assert "does not exist" in capsys.readouterr().err
    assert threaded_simulator.counters.api_requests == 0


@pytest.fixture
def cron_line() -> str:
    """The command of contrib/cron/patent-images.cron."""
    text = (Path(__file__).resolve().parents[1] / "contrib" / "cron" / "patent-images.cron").read_text()
    (line,) = [x for x in text.splitlines() if x.strip() and not x.startswith("#") and "=" not in x.split()[0]]
    return line


def test_cron_recipe_writes_metrics_for_node_exporter(cron_line):
    """The nightly cron line passes --metrics-file into node_exporter's textfile collector folder."""
    assert "--metrics-file /var/lib/node_exporter/textfile_collector/patent-images.prom" in cron_line
