"""What a person reads: the final line, notices on the terminal, one line for a fatal stop, a busy port."""

from __future__ import annotations

import io
import socket
import time

import pytest

from downloader.cli import app as cli
from downloader.cli.finalline import count, describe_summary
from downloader.cli.progress import Bars, LogLines, make_progress
from downloader.core.events import BatchDone, ImageDone, Notice, Planned
from downloader.core.outcome import StopReason, Summary

from .support import cli_args, numbers, one_clear_line, run_cli, write_csv


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _summary(**values: object) -> Summary:
    base: dict[str, object] = {"run_id": 3, "exit_code": 0, "seconds": 12.34, "unique": 1000, "new": 1000,
                               "by_status": {"downloaded": 854, "no_image": 79, "not_found": 67},
                               "api_calls": 10, "charged": 933, "images": 854, "bytes": 21_000_000,
                               "images_per_second": 200.0, "peak_rss_mb": 90.0}
    return Summary(**{**base, **values})  # type: ignore[arg-type]


@pytest.mark.parametrize(("n", "one", "many", "text"), [
    (0, "call", None, "0 calls"), (1, "call", None, "1 call"), (2, "call", None, "2 calls"),
    (1, "retry", "retries", "1 retry"), (12_345, "retry", "retries", "12,345 retries")])
def test_count_words(n, one, many, text):
    """Plurals read right and thousands are separated."""
    assert count(n, one, many) == text


def test_final_line_counts_everything_with_plurals_and_separators():
    """Statuses, rejected rows (with where to look), duplicates, calls, charged and recharged, images."""
    line = describe_summary(_summary(unique=12_345, by_status={"downloaded": 12_000, "failed": 345},
                                     rejected=1, duplicates=2, api_calls=1, charged=12_345, recharged=7,
                                     retries=1), "/out/manifest.csv")
    assert line.startswith("Done in 12.3 s: 12,345 patents (12,000 downloaded, 345 failed); ")
    assert "1 rejected row (see /out/rejects.csv), 2 duplicates; " in line
    assert "1 API call, 12,345 charged results (7 recharged), 1 retry, 854 images (21.0 MB, 200/s)" in line
    assert line.endswith("Manifest: /out/manifest.csv.")


def test_final_line_of_a_clean_run_has_no_input_remarks_and_plural_calls():
    """No rejected rows or duplicates: nothing said about them; "10 API calls"."""
    line = describe_summary(_summary(), "m.csv")
    assert "rejected" not in line and "duplicate" not in line and "recharged" not in line
    assert "10 API calls, 933 charged results, 0 retries, 854 images" in line


def test_final_line_of_a_run_with_nothing_to_do_says_so():
    """Everything already settled, nothing asked or fetched: "Nothing to do: 1,000 of 1,000 patents already settled"."""
    line = describe_summary(_summary(new=0, known=1000, api_calls=0, charged=0, images=0, bytes=0), "m.csv")
    assert line.startswith("Nothing to do: 1,000 of 1,000 patents already settled (854 downloaded, ")
    assert "no API call made" in line


def test_final_line_names_a_cap():
    """A run stopped by --max-charged says so and that the next run continues."""
    line = describe_summary(_summary(stop_reason=StopReason.BUDGET, exit_code=4), "m.csv")
    assert line.endswith("Stopped: the --max-charged budget is spent; the next run continues.")


def test_a_rerun_of_a_finished_list_says_nothing_to_do(tmp_path, threaded_simulator, capsys):
    """End to end: the second run of the same list prints the "nothing to do" line and calls nothing."""
    source, out = write_csv(tmp_path / "in.csv", numbers(60)), tmp_path / "out"
    args = cli_args(threaded_simulator, [source], out)
    assert cli.main(args) in (0, 1)
    capsys.readouterr()
    calls = threaded_simulator.counters.api_requests
    assert cli.main(args) in (0, 1)
    err = capsys.readouterr().err
    assert threaded_simulator.counters.api_requests == calls
    assert "Nothing to do: " in err and "patents already settled" in err


# --- notices on the terminal ---------------------------------------------------------------------------


NOTICES = [Notice("token", "token refreshed"), Notice("fatal", "stopping: PatSnap error 67200005"),
           Notice("failed", "CN1A: BadImageError"), Notice("throttled", "throttled: rate 2.5/s"),
           Notice("budget", "budget spent: stopping"), Notice("interrupted", "SIGINT: stopping, state is being saved")]


@pytest.mark.parametrize("make", [lambda out, v: LogLines(out, interval=3600, verbose=v), lambda out, v: Bars(out, v)],
                         ids=["log-lines", "bars"])
def test_routine_notices_only_with_verbose(make):
    """Token refreshes, per-patent failures, and what the last line says anyway (fatal, caps) need --verbose."""
    quiet, loud = FakeTTY(), FakeTTY()
    for out, verbose in ((quiet, False), (loud, True)):
        sink = make(out, verbose)
        for notice in NOTICES:
            sink(notice)
        sink.close()
    assert "token refreshed" not in quiet.getvalue() and "67200005" not in quiet.getvalue()
    assert "CN1A" not in quiet.getvalue() and "budget spent" not in quiet.getvalue()
    assert "throttled: rate 2.5/s" in quiet.getvalue() and "SIGINT: stopping" in quiet.getvalue()
    assert all(n.message in loud.getvalue() for n in NOTICES)


def test_no_progress_with_verbose_still_shows_notices():
    """--no-progress --verbose: no bars or progress lines, but every notice."""
    out = io.StringIO()
    sink = make_progress(False, out, verbose=True)
    assert sink is not None and make_progress(False, out) is None
    sink(Planned(10, 0, 1))
    sink(Notice("token", "token refreshed"))
    assert out.getvalue() == "token refreshed\n"


def test_bars_are_cleared_when_the_run_ends():
    """After close, the terminal's last line holds no bar: the final line replaces it."""
    out = FakeTTY()
    bars = Bars(out)
    bars(Planned(10, 0, 1))
    bars(BatchDone(10, 8, 10))
    bars(ImageDone("downloaded", 1000))
    assert "patents" in out.getvalue()
    bars.close()
    tail = out.getvalue().rsplit("\r", 1)[-1]
    assert tail.strip(" \x1b[A\n") == "", repr(tail)


def test_a_fatal_condition_is_printed_once_and_token_refreshes_not_at_all(tmp_path, sim_config, threaded_simulator):
    """Balance spent (67200005) with OAuth: stderr is one line naming it, exit 3; no "token refreshed"."""
    sim_config.fatal_code = 67200005
    source = write_csv(tmp_path / "in.csv", numbers(30))
    args = cli_args(threaded_simulator, [source], tmp_path / "out", credentials=False)
    done = run_cli(*args, "--client-id", sim_config.client_id, "--client-secret", sim_config.client_secret)
    assert done.returncode == 3
    line = one_clear_line(done.stderr)
    assert "67200005" in line and line.count("rerun") == 1


@pytest.mark.parametrize("auth", ["oauth", "token"])
def test_a_wrong_api_path_stops_at_once_naming_the_url(tmp_path, sim_config, threaded_simulator, auth):
    """HTTP 404 from the API (or its token endpoint) is a wrong --api-base, not an outage: exit 3 within
    seconds (was 30 s of retries), one line with the full URL, "check --api-base", rerun advice once."""
    source = write_csv(tmp_path / "in.csv", numbers(3))
    args = cli_args(threaded_simulator, [source], tmp_path / "out", credentials=auth == "token")
    base = f"{threaded_simulator.base_url}/wrongpath"
    args[args.index("--api-base") + 1] = base
    if auth == "oauth":
        args += ["--client-id", sim_config.client_id, "--client-secret", sim_config.client_secret]
    started = time.monotonic()
    done = run_cli(*args)
    assert done.returncode == 3 and time.monotonic() - started < 15
    line = one_clear_line(done.stderr)
    path = "/oauth/token" if auth == "oauth" else "/basic-patent-data/abstract-image"
    assert f"HTTP 404 from the {'token endpoint' if auth == 'oauth' else 'API'} at {base}{path}" in line
    assert "check --api-base" in line and line.count("run the same command") == 1
    assert threaded_simulator.counters.charged == 0


def test_an_outage_line_gives_its_rerun_advice_once(capsys, monkeypatch):
    """The outage's own hint says to run the same command: the CLI does not add a second rerun."""
    from downloader.core.outage import OutageDetector

    detector = OutageDetector("the CDN", span=0.0)
    for now in range(5):
        detector.failed(float(now), "image download failed: connection refused", "http://127.0.0.1:9")
    outage = detector.error(10.0)
    assert outage is not None and outage.hint_says_rerun

    def stop(_args: object) -> int:
        raise outage

    monkeypatch.setattr(cli, "cmd_status", stop)
    monkeypatch.setattr(cli, "_sigterm_as_interrupt", lambda: None)
    assert cli.main(["status", "--out", "x"]) == 3
    line = one_clear_line(capsys.readouterr().err)
    assert line.count("run the same command") == 1 and "rerun" not in line


def test_a_spent_quota_and_a_halt_record_keep_the_rerun_flag():
    """The gate's spent-quota stop says "then run the same command" itself; so does the copy another worker
    reads from the halt record: neither gets a second rerun from the CLI."""
    from downloader.core import gate, halt
    from downloader.net.ratelimit import fatal_from

    spent = fatal_from(gate.spent_quota(gate.Episode(since=0.0, what="HTTP 429", status=429), 60.0, None, 60.0,
                                        [1.0, 2.0]))
    assert spent.hint_says_rerun and "run the same command" in spent.hint
    record, _ = halt.record(spent, run_id=7, worker="w1")(None, 0.0)
    again = halt.error_from(record, 7)
    assert again is not None and again.hint_says_rerun and again.hint == spent.hint


def test_simulate_on_a_port_in_use_is_a_usage_error():
    """`simulate --port P` with P taken: exit 2 and "port P is in use; choose another with --port"."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli("simulate", "--port", str(port), timeout=30)
    assert done.returncode == 2
    assert one_clear_line(done.stderr) == f"patent-images: port {port} is in use; choose another with --port"


def test_dry_run_plan_reads_right_for_one_call():
    """The plan said "1 keys … in 1 calls (at most 1 charged results)": singular and plural as they should be."""
    from dataclasses import replace

    from downloader.dryrun import Plan, describe_plan

    plan = Plan(rows=1, unique=1, duplicates=0, rejected=0, settled=0, new=1, failed_kept=0, to_ask=1, api_calls=1,
                charged_at_most=1, reusable_urls=0, to_ask_numbers=1, to_ask_ids=0, seconds_at_rate=0.2)
    text = describe_plan(plan)
    assert "would ask the API for 1 key (1 new, 0 left from earlier runs) in 1 call (at most 1 charged result)" in text
    many = describe_plan(replace(plan, rows=1234, unique=1200, duplicates=34, to_ask=1200, new=1200, api_calls=12,
                                 charged_at_most=1200))
    assert "inputs: 1,234 keys read, 1,200 unique, 34 duplicates; 0 rows rejected" in many
    assert "in 12 calls (at most 1,200 charged results)" in many


def test_the_log_end_line_counts_rejected_and_duplicate_rows(tmp_path, threaded_simulator):
    """--log-file's end line accounts for every input row: statuses, rejected rows and duplicates."""
    values = numbers(5)
    source = write_csv(tmp_path / "in.csv", [*values, values[0], "%%%"])
    log = tmp_path / "run.log"
    args = cli_args(threaded_simulator, [source], tmp_path / "out", "--log-file", str(log))
    assert cli.main(args) == 0
    end = log.read_text(encoding="utf-8").splitlines()[-1]
    assert " end: exit_code=0, " in end and "rejected=1, duplicates=1, api_calls=1" in end


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_simulate_on_an_impossible_port_is_a_usage_error(port):
    """`simulate --port 99999` was an internal error (OverflowError): now argparse's usage error, exit 2."""
    done = run_cli("simulate", "--port", port, timeout=30)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "argument --port:" in done.stderr.strip().splitlines()[-1]


def test_status_table_explains_each_status_and_marks_runs():
    """`status`: counts with separators and what each status means; a no-op run and an unfinished one say so."""
    from downloader.cli.status import render_status

    quiet = {"seconds": 0.1, "unique": 1000, "by_status": {"downloaded": 1000}, "api_calls": 0, "images": 0}
    text = render_status({"folder": "/out", "total": 1234, "by_status": {"downloaded": 1200, "pending": 34},
                          "runs": [{"id": 2, "started": 0, "exit_code": 0, "summary": quiet},
                                   {"id": 1, "started": 0, "exit_code": None, "summary": {}}]})
    assert text.startswith("/out: 1,234 patents\n  downloaded       1,200  image saved\n")
    assert "pending             34  not asked yet: the next run continues" in text
    assert text.splitlines()[-2].endswith("nothing to do") and text.splitlines()[-1].endswith("unfinished")
