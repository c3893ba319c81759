"""A URL whose host refuses connections: asked again when the host moved, an outage when it is down.

The newcomer's case: Ctrl-C during `demo`, then the same command. The simulator of the first run
is gone, and the URLs it signed point at its dead port. Wanted: the rerun continues, each such URL
asked again (charged once more, counted in `recharged`), never a stall until the URLs expire.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from downloader.core.errors import FatalError
from downloader.core.moved import MovedHosts
from downloader.simulator import SimulatorConfig, simulator_in_thread

from .support import Cli, manifest, numbers, run, state_rows, write_csv

A, B = "http://127.0.0.1:1111", "http://127.0.0.1:2222"


def test_a_host_that_moved_is_learned_from_one_probe():
    """The first refusal is a probe (ask); the host's other refusals wait for it; a fresh URL elsewhere:
    every refusal there is asked at once."""
    hosts: MovedHosts[str] = MovedHosts(patience=10.0)
    assert hosts.refused(A, "k1", now=0.0) == "ask" and hosts.probing
    assert [hosts.refused(A, k, now=1.0) for k in ("k2", "k3")] == ["wait", "wait"]
    hosts.arrived(B, "other")  # another key's download: says nothing about A
    assert hosts.probing
    hosts.arrived(B, "k1")  # the probe came back with a URL on another host
    assert hosts.moved == {A} and not hosts.probing
    assert [hosts.refused(A, k, now=2.0) for k in ("k2", "k3")] == ["ask", "ask"]


def test_a_host_that_is_down_costs_one_probe_then_is_an_outage():
    """The probe's fresh URL is on the same host: it is down; its refusals are transport failures."""
    hosts: MovedHosts[str] = MovedHosts(patience=10.0)
    assert hosts.refused(A, "k1", now=0.0) == "ask"
    hosts.arrived(A, "k1")
    assert hosts.down == {A} and not hosts.moved
    assert [hosts.refused(A, k, now=1.0) for k in ("k1", "k2")] == ["down", "down"]


def test_a_probe_without_an_answer_is_followed_by_another_after_the_patience():
    """A probe whose patent came back without a URL (no image) does not hold the host's keys for ever."""
    hosts: MovedHosts[str] = MovedHosts(patience=10.0)
    assert hosts.refused(A, "k1", now=0.0) == "ask"
    assert hosts.refused(A, "k2", now=9.9) == "wait"
    assert hosts.refused(A, "k2", now=10.0) == "ask"
    hosts.arrived(B, "k2")
    assert hosts.moved == {A} and not hosts.probing  # the first probe's entry went with it


def _ended(source: Path, out: Path, sim: object, **overrides: object) -> dict[str, object]:
    """A whole job's summary, whether it finished or stopped on a fatal condition (summary.json either way)."""
    import json

    try:
        run([source], out, sim, **overrides)  # type: ignore[arg-type]
    except FatalError:
        pass
    return dict(json.loads((out / "summary.json").read_text(encoding="utf-8")))


def test_a_host_that_served_this_run_and_then_refuses_is_down_without_a_probe():
    """A CDN restarting mid-run is an outage: nothing is asked again (no result paid twice)."""
    hosts: MovedHosts[str] = MovedHosts(patience=10.0)
    hosts.served(A)
    assert hosts.refused(A, "k1", now=0.0) == "down" and not hosts.probing


def _resolved_at_a_host_that_goes_away(tmp_path: Path, n: int) -> tuple[Path, Path, int]:
    """A job whose downloads never happened (its CDN answered 502 until the run stopped as an outage),
    then its server gone: (input, DIR, keys left with a paid URL on the dead host)."""
    source, out = write_csv(tmp_path / "in.csv", numbers(n)), tmp_path / "out"
    with simulator_in_thread(SimulatorConfig(seed=0, cdn_down="502")) as first:
        summary = _ended(source, out, first, outage_seconds=1.0)
    assert summary["exit_code"] == 3 and "failed" not in summary["by_status"], summary  # type: ignore[operator]
    paid = sum(status == "resolved" for _, _, status in state_rows(out))
    assert paid > 0
    return source, out, paid


@pytest.mark.slow
def test_urls_of_a_host_that_moved_are_asked_again_at_once(tmp_path):
    """The rerun on a server at another port: each paid URL on the dead host is asked again once
    (recharged), every patent settles, exit 0, within seconds (not after the URLs' 3 hours)."""
    source, out, paid = _resolved_at_a_host_that_goes_away(tmp_path, 60)
    with simulator_in_thread(SimulatorConfig(seed=0)) as second:
        started = time.monotonic()
        summary = run([source], out, second)
        seconds = time.monotonic() - started
        asked_twice = [k for k, n in second.counters.asks.items() if n > 1]
    figures = f"{paid} paid URLs on the dead host; {seconds:.1f} s; {summary}"
    print(f"\n[host moved] {figures}")
    assert summary["exit_code"] == 0 and summary["recharged"] == paid and seconds < 20, figures
    assert not asked_twice and summary["charged"] == second.counters.charged, figures
    rows = manifest(out)
    assert {r["status"] for r in rows} <= {"downloaded", "no_image", "not_found"}, figures
    assert all(r["path"].startswith(str(second.base_url)) for r in rows if r["status"] == "downloaded")


@pytest.mark.slow
async def test_a_cdn_that_served_and_then_refuses_is_an_outage_and_nothing_is_paid_twice(tmp_path):
    """The image host stops listening mid-run while the API still names it: the run stops as an outage
    (exit 3), no key is asked again (it served this run: down, not moved), no patent failed."""
    from aiohttp import web

    from downloader import Job
    from downloader.simulator import Universe, running_simulator

    from .support import settings_for

    universe, served = Universe(0), [0]
    stopped = asyncio.Event()

    async def image(request: web.Request) -> web.Response:
        pn, num = request.match_info["name"].rsplit(".", 1)[0].rsplit("_", 1)
        served[0] += 1
        if served[0] == 20:
            stopped.set()
        return web.Response(body=universe.image_bytes(pn, num), content_type="image/png")

    app = web.Application()
    app.router.add_get("/img/{name}", image)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    cdn = f"http://127.0.0.1:{runner.addresses[0][1]}/img"

    async def stop_cdn() -> None:
        await stopped.wait()
        await runner.cleanup()  # the port closes: every new connection is refused

    source, out = write_csv(tmp_path / "in.csv", numbers(400)), tmp_path / "out"
    async with running_simulator(SimulatorConfig(seed=0, cdn_base=cdn)) as sim:
        stopper = asyncio.create_task(stop_cdn())
        settings = settings_for(sim, outage_seconds=2.0, download_concurrency=2, retries=2)
        try:
            summary = (await Job(out, settings).run([source])).to_dict()
        except FatalError:
            import json

            summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        await stopper
    figures = f"{served[0]} served; {summary}; API asks repeated {sum(n > 1 for n in sim.counters.asks.values())}"
    print(f"\n[CDN gone mid-run] {figures}")
    assert summary["exit_code"] == 3 and "cannot reach the CDN" in str(summary["fatal"]), figures
    assert summary["recharged"] == 0 and summary["expired_urls"] == 0, figures
    assert max(sim.counters.asks.values()) == 1 and "failed" not in summary["by_status"], figures


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_cdn_host_that_refuses_while_the_api_still_points_there_is_an_outage_not_a_recharge_storm(tmp_path):
    """Nothing listens at the CDN host the API names: one probe is asked again, no more; exit 3 as an
    outage, no patent failed."""
    source, out = write_csv(tmp_path / "in.csv", numbers(60)), tmp_path / "out"
    config = SimulatorConfig(seed=0, cdn_base=f"http://127.0.0.1:{_closed_port()}/img")
    with simulator_in_thread(config) as sim:
        summary = _ended(source, out, sim, outage_seconds=2.0)
    figures = f"{summary}; API charged {sim.counters.charged}"
    print(f"\n[CDN down] {figures}")
    assert summary["exit_code"] == 3 and "cannot reach the CDN" in str(summary["fatal"]), figures
    assert summary["recharged"] in (0, 1) and "failed" not in summary["by_status"], figures  # type: ignore[operator]


def _demo(out: Path, log: Path, *extra: str) -> Cli:
    return Cli(["demo", "--out", str(out), "--patents", "3000", "--no-progress", *extra], log,
               start_new_session=True)


def _images(out: Path) -> int:
    root = out / "images"
    return sum(1 for _ in root.rglob("*.png")) if root.exists() else 0


@pytest.mark.slow
@pytest.mark.parametrize("port", ["stable", "taken"])
def test_a_demo_stopped_with_ctrl_c_continues_when_run_again_without_a_traceback(tmp_path, port):
    """Ctrl-C mid-demo: exit 130 and no traceback (there were 13); the same command then finishes
    (exit 0). On its stable port nothing is paid twice; with that port taken, the dead URLs are asked again."""
    from downloader.cli.demo import stable_port

    out = tmp_path / "demo"
    with _demo(out, tmp_path / "first.err") as first:
        first.when(lambda: _images(out) >= 200)
        first.proc.send_signal(signal.SIGINT)
        code, err = first.finish()
    assert code == 130 and "Traceback" not in err, err
    with socket.socket() as busy:
        if port == "taken":  # bound, not listening: the demo cannot have it, and connections there are refused
            busy.bind(("127.0.0.1", stable_port(out)))
        again = subprocess.run(_demo_argv(out), capture_output=True, text=True, timeout=300,
                               cwd=Path(__file__).resolve().parents[1], check=False)
    print(f"\n[demo rerun, port {port}] {again.stderr.strip().splitlines()[-2]}")
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    recharged = _summary_value(out, "recharged")
    assert (recharged == 0) if port == "stable" else (recharged > 0), again.stderr


def _demo_argv(out: Path) -> list[str]:
    from .support import cli_command

    return cli_command("demo", "--out", str(out), "--patents", "3000", "--no-progress")


def _summary_value(out: Path, name: str) -> int:
    import json

    return int(json.loads((out / "summary.json").read_text(encoding="utf-8"))[name])


@pytest.mark.slow
def test_simulate_stays_quiet_when_a_client_stops_mid_download(tmp_path):
    """`simulate` with a run against it stopped by Ctrl-C: neither prints a traceback (simulate printed 8)."""
    port = _closed_port()
    sim = subprocess.Popen(_simulate_argv(port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=Path(__file__).resolve().parents[1])
    try:
        assert sim.stdout is not None and "PatSnap simulator on" in sim.stdout.readline()
        source, out = write_csv(tmp_path / "in.csv", numbers(3000)), tmp_path / "out"
        args = ["run", str(source), "--out", str(out), "--api-base", f"http://127.0.0.1:{port}", "--token",
                "demo-token", "--api-key", "demo-key", "--rate", "20", "--no-progress"]
        with Cli(args, tmp_path / "run.err") as client:
            client.when(lambda: _images(out) >= 200)
            client.proc.send_signal(signal.SIGINT)
            code, err = client.finish()
        assert code == 130 and "Traceback" not in err, err
    finally:
        sim.send_signal(signal.SIGINT)
        _, sim_err = sim.communicate(timeout=30)
    assert sim.returncode == 0 and "Traceback" not in sim_err, sim_err


def _simulate_argv(port: int) -> list[str]:
    from .support import cli_command

    return cli_command("simulate", "--port", str(port))
