"""Command-line face of the simulator: argparse options, and `serve` until a signal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time

from downloader.simulator.config import (
    API_FAULT_KINDS,
    APIKEY_REFUSALS,
    DOWN_KINDS,
    IMAGE_FAULT_KINDS,
    THROTTLE_MODES,
    SimulatorConfig,
)
from downloader.simulator.server import running_simulator


def _kinds(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _port(text: str) -> int:
    """A TCP port for argparse: out of 0..65535 is a usage error (exit 2), not an internal one."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range: give 0..65535 (0: any free port)")
    return port


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `simulate` command's options (defaults are SimulatorConfig's)."""
    d = SimulatorConfig()
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    add("--port", type=_port, default=8080, help="port to listen on, 0 for any (default %(default)s)")
    add("--seed", type=int, default=d.seed, help="seed of the patent universe and fault dice")
    add("--api-key", default=d.api_key, help="accepted apikey (the client id is accepted too)")
    add("--token", default=d.static_token, help="static bearer token accepted; '' for none")
    add("--client-id", default=d.client_id, help="OAuth client id")
    add("--client-secret", default=d.client_secret, help="OAuth client secret")
    add("--token-lifetime", type=float, default=d.token_lifetime, help="OAuth token lifetime, seconds")
    add("--url-lifetime", type=float, default=d.url_lifetime, help="signed image URL lifetime, seconds")
    add("--fulltext-url-lifetime", type=float, default=d.fulltext_url_lifetime,
        help="signed URL lifetime of P042 drawings, seconds (default 7 days)")
    add("--url-style", choices=("cos", "sigv4"), default=d.url_style, help="signed URL shape")
    add("--url-honoured", type=float, default=None, metavar="SECONDS",
        help="the CDN refuses a URL this long after signing, whatever it says (a revoked key)")
    add("--cdn-clock-skew", type=float, default=0.0, metavar="SECONDS",
        help="the CDN's clock runs this far ahead of the API's (negative: behind)")
    add("--qps-limit", type=float, default=None, help="API requests per second allowed (default none)")
    add("--throttle-mode", choices=THROTTLE_MODES, default=d.throttle_mode,
        help="over the limit: 'code' = 67200007, '429' = HTTP 429 + Retry-After")
    add("--api-latency", type=float, default=d.api_latency, help="added API latency, seconds")
    add("--cdn-latency", type=float, default=d.cdn_latency, help="added CDN latency, seconds")
    add("--cdn-base", default=None, help="point image URLs at this base instead (e.g. an nginx)")
    add("--max-batch", type=int, default=d.max_batch, help="most ids per API request")
    add("--api-fault-rate", type=float, default=0.0, help="share of API requests given a fault")
    add("--api-fault-kinds", type=_kinds, default=API_FAULT_KINDS,
        help=f"comma list among {','.join(API_FAULT_KINDS)}")
    add("--image-fault-rate", type=float, default=0.0, help="share of image requests given a fault")
    add("--image-fault-kinds", type=_kinds, default=IMAGE_FAULT_KINDS,
        help=f"comma list among {','.join(IMAGE_FAULT_KINDS)}")
    add("--slow-seconds", type=float, default=d.slow_seconds, help="delay of 'slow' faults")
    add("--quota-after", type=int, default=None, help="answer 67200002 once this many results charged")
    add("--fatal-code", type=int, default=None, help="answer this error code to every API request")
    add("--refuse-credentials", action="store_true", help="the token endpoint answers 401")
    add("--apikey-refusal", choices=APIKEY_REFUSALS, default=d.apikey_refusal,
        help="a wrong apikey: 'code' = 67200008, '401' = HTTP 401 (as some gateways answer)")
    add("--api-down", choices=DOWN_KINDS, default=None, help="answer every API request so (an outage)")
    add("--api-down-for", type=float, default=None, metavar="SECONDS",
        help="end the --api-down outage after this long (default: never)")
    add("--cdn-down", choices=DOWN_KINDS, default=None, help="answer every image request so (an outage)")
    add("--cdn-down-for", type=float, default=None, metavar="SECONDS",
        help="end the --cdn-down outage after this long (default: never)")


def config_from_args(ns: argparse.Namespace) -> SimulatorConfig:
    """A SimulatorConfig from options added by `add_simulate_arguments`."""
    return SimulatorConfig(
        seed=ns.seed,
        api_key=ns.api_key,
        static_token=ns.token or None,
        client_id=ns.client_id,
        client_secret=ns.client_secret,
        token_lifetime=ns.token_lifetime,
        url_lifetime=ns.url_lifetime,
        fulltext_url_lifetime=ns.fulltext_url_lifetime,
        url_style=ns.url_style,
        url_honoured=ns.url_honoured,
        cdn_clock_skew=ns.cdn_clock_skew,
        qps_limit=ns.qps_limit,
        throttle_mode=ns.throttle_mode,
        api_latency=ns.api_latency,
        cdn_latency=ns.cdn_latency,
        cdn_base=ns.cdn_base,
        max_batch=ns.max_batch,
        api_fault_rate=ns.api_fault_rate,
        api_fault_kinds=tuple(ns.api_fault_kinds),
        image_fault_rate=ns.image_fault_rate,
        image_fault_kinds=tuple(ns.image_fault_kinds),
        slow_seconds=ns.slow_seconds,
        quota_after=ns.quota_after,
        fatal_code=ns.fatal_code,
        refuse_credentials=ns.refuse_credentials,
        apikey_refusal=ns.apikey_refusal,
        api_down=ns.api_down,
        api_down_until=_until(ns.api_down_for),
        cdn_down=ns.cdn_down,
        cdn_down_until=_until(ns.cdn_down_for),
    )


def _until(seconds: float | None) -> float | None:
    return None if seconds is None else time.time() + seconds


def serve(config: SimulatorConfig, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the simulator until SIGINT/SIGTERM, after printing its URL and credentials."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config, host, port))


async def _serve(config: SimulatorConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C still raises
            loop.add_signal_handler(signum, stop.set)
    async with running_simulator(config, host, port) as sim:
        print(  # noqa: T201
            f"PatSnap simulator on {sim.base_url} (seed {config.seed}): --api-base {sim.base_url}"
            f" --api-key {config.api_key} --token {config.static_token or '-'}"
            f" --client-id {config.client_id} --client-secret {config.client_secret}",
            flush=True,
        )
        await stop.wait()
