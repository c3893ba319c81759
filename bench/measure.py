"""Run a command under GNU time and read back wall, CPU and peak RSS; count verified files.

`/usr/bin/time -v` reports the rusage of the child and every descendant it waited for:
user+sys seconds of the whole tree, and the largest single process's peak RSS.
Wall time is our own monotonic clock around the process, to the millisecond.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

TIMED_OUT = -999
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_TIME_FIELDS = {
    "user_s": "User time (seconds)",
    "sys_s": "System time (seconds)",
    "rss_kb": "Maximum resident set size (kbytes)",
}


@dataclass
class Measured:
    """What one process run cost."""

    wall_s: float
    user_s: float
    sys_s: float
    rss_kb: int
    exit_code: int

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def rss_mb(self) -> float:
        return self.rss_kb / 1024


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for every child: no proxies, loopback never proxied."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


def run_measured(cmd: list[str], log: Path, *, timeout: float, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> Measured:
    """Run `cmd` to the end (killed after `timeout` s); its stdout+stderr go to `log`."""
    time_file = log.with_suffix(".time")
    full = ["/usr/bin/time", "-v", "-o", str(time_file), *cmd]
    started = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else clean_env(), cwd=cwd,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = TIMED_OUT
        finally:
            stop_group(proc)
    wall = time.perf_counter() - started
    return _parse_time(time_file.read_text() if time_file.exists() else "", wall, code)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """End the process group we started for `proc` (by its id), if anything in it still runs."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _parse_time(text: str, wall: float, code: int) -> Measured:
    values: dict[str, float] = {}
    for key, label in _TIME_FIELDS.items():
        found = re.search(rf"{re.escape(label)}: ([\d.]+)", text)
        values[key] = float(found.group(1)) if found else 0.0
    return Measured(wall, values["user_s"], values["sys_s"], int(values["rss_kb"]), code)


def process_cpu_s(pids: Iterable[int]) -> float:
    """user+sys seconds so far of running processes (for nginx and the simulator)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime
    return total


def machine_busy_s() -> float:
    """CPU seconds all processes of the machine have used since boot (user, system, irq, steal)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(pairs: Iterable[tuple[Path, str, int]]) -> tuple[int, int]:
    """(count, bytes) of the (file, expected sha256, size) triples whose file has that content."""
    count = size = 0
    for path, expected, length in pairs:
        if path.is_file() and sha256_file(path) == expected:
            count += 1
            size += length
    return count, size


def file_create_ms(folder: Path, count: int = 1000) -> float:
    """Wall milliseconds to create, write 30 KB to and close one file in `folder` (then removed)."""
    probe = folder / ".create-probe"
    probe.mkdir(parents=True, exist_ok=True)
    data = os.urandom(30_000)
    started = time.perf_counter()
    for i in range(count):
        with (probe / f"{i}.png").open("wb") as fh:
            fh.write(data)
    elapsed = time.perf_counter() - started
    for path in probe.iterdir():
        path.unlink()
    probe.rmdir()
    return 1000 * elapsed / count
