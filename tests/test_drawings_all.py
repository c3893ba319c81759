"""`--drawings all` end to end on the simulator over loopback: every drawing of each patent through
P042, pages, files and their hashes, manifest rows, calls and charges, resume, budget, one kind per job."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from downloader.core.model import FigureKey, Kind
from downloader.simulator import Simulator
from downloader.simulator.cdn import drawing_at

from .support import leftovers, manifest, numbers, run, run_cli, sha256, write_csv
from .test_fleet import fleet_env  # noqa: F401 - the fixture
from .test_postgres_job import pg_url  # noqa: F401 - the fixture
from .test_store_contract import backend, postgres_backend, sqlite_backend  # noqa: F401 - the fixtures

_FILE = re.compile(r"^images/[0-9a-f]{2}/[0-9a-f]/(?P<pn>[A-Za-z0-9_-]+)/(?P<num>[A-Za-z0-9_-]+)\.(png|jpg)$")


def figure_key(value: str, n: int) -> FigureKey:
    """Drawing n of patent number `value` as the contract tests list it: at http://cdn/<value>/<n>.png."""
    return FigureKey(Kind.NUMBER, value, n, f"/{value}/{n}.png")


def figures_of(sim: Simulator, values: list[str]) -> dict[str, int | None]:
    """Each number's drawing count in the simulator (None: unknown patent)."""
    found: dict[str, int | None] = {}
    for value in values:
        record = sim.universe.lookup_number(value)
        found[value] = None if record is None else sim.universe.figures(record)
    return found


def with_many(sim: Simulator, values: list[str], pool: list[str]) -> list[str]:
    """`values` plus one number of `pool` whose patent has more than 100 drawings (paging)."""
    many = next(n for n in pool if (figures_of(sim, [n])[n] or 0) > 100)
    return [*values, many]


def expected_calls(figures: dict[str, int | None]) -> tuple[int, int]:
    """(API calls, charged calls): a page per 100 drawings and at least one per patent; listing pages charged."""
    calls = sum(max(1, math.ceil((n or 0) / 100)) for n in figures.values())
    return calls, sum(math.ceil(n / 100) for n in figures.values() if n)


def check_drawings(out: Path, sim: Simulator, figures: dict[str, int | None]) -> int:
    """The manifest has a row per drawing (figures 1..n in order, each the drawing its URL names), one row
    without figure for a patent with none; every downloaded file is the bytes the CDN serves at its row's URL,
    named images/…/<PN>/<image id>.<ext>; returns the files."""
    rows = manifest(out)
    by_patent: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_patent.setdefault(row["patent_number"], []).append(row)
    assert set(by_patent) == set(figures)
    for number, count in figures.items():
        got = by_patent[number]
        if not count:
            assert [(r["figure"], r["status"]) for r in got] == [("", "not_found" if count is None else "no_image")]
            continue
        assert [int(r["figure"]) for r in got] == list(range(1, count + 1)), number
        assert {r["image_type"] for r in got} == {"drawings"} and {r["status"] for r in got} == {"downloaded"}
    checked = 0
    for row in rows:
        if row["status"] != "downloaded":
            continue
        match = _FILE.match(row["local_file"])
        assert match and match["pn"] == row["pn"] and match["num"] == row["num"], row
        data = (out / row["local_file"]).read_bytes()
        assert sha256(data) == row["sha256"] and int(row["bytes"]) == len(data)
        assert drawing_at(urlsplit(row["path"]).path) == (row["pn"], f"{int(row['figure']):04d}"), row
        assert data == sim.expected_image(row["pn"], f"{int(row['figure']):04d}"), row
        checked += 1
    assert checked == len(list((out / "images").rglob("*.*")))
    return checked


def check_status_and_report(out: Path, figures: dict[str, int | None]) -> None:
    """`status` counts drawings and patents; the report groups each patent's drawings under its figure count
    and shows how many drawings patents have."""
    from downloader.cli.status import render_status
    from downloader.job import job_status, report_job

    data = job_status(out).to_dict()
    listed = sum(n or 0 for n in figures.values())
    assert data["drawings"]["by_status"] == {"downloaded": listed} and data["total"] == len(figures)
    per_patent = Counter(str(n) for n in figures.values() if n is not None)
    assert data["drawings"]["per_patent"] == dict(per_patent)
    assert f"{listed:,} drawings" in render_status(data)
    page = Path(report_job(out)).read_text()
    sheet = json.loads(page.split('id="sheet-data">', 1)[1].split("</script>", 1)[0])
    by_pn = {row["pn"]: row["patent_number"] for row in manifest(out)}
    for pn, figure, path, count in sheet["rows"]:
        assert count == figures[by_pn[pn]] and 1 <= int(figure) <= count and f"/{pn}/" in path
    assert len(sheet["rows"]) == listed  # every drawing of this small job
    assert 'id="figures"' in page and f"{listed:,} drawings listed for" in page and "over 100" in page


@pytest.mark.slow
def test_every_drawing_with_pages_then_reruns_ask_only_for_new_patents(tmp_path, threaded_simulator):
    """Pages past 100 drawings, a call per patent, charges per listing page; a rerun asks nothing and a
    grown list asks only for its new patents."""
    sim = threaded_simulator
    values = with_many(sim, numbers(40), numbers(3000, seed=9))
    figures = figures_of(sim, values)
    assert max(n or 0 for n in figures.values()) > 100 and None in figures.values() and 0 in figures.values()
    source = write_csv(tmp_path / "in.csv", values)
    out = tmp_path / "out"

    summary = run([source], out, sim, drawings="all")

    calls, charged = expected_calls(figures)
    assert summary["exit_code"] == 0, summary
    assert summary["api_calls"] == sim.counters.api_requests == sim.counters.fulltext_pages == calls
    assert summary["charged"] == sim.counters.charged == charged
    assert max(sim.counters.asks.values()) == 1 and len(sim.counters.asks) == len(values)
    assert check_drawings(out, sim, figures) == summary["images"] == sum(n or 0 for n in figures.values())
    assert summary["drawings"] == {"downloaded": summary["images"]}
    assert not leftovers(out)
    check_status_and_report(out, figures)

    again = run([source], out, sim, drawings="all")
    assert again["api_calls"] == 0 and sim.counters.api_requests == calls and again["exit_code"] == 0

    new = [n for n in numbers(60) if n not in values][:10]
    grown = write_csv(tmp_path / "grown.csv", values + new)
    third = run([grown], out, sim, drawings="all")
    assert third["exit_code"] == 0 and third["api_calls"] == expected_calls(figures_of(sim, new))[0]
    assert max(sim.counters.asks.values()) == 1
    check_drawings(out, sim, figures_of(sim, values + new))


def test_the_budget_caps_charged_calls_and_the_next_run_finishes(tmp_path, threaded_simulator):
    """--max-charged 5: at most 5 charged calls, exit 4; the next run continues and no patent is asked twice
    except the one whose later page the budget could not pay."""
    sim = threaded_simulator
    values = numbers(30)
    source = write_csv(tmp_path / "in.csv", values)
    out = tmp_path / "out"

    capped = run([source], out, sim, drawings="all", max_charged=5)

    assert capped["exit_code"] == 4 and capped["stop_reason"] == "budget"
    assert capped["charged"] == sim.counters.charged <= 5
    done = run([source], out, sim, drawings="all")
    assert done["exit_code"] == 0
    check_drawings(out, sim, figures_of(sim, values))
    asked_twice = [k for k, n in sim.counters.asks.items() if n > 1]
    assert len(asked_twice) <= 1, asked_twice


@pytest.mark.slow
def test_one_job_holds_one_kind_of_drawings(tmp_path, threaded_simulator):
    """Asking the other kind of an existing job (option or environment) is exit 2 with one line."""
    sim = threaded_simulator
    source = write_csv(tmp_path / "in.csv", numbers(5))
    out = tmp_path / "out"
    first = run([source], out, sim, drawings="all")
    assert first["exit_code"] == 0
    asked = sim.counters.api_requests
    base = ["run", str(source), "--out", str(out), "--api-base", str(sim.base_url), "--token", "demo-token",
            "--api-key", "demo-key", "--no-progress"]
    refused = run_cli(*base, "--drawings", "abstract")
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1 and "--drawings all job" in lines[0], refused.stderr
    import os

    by_env = run_cli(*base, env={**os.environ, "PATENT_IMAGES_DRAWINGS": "abstract"})
    assert by_env.returncode == 2 and "--drawings abstract" in by_env.stderr
    assert run_cli(*base).returncode == 2  # the default is abstract
    assert sim.counters.api_requests == asked
    abstract_out = tmp_path / "abstract"
    assert run([source], abstract_out, sim)["exit_code"] == 0
    assert run_cli(*base[:3], str(abstract_out), *base[4:], "--drawings", "all").returncode == 2
    assert Counter(r["status"] for r in manifest(abstract_out))  # the abstract job's manifest stands


def test_dry_run_says_calls_and_hours_and_calls_nothing(tmp_path, threaded_simulator, capsys):
    """A call per patent at least, hours at --rate; no request; the other kind of an existing job is exit 2."""
    from downloader.cli import app as cli
    from downloader.dryrun import Plan, describe_plan

    sim = threaded_simulator
    source = write_csv(tmp_path / "in.csv", numbers(40))
    out = tmp_path / "out"
    args = ["run", str(source), "--out", str(out), "--api-base", str(sim.base_url), "--token", "demo-token",
            "--api-key", "demo-key", "--no-progress", "--rate", "5", "--drawings", "all", "--dry-run"]
    assert cli.main([*args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["api_calls"] == plan["to_ask"] == 40 and plan["seconds_at_rate"] == 8.0
    assert cli.main(args) == 0
    assert "at least 40 calls" in capsys.readouterr().out
    assert sim.counters.api_requests == 0 and sim.counters.image_requests == 0
    big = Plan(**{**plan, "api_calls": 100_000, "seconds_at_rate": 100_000 / 5})
    assert "at least 5.6 h at --rate" in describe_plan(big)
    run([source], out, sim, drawings="all", max_charged=10)
    assert cli.main([*args, "--json"]) == 0
    left = json.loads(capsys.readouterr().out)
    assert 0 < left["api_calls"] < 40 and left["settled"] >= 10 - 1
    assert cli.main([*args[:-3], "--dry-run"]) == 2  # --drawings abstract (the default) on an all job


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun(tmp_path, sim_config, threaded_simulator):
    """Killed twice while drawings download and pages are asked: a patent stored whole before a kill is never
    asked again, none is asked more than once more, and the rerun ends with every drawing verified."""
    import signal

    from .support import SETTLED_STATUSES, Cli, cli_args, image_files, state_rows

    sim = threaded_simulator
    values = with_many(sim, numbers(120), numbers(3000, seed=9))
    source = write_csv(tmp_path / "in.csv", values)
    out = tmp_path / "out"
    sim_config.cdn_latency = 0.01
    sim_config.api_latency = 0.02
    args = cli_args(sim, [source], out, "--drawings", "all", "--rate", "60", "--download-concurrency", "8")
    snapshots = []
    for i, files in enumerate((40, 400)):
        with Cli(args, tmp_path / f"kill{i}.log") as cli:
            assert cli.wait_for(lambda files=files: len(image_files(out)) >= files), cli.stderr()
            cli.proc.send_signal(signal.SIGKILL)
            cli.proc.wait(timeout=30)
        snapshots.append({key: sim.counters.asks[key] for _, key, status in state_rows(out)
                          if status in SETTLED_STATUSES})
    sim_config.cdn_latency = sim_config.api_latency = 0.0
    final = run_cli(*args, timeout=120)

    assert final.returncode == 0, final.stderr
    assert all(snapshots) and len(snapshots[1]) > len(snapshots[0])
    for snapshot in snapshots:
        assert {k: sim.counters.asks[k] for k in snapshot} == snapshot  # stored whole: never asked again
    assert max(sim.counters.asks.values()) <= 2 and len(sim.counters.asks) == len(values)
    check_drawings(out, sim, figures_of(sim, values))
    assert not leftovers(out)


@pytest.mark.slow
def test_two_workers_on_postgres_into_s3_share_the_drawings(
        tmp_path, threaded_simulator, s3_bucket, pg_url, fleet_env, moto_server):  # noqa: F811
    """Two `run --drawings all` processes over one PostgreSQL job into moto S3: each patent asked once (a page
    per 100 drawings), every drawing stored once under images/…/<PN>/<image id>.<ext> with the CDN's bytes."""
    import hashlib

    from .test_fleet import PREFIX, etags, manifest_rows, start

    sim = threaded_simulator
    values = with_many(sim, numbers(150), numbers(3000, seed=9))
    source = write_csv(tmp_path / "in.csv", values)
    fleet = start(sim, source, s3_bucket.name, pg_url, fleet_env, moto_server.endpoint, "--rate", "40",
                  "--drawings", "all", count=2)
    codes = fleet.wait()

    assert codes == [0, 0], fleet.errors
    figures = figures_of(sim, values)
    calls, charged = expected_calls(figures)
    assert sim.counters.api_requests == calls and sim.counters.charged == charged
    assert max(sim.counters.asks.values()) == 1 and len(sim.counters.asks) == len(values)
    rows = [r for r in manifest_rows(s3_bucket) if r["status"] == "downloaded"]
    assert len(rows) == sum(n or 0 for n in figures.values())
    stored = etags(s3_bucket)
    for row in rows:
        assert _FILE.match(row["local_file"]), row
        expected = sim.expected_image(row["pn"], f"{int(row['figure']):04d}")
        assert row["sha256"] == hashlib.sha256(expected).hexdigest()
        assert stored[f"{PREFIX}/{row['local_file']}"] == hashlib.md5(expected).hexdigest()
    images = [k for k in stored if k.startswith(f"{PREFIX}/images/")]
    assert len(images) == len(rows)


async def test_a_store_from_before_migrates_and_holds_abstract_drawings(tmp_path):
    """A version-2 state file (before --drawings) opens at the current schema with its rows intact, holds
    abstract drawings, and says so when asked for all; a fresh one records the kind first asked."""
    import sqlite3

    from downloader.state.sqlite import SqliteStore
    from downloader.state.sqlite_schema import _BASE, MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "v2.sqlite"
    conn = sqlite3.connect(path)
    for statement in [*_BASE.split(";"), *MIGRATIONS[2]]:
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    conn.execute("INSERT INTO patents (kind, key, status, seen_run) VALUES ('patent_number', 'US1A', 'downloaded', 1)")
    conn.commit()
    conn.close()
    old = await SqliteStore.open(path)
    try:
        assert await old.counts() == {"downloaded": 1}
        assert await old.drawings_kind(None) is None and await old.drawings_kind("all") == "abstract"
        assert await old.drawing_counts() == {}
    finally:
        await old.close()
    version = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert int(version) == SCHEMA_VERSION
    fresh = await SqliteStore.open(tmp_path / "new.sqlite")
    try:
        assert await fresh.drawings_kind("all") == "all" and await fresh.drawings_kind("abstract") == "all"
    finally:
        await fresh.close()


async def test_a_patent_follows_its_drawings_in_both_stores(backend) -> None:  # noqa: F811
    """Through the same claims and guarded transitions in SQLite and PostgreSQL: a listed patent's drawings
    are held by its asker, taken over as downloads (no call) once its lease lapses, and the patent settles
    with them: downloaded, back to pending (asked again) when a URL expired, failed when a drawing failed."""
    import asyncio
    import time

    from downloader.core.model import Downloaded, Failed, Kind, Listed, PatentKey, Resolved, UrlExpired

    def drawings(value: str, count: int) -> list[Listed | Resolved]:
        key = PatentKey(Kind.NUMBER, value)
        return [Listed(key, value, f"id-{value}", count), *(
            Resolved(figure_key(value, n), value, f"id-{value}", f"HDA{n}", f"http://cdn/{value}/{n}.png",
                     4e9, None, "drawings") for n in range(1, count + 1))]

    def done(value: str, n: int) -> Downloaded:
        return Downloaded(figure_key(value, n), f"images/{value}/{n}.png", 10, "ab")

    a, b = await backend.open(), await backend.open()
    assert await a.drawings_kind("all") == "all" and await b.drawings_kind("abstract") == "all"
    run = await a.start_run({})
    await a.ingest([PatentKey(Kind.NUMBER, v) for v in ("P1", "P2", "P3")], run)
    claim = await a.claim(run, "A", limit=3, usable_after=time.time(), lease=0.5)
    assert claim.to_ask is not None and claim.to_ask.keys == ("P1", "P2", "P3")
    await a.apply([*drawings("P1", 2), *drawings("P2", 2), *drawings("P3", 1), done("P1", 1)])
    assert (await b.claim(run, "B", limit=1, usable_after=time.time(), lease=30)).to_download == ()
    await asyncio.sleep(0.7)  # A died
    took = await b.claim(run, "B", limit=1, usable_after=time.time(), lease=30)
    assert sorted((j.key.value, j.key.figure, j.pn, j.url) for j in took.to_download) == [
        ("P1", 2, "P1", "http://cdn/P1/2.png"), ("P2", 1, "P2", "http://cdn/P2/1.png"),
        ("P2", 2, "P2", "http://cdn/P2/2.png"), ("P3", 1, "P3", "http://cdn/P3/1.png")]
    await b.apply([done("P1", 2), done("P2", 1), UrlExpired(figure_key("P2", 2), "expired"),
                   Failed(figure_key("P3", 1), "NotAnImageError: html")])
    assert await b.counts(run) == {"downloaded": 1, "pending": 1, "failed": 1}
    assert await b.drawing_counts(run) == {"downloaded": 3, "pending": 1, "failed": 1}
    assert await b.figure_counts(run) == {2: 2, 1: 1}
    again = await b.claim(run, "B", limit=1, usable_after=time.time(), lease=30)
    assert again.to_ask is not None and again.to_ask.keys == ("P2",)
    await b.apply(drawings("P2", 2))  # fresh URLs; the stored figure 1 stays stored
    for _ in range(4):  # its URLs keep expiring: the fifth time the patent waits, pending, never failed
        await b.apply([UrlExpired(figure_key("P2", 2), "expired", time.time() + 300)])
        assert await b.counts(run) == {"downloaded": 1, "pending": 1, "failed": 1}
        deferred = await b.claim(run, "B", limit=1, usable_after=time.time(), lease=30)
        if deferred.to_ask is not None:
            await b.apply(drawings("P2", 2))
    assert deferred.empty and deferred.next_retry is not None and deferred.next_retry > time.time() + 200
    await b.apply(drawings("P2", 2))  # (a later run) fresh URLs again
    await b.apply([done("P2", 2)])
    rows = [(r.key, r.figure, r.status.value, r.local_file) async for r in b.rows(run)]
    assert rows == [("P1", 1, "downloaded", "images/P1/1.png"), ("P1", 2, "downloaded", "images/P1/2.png"),
                    ("P2", 1, "downloaded", "images/P2/1.png"), ("P2", 2, "downloaded", "images/P2/2.png"),
                    ("P3", 1, "failed", None)]
    assert await b.counts(run) == {"downloaded": 2, "failed": 1}
    assert (await b.claim(run, "B", limit=5, usable_after=time.time(), lease=30)).empty


def test_api_requests_in_flight_keep_the_gate_busy_with_one_call_per_patent():
    """--drawings all asks one patent a call: at least half a second of calls at --rate in flight."""
    from downloader.core.settings import Settings

    assert Settings(rate=20, drawings="all").api_in_flight == 10
    assert Settings(rate=5, drawings="all").api_in_flight == Settings(rate=5).api_in_flight == 4
    assert Settings(rate=20, api_concurrency=16, drawings="all").api_in_flight == 16
    assert Settings(rate=1000, drawings="all").api_in_flight == 64
    assert Settings(rate=20).api_in_flight == 4
