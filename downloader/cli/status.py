"""`patent-images status`: totals by status and the recent runs, read from the state store."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from downloader.core.errors import UsageError
from downloader.state.sqlite import STATE_FILE, StateStore


def status_data(folder: Path, runs: int = 10) -> dict[str, Any]:
    """Totals and recent runs as plain data."""
    path = folder / STATE_FILE
    if not path.exists():
        raise UsageError(f"no state store in {folder} (has a run used this --out?)")
    store = StateStore(path)
    try:
        counts = store.counts()
        return {"folder": str(folder), "total": sum(counts.values()), "by_status": counts,
                "runs": store.runs(runs)}
    finally:
        store.close()


def show_status(folder: Path, as_json: bool, runs: int) -> int:
    """Print the status of a job folder."""
    data = status_data(folder, runs)
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))  # noqa: T201
        return 0
    print(render_status(data))  # noqa: T201
    return 0


def render_status(data: dict[str, Any]) -> str:
    """A person-readable table of the totals and runs."""
    lines = [f"{data['folder']}: {data['total']} patents"]
    lines += [f"  {status:<11} {n:>10}" for status, n in sorted(data["by_status"].items())]
    lines.append("")
    lines.append(f"{'run':>5}  {'started':<19}  {'secs':>8}  {'exit':>4}  {'calls':>6}  {'charged':>8}  "
                 f"{'images':>7}  {'MB':>8}  stop")
    for run in data["runs"]:
        s = run["summary"]
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run["started"]))
        exit_code = "-" if run["exit_code"] is None else str(run["exit_code"])
        lines.append(f"{run['id']:>5}  {started:<19}  {s.get('seconds', 0):>8.1f}  {exit_code:>4}  "
                     f"{s.get('api_calls', 0):>6}  {s.get('charged', 0):>8}  {s.get('images', 0):>7}  "
                     f"{s.get('bytes', 0) / 1e6:>8.1f}  {s.get('stop_reason') or ''}")
    return "\n".join(lines)
