"""The aiohttp application and the two ways to run it: on this loop, or in a thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from aiohttp import web

from downloader.simulator import api, cdn, fulltext
from downloader.simulator.config import SimulatorConfig
from downloader.simulator.core import SIM_KEY, Simulator


def build_app(sim: Simulator) -> web.Application:
    """The aiohttp application serving `sim` (see the package docstring for routes)."""
    app = web.Application()
    app[SIM_KEY] = sim
    app.router.add_post("/oauth/token", api.token_handler)
    app.router.add_get("/basic-patent-data/abstract-image", api.abstract_image_handler)
    app.router.add_post("/basic-patent-data/fulltext-image", fulltext.fulltext_image_handler)
    app.router.add_get("/basic-patent-data/fulltext-inline-image", fulltext.inline_image_handler)
    app.router.add_get("/cdn/{path:.*}", cdn.image_handler)
    app.router.add_get("/fulltext-image/{path:.*}", cdn.image_handler)
    app.router.add_get("/_sim/counters", _counters)
    app.router.add_get("/_sim/config", _get_config)
    app.router.add_post("/_sim/config", _set_config)
    app.router.add_post("/_sim/reset-counters", _reset_counters)
    return app


async def _counters(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_KEY].counters.as_json())


async def _get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_KEY].config.as_json())


async def _set_config(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise ValueError("expected a JSON object")
        sim.config.update(changes)
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(sim.config.as_json())


async def _reset_counters(request: web.Request) -> web.Response:
    request.app[SIM_KEY].reset_counters()
    return web.json_response({"ok": True})


@asynccontextmanager
async def running_simulator(
    config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[Simulator]:
    """Serve a new Simulator on the running loop; `sim.base_url` is set inside the block."""
    sim = Simulator(config)
    # A short shutdown timeout: "slow" faults may be sleeping in handlers at exit.
    runner = web.AppRunner(
        build_app(sim), access_log=None, shutdown_timeout=0.25, max_line_size=16_384
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=2048)
        await site.start()
        bound_port = runner.addresses[0][1]
        shown_host = f"[{host}]" if ":" in host else host
        sim.base_url = f"http://{shown_host}:{bound_port}"
        yield sim
    finally:
        await runner.cleanup()


@contextmanager
def simulator_in_thread(
    config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0, *, prompt: bool = False
) -> Iterator[Simulator]:
    """Serve a new Simulator on its own loop in a daemon thread; stop and join on exit.

    `sim.config` and `sim.counters` may be read and changed from the calling thread. `prompt`: run
    the thread under the real-time scheduler where allowed (see `serve_promptly`).
    """
    started: concurrent.futures.Future[tuple[Simulator, asyncio.AbstractEventLoop, asyncio.Event]]
    started = concurrent.futures.Future()

    async def host_it() -> None:
        if prompt:
            serve_promptly()
        stop = asyncio.Event()
        try:
            async with running_simulator(config, host, port) as sim:
                started.set_result((sim, asyncio.get_running_loop(), stop))
                await stop.wait()
        except BaseException as exc:
            if started.done():
                raise
            started.set_exception(exc)

    thread = threading.Thread(target=asyncio.run, args=(host_it(),), name="patsnap-simulator", daemon=True)
    thread.start()
    sim, loop, stop = started.result(timeout=30)
    try:
        yield sim
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)


def serve_promptly() -> bool:
    """Put the calling thread under the real-time scheduler (SCHED_FIFO), where allowed.

    The simulator stamps each API request when its thread reads it. A real server does not share
    its CPUs with the client; on a machine with more runnable tasks than cores, a sleeping thread
    can wake tens of milliseconds late, and requests written 1.01 s apart are then counted within
    one second. Woken first, the thread stamps most requests within a millisecond of arrival (on a
    shared 2-core VM one in a few thousand still came 10+ ms late: bench/wire.py). False: not allowed
    (no CAP_SYS_NICE, not Linux): the stamps are as prompt as the machine's load allows.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (AttributeError, OSError):
        return False
    return True
