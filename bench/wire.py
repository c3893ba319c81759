"""API requests counted on the wire: when each reached the server's port, by the kernel's clock.

The simulator stamps a request when its event loop gets to it. On this 2-core machine, shared by the
tool, the simulator and everything else, that thread can run late even under SCHED_FIFO: 60 s runs at
--rate 20 saw stamps up to 13 ms after the request was on the wire, which squeezes two requests
written 1.010 s apart to within one second of each other. A real server does not share its CPUs with
the client, so the api mode also counts what a packet capture saw: `tcpdump` on the loopback device
stamps each packet as it passes, before any process is scheduled to read it.

Only the first packet of each API request is counted (its payload starts with the request line), so
the OAuth and `/_sim/` requests, and the later packets of a request, are left out.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

API_PATH = b"/basic-patent-data/"
# The first four payload bytes of a TCP segment are "GET " or "POST": the start of a request.
_REQUEST_START = "(tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420 or tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x504f5354)"


def available() -> bool:
    """Whether tcpdump is installed and may capture here (it needs root or CAP_NET_RAW)."""
    return shutil.which("tcpdump") is not None and os.geteuid() == 0


@dataclass
class Capture:
    """Arrival times (seconds, the kernel's wall clock) of the API requests to one port."""

    times: list[float] = field(default_factory=list)
    ok: bool = False


@contextmanager
def captured(port: int, raw: Path) -> Iterator[Capture]:
    """Capture the API requests to `port` on the loopback device while the block runs (empty when not allowed)."""
    found = Capture()
    if not available():
        yield found
        return
    cmd = ["tcpdump", "-i", "lo", "-n", "-tt", "-l", "--immediate-mode", "-A", "-s", "256",
           f"tcp dst port {port} and {_REQUEST_START}"]
    with raw.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE)
        try:
            assert proc.stderr is not None
            proc.stderr.readline()  # "listening on lo ...": the capture is running
            yield found
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    found.times = request_times(raw.read_bytes())
    found.ok = proc.returncode == 0


def request_times(text: bytes) -> list[float]:
    """From `tcpdump -tt -A` output: the timestamp of each packet whose payload names an API path."""
    times: list[float] = []
    stamp: float | None = None
    for line in text.splitlines():
        head = line.split(b" ", 1)[0]
        if b" IP " in line and head.replace(b".", b"", 1).isdigit():
            stamp = float(head)
        elif stamp is not None and API_PATH in line:
            times.append(stamp)
            stamp = None
    return times
