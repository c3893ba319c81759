"""Issue 18 §4 end to end on the simulator: URLs that the CDN refuses earlier than they say.

300 patents whose URLs say one hour, one download at a time (50 ms an image): the CDN refuses them
2 s after signing (a revoked signing key), or its clock runs 3598 s ahead of the API's. The run learns
the CDN's clock and the lifetime it honours and paces on them: exit 0, every image right, and few
results paid twice (the simulator's count). A CDN that refuses every URL defers its patents after a
few tries, never fails them. The CLI runs as a subprocess; assertion messages carry the figures.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from downloader.simulator import Simulator

from .support import check_downloads, cli_args, manifest, numbers, run_cli, write_csv

pytestmark = pytest.mark.slow


def _run(sim: Simulator, tmp_path: Any, count: int, *extra: str) -> tuple[Any, dict[str, Any], str]:
    values = numbers(count)
    out = tmp_path / "out"
    started = time.monotonic()
    done = run_cli(*cli_args(sim, [write_csv(tmp_path / "in.csv", values)], out, *extra), timeout=240)
    s = json.loads((out / "summary.json").read_text())
    found = sum(sim.universe.lookup_number(v) is not None for v in values)
    figures = (f"exit {done.returncode} in {time.monotonic() - started:.1f} s; {sim.counters.api_requests} calls, "
               f"charged {sim.counters.charged} for {found} found (recharged {s['recharged']}, simulator "
               f"{sim.counters.charged - found}), CDN 403 expired {sim.counters.image_403_expired}, "
               f"{dict(Counter(r['status'] for r in manifest(out)))}; stderr: {done.stderr[-600:]}")
    print(f"\n[early expiry {' '.join(extra)}] {figures}")
    return done, s, figures


@pytest.mark.parametrize("cdn", [{"url_honoured": 2.0}, {"cdn_clock_skew": 3598.0, "url_style": "sigv4"}],
                         ids=["refused-after-2s", "cdn-clock-ahead"])
def test_urls_that_say_an_hour_but_live_two_seconds_are_learned_and_paced(tmp_path, sim_config, threaded_simulator,
                                                                          cdn):
    """The issue's scenario: exit 0, every image right, recharged ≤ 15% of the patents and equal to what
    the simulator billed twice, nothing failed."""
    sim = threaded_simulator
    sim_config.url_lifetime = 3600
    sim_config.cdn_latency = 0.05
    sim_config.update(cdn)
    done, s, figures = _run(sim, tmp_path, 300, "--download-concurrency", "1")
    found = sum(n for status, n in s["by_status"].items() if status != "not_found")
    assert done.returncode == 0, figures
    assert s["recharged"] == sim.counters.charged - found <= 0.15 * 300, figures
    assert check_downloads(tmp_path / "out", sim) == s["by_status"]["downloaded"] == sim.counters.images_served
    assert "failed" not in s["by_status"], figures


def test_a_cdn_that_refuses_every_url_defers_its_patents_and_never_fails_them(tmp_path, sim_config,
                                                                               threaded_simulator):
    """Every URL refused at once: each patent is asked a few times, then deferred (pending, exit 1),
    never `failed`; the charges stop there."""
    sim = threaded_simulator
    sim_config.url_honoured = 0.001
    done, s, figures = _run(sim, tmp_path, 20, "--rate", "50")
    with_image = s["by_status"].get("pending", 0)
    assert done.returncode == 1 and "failed" not in s["by_status"], figures
    assert with_image > 10 and set(s["by_status"]) <= {"pending", "no_image", "not_found"}, figures
    assert sim.counters.charged <= 20 + 4 * with_image, figures  # 5 URLs at most for each, then it waits
    assert all(r["error"].startswith("UrlExpiredError") for r in manifest(tmp_path / "out") if r["status"] == "pending")
