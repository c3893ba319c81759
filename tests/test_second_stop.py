"""A second Ctrl-C stops at once. The first one stops cleanly: nothing new is claimed, billed answers land,
state and manifest are saved, and that can wait up to --state-patience while PostgreSQL is unreachable. A
second SIGINT (or SIGTERM) exits 130 within seconds, as kill -9 would, with one line saying what was not
saved; the next run continues from what the store holds and finishes."""

from __future__ import annotations

import signal
import time
from urllib.parse import urlsplit

import pytest

from .support import Cli, check_downloads, cli_args, manifest, numbers, run_cli, write_csv
from .tcp_proxy import tcp_proxy
from .test_fencing import settled, until, via
from .test_postgres_job import pg_url  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

PATENTS = 200


def test_a_second_interrupt_exits_at_once_while_the_first_waits_for_the_state_store(tmp_path, threaded_simulator,
                                                                                    pg_url):  # noqa: F811
    sim = threaded_simulator
    sim.config.cdn_latency = 0.05  # still mid-run when the database goes away
    source = write_csv(tmp_path / "in.csv", numbers(PATENTS))
    out = tmp_path / "out"
    target = urlsplit(pg_url)
    common = ("--workers", "1", "--batch-size", "20", "--download-concurrency", "4", "--api-concurrency", "1",
              "--lease", "5")  # the rerun takes the killed run's claims over once their lease lapses
    with tcp_proxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy, \
            Cli(cli_args(sim, [source], out, "--state", via(pg_url, proxy.port), "--state-patience", "120",
                         *common), tmp_path / "a.log") as run:
        until(run, lambda: settled(pg_url) >= 20)
        proxy.cut()  # the state store is gone: the first stop waits for it
        run.proc.send_signal(signal.SIGINT)
        time.sleep(2.0)
        assert run.proc.poll() is None, run.stderr()
        second = time.monotonic()
        run.proc.send_signal(signal.SIGINT)
        code, err = run.finish(timeout=30)
        took = time.monotonic() - second
    print(f"\n[second stop] exit {code} {took:.2f} s after the second SIGINT; {settled(pg_url)} of {PATENTS} "
          f"settled\n{err.strip().splitlines()[-1]}")
    assert code == 130 and took < 10
    assert "stopping at once" in err and "Traceback" not in err
    done = run_cli(*cli_args(sim, [source], out, "--state", pg_url, *common), timeout=120)
    assert done.returncode == 0, done.stderr
    rows = manifest(out)
    assert len(rows) == PATENTS and {r["status"] for r in rows} <= {"downloaded", "no_image", "not_found"}
    assert check_downloads(out, sim) == sum(r["status"] == "downloaded" for r in rows)
    assert max(sim.counters.asks.values()) <= 2  # only what was in flight at the stop is asked again
