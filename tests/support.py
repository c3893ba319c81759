"""Helpers for end-to-end tests: CSV inputs, running a job against the simulator, checking files."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from downloader.core.outcome import Summary
from downloader.core.settings import Settings
from downloader.job import run_job
from downloader.simulator import Simulator, generate_numbers


def write_csv(path: Path, values: Iterable[str], header: str = "patent_number") -> Path:
    """A one-column CSV with a header."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([header])
        writer.writerows([v] for v in values)
    return path


def numbers(n: int, seed: int = 7) -> list[str]:
    """n distinct realistic publication numbers."""
    return generate_numbers(n, seed=seed)


def settings_for(sim: Simulator, **overrides: Any) -> Settings:
    """Settings that talk to the simulator quickly (high rate, small backoffs)."""
    values: dict[str, Any] = {"api_base": sim.base_url, "token": "demo-token", "api_key": "demo-key",
                              "rate": 500.0, "backoff_initial": 0.01, "backoff_max": 0.05,
                              "expiry_margin": 1.0}
    values.update(overrides)
    return Settings(**values)


def run(inputs: list[Path], out: Path, sim: Simulator, **overrides: Any) -> dict[str, Any]:
    """Run a whole job in this process; returns its summary."""
    return run_summary(inputs, out, sim, **overrides).to_dict()


def run_summary(inputs: list[Path], out: Path, sim: Simulator, **overrides: Any) -> Summary:
    """Run a whole job in this process; returns its frozen Summary (`error` holds what stopped it)."""
    return run_job(inputs, out, settings_for(sim, **overrides))


def manifest(out: Path) -> list[dict[str, str]]:
    """manifest.csv as dicts."""
    with (out / "manifest.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def sha256(data: bytes) -> str:
    """Hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


def check_downloads(out: Path, sim: Simulator) -> int:
    """Every `downloaded` row's file holds exactly the CDN's bytes; returns how many were checked."""
    checked = 0
    for row in manifest(out):
        if row["status"] != "downloaded":
            continue
        data = (out / row["local_file"]).read_bytes()
        assert sha256(data) == row["sha256"], row
        assert data == sim.expected_image(row["pn"], row["num"]), row
        assert int(row["bytes"]) == len(data)
        checked += 1
    return checked


def leftovers(out: Path) -> list[Path]:
    """Temporary or partial files anywhere under the output folder."""
    return [p for p in out.rglob("*") if p.name.endswith((".part", ".tmp"))]


# --- helpers for the fault, kill, CLI, secrets and hostile-answer tests -----------------------


def cli_args(sim: Simulator, inputs: Iterable[Path], out: Path, *extra: str, credentials: bool = True) -> list[str]:
    """`run` arguments for the CLI against the simulator (static token and apikey unless told not to)."""
    args = ["run", *[str(p) for p in inputs], "--out", str(out), "--api-base", str(sim.base_url),
            "--no-progress"]
    if credentials:
        args += ["--token", "demo-token", "--api-key", "demo-key"]
    return args + list(extra)


def cli_command(*args: str) -> list[str]:
    """The argv of `python -m downloader ARGS` with this interpreter."""
    import sys

    return [sys.executable, "-m", "downloader", *args]


def run_cli(*args: str, timeout: float = 60.0, env: dict[str, str] | None = None) -> Any:
    """Run the CLI in a subprocess to completion; returns the CompletedProcess (text)."""
    import subprocess

    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=Path(__file__).resolve().parents[1], check=False)


class Cli:
    """One `patent-images run` subprocess, stderr to `log`; killed (if still running) and reaped on exit."""

    def __init__(self, args: list[str], log: Path, **popen: Any) -> None:
        import subprocess
        import time

        self.log = log
        self._err = log.open("w", encoding="utf-8")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cli_command(*args), stdout=subprocess.DEVNULL, stderr=self._err,
                                     cwd=Path(__file__).resolve().parents[1], **popen)

    def __enter__(self) -> Cli:
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._err.close()

    def wait_for(self, condition: Callable[[], bool], timeout: float = 60.0) -> bool:
        """Poll `condition` every 2 ms until it holds (True) or the process ended first (False)."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if condition():
                return True
            time.sleep(0.002)
        raise AssertionError("timed out waiting for the run to get there")

    def when(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait until `condition()` holds while the run is still going (fails the test otherwise)."""
        assert self.wait_for(condition, timeout), f"the run ended first: {self.stderr()}"

    def stderr(self) -> str:
        self._err.flush()
        return self.log.read_text(encoding="utf-8")

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        """Exit code and stderr once it ends."""
        code = self.proc.wait(timeout=timeout)
        return code, self.stderr()


def state_rows(out: Path) -> list[tuple[str, str, str]]:
    """(kind, key, status) of every row of the state store, read with a separate connection."""
    import sqlite3

    conn = sqlite3.connect(f"file:{out / 'state.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return [tuple(r) for r in conn.execute("SELECT kind, key, status FROM patents")]
    finally:
        conn.close()


SETTLED_STATUSES = ("downloaded", "no_image", "not_found")


def settled_keys(out: Path) -> set[str]:
    """Keys whose status says they must never be asked from the API again."""
    return {key for _, key, status in state_rows(out) if status in SETTLED_STATUSES}


def image_files(out: Path) -> set[str]:
    """Every regular file under DIR/images/, as a path relative to DIR (POSIX separators)."""
    root = out / "images"
    return {p.relative_to(out).as_posix() for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def downloaded_files(out: Path) -> set[str]:
    """local_file of every `downloaded` manifest row."""
    return {r["local_file"] for r in manifest(out) if r["status"] == "downloaded"}


def one_clear_line(stderr: str) -> str:
    """The stderr of a failed command: exactly one non-empty line and no traceback; returns it."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


def when(condition: Any, action: Any, timeout: float = 60.0) -> Any:
    """Run `action()` once `condition()` holds (polled every 2 ms in a daemon thread); returns the thread."""
    import threading
    import time

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                action()
                return
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread
