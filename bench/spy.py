"""Where the tool's CPU goes: `py-spy record` of one run, summarised three ways.

py-spy samples the Python stacks of the running tool; idle threads (the event loop waiting in
epoll, pool threads waiting for work) are left out, so shares are of the CPU-busy samples. Time inside C code (hashing,
zlib, sqlite, syscalls) is charged to the Python function that called it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

PY_SPY = Path(sys.executable).with_name("py-spy")
_REPO = f"{Path(__file__).resolve().parent.parent}/"  # the checkout whose downloader/ is profiled
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*)\)$")
# Leaves of threads that wait (py-spy's idle detection misses waits inside C calls here).
_WAITS = ("_worker (concurrent/futures/thread.py)", "Condition.wait (threading.py)", "Event.wait (threading.py)",
          "EpollSelector.select (selectors.py)", "Thread._wait_for_tstate_lock (threading.py)")


def ensure_py_spy() -> Path | None:
    """py-spy in the venv (pip-installed on first use), or None if it will not install."""
    if not PY_SPY.exists():
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], capture_output=True)
        if done.returncode != 0:
            print(f"py-spy did not install: {done.stderr.decode(errors='replace')[-300:]}", flush=True)
    return PY_SPY if PY_SPY.exists() else None


def spy_prefix(raw_out: Path, rate: int = 100) -> list[str]:
    """The command prefix that runs the rest under `py-spy record` into a raw (collapsed) file."""
    return [str(PY_SPY), "record", "--format", "raw", "--nolineno", "--rate", str(rate), "--output",
            str(raw_out), "--"]


@dataclass
class Profile:
    """Shares (0..1) of busy samples, by leaf function, by package, and by the tool's own code."""

    samples: int
    waiting: int
    leaf: list[tuple[str, float]]
    package: list[tuple[str, float]]
    tool_code: list[tuple[str, float]]
    inclusive: list[tuple[str, float]]
    own: float  # share of samples whose running function is the tool's own code


def summarise(raw: Path, top: int = 12) -> Profile:
    leaf: Counter[str] = Counter()
    package: Counter[str] = Counter()
    tool_code: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = waiting = own_leaf = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_parse(f) for f in stack.split(";")]
        frames = [f for f in frames if f is not None]
        if not frames:
            continue
        func, file = frames[-1]
        if f"{func} ({_short(file)})" in _WAITS:
            waiting += count
            continue
        total += count
        leaf[f"{func} ({_short(file)})"] += count
        package[_package(file)] += count
        own = next(((fn, fl) for fn, fl in reversed(frames) if "downloader/" in fl), None)
        tool_code[f"{own[0]} ({_short(own[1])})" if own else "(outside downloader/)"] += count
        own_leaf += count if "downloader/" in file else 0
        for name in {f"{fn} ({_short(fl)})" for fn, fl in frames if "downloader/" in fl}:
            inclusive[name] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, n / total) for name, n in counter.most_common(top)] if total else []

    return Profile(total, waiting, shares(leaf), shares(package), shares(tool_code), shares(inclusive),
                   own_leaf / total if total else 0.0)


def _parse(frame: str) -> tuple[str, str] | None:
    found = _FRAME.match(frame.strip())
    return (found.group("func"), found.group("file")) if found else None


def _short(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3.11/", _REPO):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def _package(file: str) -> str:
    short = _short(file)
    if file.startswith(_REPO):
        return short  # the tool's own modules one by one
    if "site-packages/" in file:
        return short.split("/", 1)[0]
    if "/lib/python3" in file:
        return f"stdlib {short.split('/', 1)[0].removesuffix('.py')}"
    return short


def profile_markdown(p: Profile) -> str:
    def table(title: str, rows: list[tuple[str, float]]) -> str:
        body = "".join(f"| {i} | `{name}` | {share:.1%} |\n" for i, (name, share) in enumerate(rows, 1))
        return f"| # | {title} | share |\n|---|---|---|\n{body}\n"

    return (f"{p.samples:,} busy samples ({p.waiting:,} more of threads waiting in a queue or selector, left out).\n\n"
            + table("self time: the function running when sampled", p.leaf)
            + table("by package of the running function", p.package)
            + table("by the innermost frame of the tool's own code (libraries it calls included)", p.tool_code)
            + table("inclusive: samples with this function of the tool anywhere on the stack", p.inclusive)
            + f"The tool's own code was the running function in {p.own:.1%} of the busy samples.\n")
