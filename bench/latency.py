"""A fixed per-request latency in front of nginx, for the lat30 and lat200 modes.

First choice: Linux `tc qdisc add dev lo root netem delay X/2 ms` (X ms round trip on loopback;
it delays the simulator's API traffic too). Where the kernel has no netem (this project's VMs
answer "Specified qdisc kind is unknown"), nginx itself waits: a server whose location does
`echo_sleep X; echo_exec @file;` (Debian's libnginx-mod-http-echo). That wait is a timer in
nginx's event loop, so it costs no CPU and is no bottleneck, unlike a Python delay proxy on two
cores. It is a time-to-first-byte delay per request, not per round trip: TCP handshakes are not
delayed (with keep-alive they are rare) and the API is not delayed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from nginx import Nginx


def netem_problem() -> str | None:
    """None if netem works on lo here, else why not (it is added and removed at once)."""
    try:
        add = subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"tc unavailable: {err}"
    if add.returncode != 0:
        return f"tc netem refused: {add.stderr.strip()}"
    _remove_netem()
    return None


def _remove_netem() -> None:
    subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True, timeout=10)


@contextmanager
def netem_delay(rtt_ms: int) -> Iterator[None]:
    """Delay every loopback packet by rtt/2 (so rtt per round trip); always removed on exit."""
    subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", f"{rtt_ms / 2}ms"],
                   check=True, capture_output=True, timeout=10)
    try:
        yield
    finally:
        _remove_netem()


class Latency:
    """How this machine adds latency; `cdn(ms)` gives the base URL to use while it is in force."""

    def __init__(self, use_netem: bool, reason: str) -> None:
        self.use_netem = use_netem
        self.method = ("tc netem on lo (API delayed too)" if use_netem else
                       f"nginx echo_sleep before serving the file (netem unusable: {reason})")

    @contextmanager
    def cdn(self, server: Nginx, ms: int) -> Iterator[str]:
        """The base URL whose requests take `ms` longer, valid inside the block."""
        if not ms:
            yield server.base_url()
        elif self.use_netem:
            with netem_delay(ms):
                yield server.base_url()
        else:
            yield server.base_url(ms)


def choose_latency() -> Latency:
    """netem if the kernel has it, else nginx's echo_sleep."""
    problem = netem_problem()
    return Latency(problem is None, problem or "")
