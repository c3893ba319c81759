"""report.html: written from a real job folder, read back in headless Chromium; quick at 100,000 rows."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from downloader.cli import app as cli
from downloader.job import report_job
from downloader.report.html import SHEET_LIMIT, SHEET_PAGE
from downloader.simulator import Universe
from downloader.state.sqlite import STATE_FILE, connect

from .support import manifest, numbers, run, write_csv

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium); the browser tests need it")
SCREENSHOT_COPY = Path("/tmp/patent-images-report.png")
HOSTILE = '</script><img src=x onerror="alert(1)">&amp;<!--'


class Page(HTMLParser):
    """The parts of a DOM the tests look at: every tag with its attributes, ids' text, captions."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text_of: dict[str, str] = {}
        self.captions: list[str] = []
        self._open: list[tuple[str, str | None]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in ("img", "input", "meta", "br", "circle", "line", "rect", "polyline"):
            self._open.append((tag, dict(attrs).get("id")))
            self.text_of.setdefault(dict(attrs).get("id") or "", "")
        if tag == "figcaption":
            self.captions.append("")

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        for _, ident in self._open:
            if ident:
                self.text_of[ident] += data
        if any(tag == "figcaption" for tag, _ in self._open):
            self.captions[-1] += data

    def find(self, tag: str) -> list[dict[str, str | None]]:
        """Attributes of every `tag` element."""
        return [attrs for name, attrs in self.tags if name == tag]

    def count(self, key: str) -> int:
        """The count shown in `#count-{key}`: its exact `data-count`, checked against the text shown."""
        (value,) = [int(a["data-count"] or "") for a in self.find("span") if a.get("id") == f"count-{key}"]
        assert self.text_of[f"count-{key}"] == f"{value:,}"
        return value


def chromium(tmp_path: Path, *args: str) -> str:
    """Run headless Chromium with no network chatter; its stdout. Killed (with its helpers) after 60 s."""
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "HOME": str(tmp_path)})
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.communicate()
        pytest.fail("chromium did not finish within 60 s")
    _kill_group(proc.pid)  # helpers that outlive the browser process, if any
    assert proc.returncode == 0, err[-2000:]
    return out


def _kill_group(pid: int) -> None:
    """Chromium ran in its own session, so its process group id is its pid: this ends its helpers too."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def job_folder(tmp_path, sim_config, threaded_simulator) -> Path:
    """A job folder after two runs (a capped one, then the rest) with three drawings missing on the CDN."""
    values = numbers(280)
    records = [Universe(sim_config.seed).lookup_number(v) for v in values]
    sim_config.missing_images = set([r.pn for r in records if r is not None and r.num][-3:])
    source, out = write_csv(tmp_path / "in.csv", values), tmp_path / "out"
    assert run([source], out, threaded_simulator, max_charged=100)["exit_code"] == 4
    assert run([source], out, threaded_simulator)["exit_code"] == 1
    return out


@pytest.mark.slow  # a browser start: seconds
@needs_chromium
def test_report_in_chromium_shows_counts_runs_failures_and_a_paged_filterable_sheet(tmp_path, job_folder, capsys):
    """The DOM after scripts ran: counts equal the manifest's, 200 lazy thumbnails with captions, filter box."""
    site = tmp_path / "site"
    assert cli.main(["report", "--out", str(job_folder), "--to", str(site)]) == 0
    report = Path(capsys.readouterr().out.strip())
    assert report == site / "report.html"
    raw = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//|<link|@import|url\(""", raw)  # nothing from outside

    shot = tmp_path / "report.png"
    page = Page(chromium(tmp_path, "--dump-dom", f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri()))
    rows = manifest(job_folder)
    counts = Counter(r["status"] for r in rows)
    assert counts["failed"] == 3 and counts["downloaded"] > SHEET_PAGE
    for status, n in counts.items():
        assert page.count(status) == n, status
    assert page.count("total") == len(rows)

    grid = [a for a in page.find("img") if (a.get("src") or "").startswith("../out/images/")]
    assert len(grid) == SHEET_PAGE and all(a.get("loading") == "lazy" for a in grid)
    assert all((site / unquote(a["src"] or "")).is_file() for a in grid)
    downloaded = {(r["pn"], r["num"]) for r in rows if r["status"] == "downloaded"}
    assert len(page.captions) == SHEET_PAGE
    assert all((c.split("#")[0], c.split("#")[1]) in downloaded for c in page.captions)
    assert [a for a in page.find("input") if a.get("id") == "filter"]
    assert page.text_of["page-info"].startswith(f"1–{SHEET_PAGE} of {counts['downloaded']}")
    assert "BadImageError" in page.text_of["failures"] and "3 patents" in page.text_of["failures"]
    assert "What to do: The image CDN answered" in page.text_of["failures"]
    bars = [a for a in page.find("rect") if (a.get("class") or "").startswith("bar ")]
    assert [a["class"] for a in bars] == ["bar charged", "bar images"] * 2 and "budget" in page.text_of["runs"]
    assert page.text_of["contact-sheet"].startswith(f"Most recent drawings ({counts['downloaded']:,} downloaded)")
    for status, label in (("downloaded", "Downloaded"), ("no_image", "No image"), ("not_found", "Not found"),
                          ("failed", "Failed"), ("pending", "Pending")):  # each count with its label and code
        assert re.search(rf'<div class="label">{label}</div><div class="value"><span id="count-{status}".*?'
                         rf"status <code>{status}</code>", raw)
    links = {a.get("href") for a in page.find("a") if (a.get("href") or "").startswith("../out/manifest")}
    assert links == {"../out/manifest.csv", "../out/manifest.jsonl"}
    assert all((site / unquote(link)).is_file() for link in links)
    titles = [a.get("title") for a in page.find("a") if a.get("title")]  # the tooltip of each thumbnail
    assert len(titles) == SHEET_PAGE and all(t and re.fullmatch(r"\S+ #\d{4}", t) for t in titles)
    assert "text-overflow:ellipsis" not in raw  # full publication numbers: captions wrap, never cut

    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    shutil.copyfile(shot, SCREENSHOT_COPY)
    print(f"screenshot: {SCREENSHOT_COPY}")


def test_report_counts_rejected_and_duplicate_rows(tmp_path, threaded_simulator):
    """The last run's rejected and duplicate input rows get a card each and a column in the runs table."""
    values = numbers(20)
    source = write_csv(tmp_path / "in.csv", [*values, values[0], values[1], "%%%", "not a number!"])
    out = tmp_path / "out"
    summary = run([source], out, threaded_simulator)
    assert (summary["rejected"], summary["duplicates"]) == (2, 2)
    page = Page(Path(report_job(str(out))).read_text(encoding="utf-8"))
    assert page.count("rejected") == 2 and page.count("duplicates") == 2
    assert page.count("total") == 20  # rows that never became patents are not among the patents
    header = page.text_of["runs"].split("stop", 1)[0]
    assert "rejected" in header and "duplicates" in header


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory) -> Path:
    """A state store with 100,000 downloaded rows, 1,000 failures in three types, hostile strings, 40 runs."""
    folder = tmp_path_factory.mktemp("big")
    conn = connect(folder / STATE_FILE)
    for night in range(40):
        summary = {"charged": 2500 + night * 10, "images": 2400 + night, "api_calls": 25,
                   "seconds": 60.0, "bytes": 10**8, "stop_reason": None}
        conn.execute("INSERT INTO runs (started, ended, exit_code, summary) VALUES (?, ?, 0, ?)",
                     (time.time() - 86400 * (40 - night), time.time(), json.dumps(summary)))
    start = time.time() - 86400
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO patents (kind, key, status, pn, num, local_file, bytes, sha256, updated_at, seen_run) "
        "VALUES ('patent_number', ?, 'downloaded', ?, '0001', ?, 1000, 'x', ?, 40)",
        ((f"CN{n:09d}A", HOSTILE if n == 99_999 else f"CN{n:09d}A", f"images/CN/{n % 997:03d}/CN{n:09d}A_0001.png",
          start + n) for n in range(100_000)))
    errors = ["BadImageError: HTTP 404 from the CDN"] * 700 + ["TransientApiError: HTTP 500"] * 250 + [
        f"UrlExpiredError: {HOSTILE}"] * 50
    conn.executemany("INSERT INTO patents (kind, key, status, error, updated_at, seen_run) "
                     "VALUES ('patent_number', ?, 'failed', ?, ?, 40)",
                     ((f"US{n:08d}B2" if n else HOSTILE, e, start) for n, e in enumerate(errors)))
    conn.execute("COMMIT")
    conn.close()
    return folder


def test_report_over_100k_downloads_is_quick_small_capped_and_escaped(big_folder):
    """Under 3 s and 2 MB; 5,000 sheet rows newest first; 200 keys per failure group with advice; data escaped."""
    started = time.perf_counter()
    report = Path(report_job(str(big_folder)))
    assert time.perf_counter() - started < 3.0
    raw = report.read_text(encoding="utf-8")
    assert len(raw.encode()) < 2_000_000
    assert HOSTILE not in raw and "<img src=x" not in raw and raw.count("</script>") == 2
    data = json.loads(re.search(r'<script type="application/json" id="sheet-data">(.*?)</script>', raw, re.S)[1])
    assert len(data["rows"]) == SHEET_LIMIT and data["base"] == ""
    assert data["rows"][0] == [HOSTILE, "0001", f"images/CN/{99_999 % 997:03d}/CN000099999A_0001.png"]
    assert data["rows"][1][0] == "CN000099998A" and data["rows"][-1][0] == "CN000095000A"
    page = Page(raw)
    assert (page.count("downloaded"), page.count("failed"), page.count("total")) == (100_000, 1000, 101_000)
    groups = re.findall(r"<summary>(\w+)<span class=\"n\">(\d+) patents", raw)
    assert groups == [("BadImageError", "700"), ("TransientApiError", "250"), ("UrlExpiredError", "50")]
    assert raw.count('<li class="more">') == 2 and "+500 more" in raw and "+50 more" in raw
    assert raw.count("<li>") == 200 + 200 + 50
    bars = [a for a in page.find("rect") if (a.get("class") or "").startswith("bar ")]
    assert len(bars) == 80  # 40 runs, a pair of bars each
    assert raw.count('<span class="advice">') == 3 and "What to do:</b> Temporary API errors" in raw


@pytest.mark.slow  # a browser start: seconds
@needs_chromium
def test_big_report_opens_in_chromium_with_hostile_data_inert(tmp_path, big_folder):
    """Chromium renders the 100k report: counts, the first page of the sheet, no injected element."""
    page = Page(chromium(tmp_path, "--dump-dom", Path(report_job(str(big_folder), tmp_path / "site")).as_uri()))
    assert page.count("downloaded") == 100_000
    grid = [a for a in page.find("img") if (a.get("src") or "").startswith("../")]
    assert len(grid) == SHEET_PAGE and page.captions[0] == HOSTILE + "#0001"
    assert not [a for a in page.find("img") if a.get("src") == "x"]
    assert page.text_of["page-info"].startswith(f"1–{SHEET_PAGE} of {SHEET_LIMIT:,}")


def test_report_of_a_folder_without_state_is_a_usage_error_and_writes_nothing(tmp_path, capsys):
    """`report --out DIR` on a folder no run used: exit 2 with a clear line, no file created."""
    assert cli.main(["report", "--out", str(tmp_path)]) == 2
    assert "no state store" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
