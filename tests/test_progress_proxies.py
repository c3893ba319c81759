"""Progress display choices and lines; proxy resolution from the environment."""

from __future__ import annotations

import io

import pytest
from yarl import URL

from downloader.cli.progress import Bars, LogLines, make_progress
from downloader.core.events import BatchDone, ImageDone, Notice, Planned, Recording, fan_out
from downloader.net import proxies


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_kind_follows_the_terminal():
    assert isinstance(make_progress(None, FakeTTY()), Bars)
    assert isinstance(make_progress(None, io.StringIO()), LogLines)
    assert make_progress(False, FakeTTY()) is None


def test_log_lines_report_counts_and_notices():
    out = io.StringIO()
    lines = LogLines(out, interval=0.0)
    for event in (Planned(200, 0, 1), BatchDone(100, 80, 95), ImageDone("downloaded", 2_000_000),
                  Notice("throttled", "throttled: rate 2.5/s")):
        lines(event)
    text = out.getvalue()
    assert "throttled: rate 2.5/s" in text
    assert "100/200 patents asked, 95 charged, 1 images (2.0 MB" in text


def test_bars_draw_on_the_given_stream():
    out = FakeTTY()
    bars = Bars(out)
    bars(Planned(10, 2, 1))
    bars(BatchDone(10, 8, 10))
    bars(ImageDone("downloaded", 1000))
    bars.close()
    assert "patents" in out.getvalue() and "images" in out.getvalue()


def test_fan_out_reaches_every_sink():
    a, b = Recording(), Recording()
    fan_out(a, b)(Notice("x", "y"))
    assert a.events == b.events == [Notice("x", "y")]


@pytest.fixture
def clean_proxy_cache():
    proxies._proxy.cache_clear()
    yield
    proxies._proxy.cache_clear()


def test_proxy_from_environment_and_no_proxy(monkeypatch, clean_proxy_cache):
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
    monkeypatch.setenv("NO_PROXY", "cdn.internal")
    assert proxies.proxy_for(URL("https://connect.patsnap.com/x")) == "http://proxy.local:3128"
    assert proxies.proxy_for(URL("https://cdn.internal/a.png")) is None
    assert proxies.proxy_for(URL("http://plain.example/a.png")) is None
