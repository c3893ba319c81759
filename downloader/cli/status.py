"""`patent-images status`: totals by status and the recent runs, read from the state store."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import anyio

from downloader.cli.finalline import stop_words
from downloader.state import open_existing
from downloader.state.sqlite import STATE_FILE


def status_data(out: str, state_url: str | None = None, runs: int = 10) -> dict[str, Any]:
    """Totals, live workers and recent runs as plain data."""
    return anyio.run(_status_data, out, state_url, runs)


async def _status_data(out: str, state_url: str | None, runs: int) -> dict[str, Any]:
    from downloader.job import state_folder

    store = await open_existing(state_url, state_folder(out) / STATE_FILE)
    try:
        counts = await store.counts()
        all_drawings = await store.drawings_kind(None) == "all"
        drawings = await store.drawing_counts() if all_drawings else None
        figures = await store.figure_counts() if all_drawings else None
        workers = [asdict(w) for w in await store.workers()]
        history = [asdict(r) for r in await store.runs(runs) if not r.summary.get("nothing_to_do")]
    finally:
        await store.close()
    now = time.time()
    live = [w for w in workers if not w["finished"] and w["lease_until"] >= now]
    data = {"folder": out, "state": store.location, "total": sum(counts.values()), "by_status": counts,
            "workers": live, "runs": history}
    if drawings is not None and figures is not None:  # --drawings all: the drawings, and patents by their count
        data["drawings"] = {"total": sum(drawings.values()), "by_status": drawings,
                            "per_patent": {str(n): c for n, c in sorted(figures.items())}}
    return data


def show_status(out: str, state_url: str | None, as_json: bool, runs: int) -> int:
    """Print the status of a job."""
    data = status_data(out, state_url, runs)
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))  # noqa: T201
        return 0
    print(render_status(data))  # noqa: T201
    return 0


_LABELS = (("downloaded", "image saved"), ("no_image", "the patent has no abstract drawing"),
           ("not_found", "PatSnap does not know the patent"), ("failed", "see the manifest's error column"),
           ("pending", "not asked yet: the next run continues"), ("resolved", "URL known, image not fetched yet"))


# --drawings all: a patent is settled when each of its drawings is.
_ALL_LABELS = (("downloaded", "every drawing saved"), ("no_image", "the patent has no drawings"),
               *_LABELS[2:5], ("resolved", "drawings listed, not all fetched yet"))


def render_status(data: dict[str, Any]) -> str:
    """A person-readable table of the totals (each status with what it means) and the runs."""
    counts = data["by_status"]
    known = [k for k, _ in _LABELS]
    lines = [f"{data['folder']}: {data['total']:,} patents"]
    labels = _ALL_LABELS if "drawings" in data else _LABELS
    lines += [f"  {status:<11} {counts[status]:>10,}  {meaning}" for status, meaning in labels if status in counts]
    lines += [f"  {status:<11} {n:>10,}" for status, n in sorted(counts.items()) if status not in known]
    if "drawings" in data:
        drawings = data["drawings"]
        listed = sum(int(n) * c for n, c in drawings["per_patent"].items())
        patents = sum(drawings["per_patent"].values())
        lines.append(f"{drawings['total']:,} drawings (--drawings all), {listed / patents if patents else 0:.1f} "
                     "per patent on average")
        lines += [f"  {status:<11} {n:>10,}" for status, n in sorted(drawings["by_status"].items())]
    for w in data.get("workers", []):
        left = max(0.0, w["lease_until"] - time.time())
        lines.append(f"  worker {w['worker']} (run {w['run_id']}): {w['claimed']:,} keys claimed, "
                     f"lease {left:.0f} s left")
    lines.append("")
    lines.append(f"{'run':>5}  {'started':<19}  {'secs':>8}  {'exit':>4}  {'calls':>6}  {'charged':>8}  "
                 f"{'images':>7}  {'MB':>8}  stop")
    for run in data["runs"]:
        s = run["summary"]
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run["started"]))
        exit_code = "-" if run["exit_code"] is None else str(run["exit_code"])
        ending = stop_words(s) if run["exit_code"] is not None else "unfinished"
        lines.append(f"{run['id']:>5}  {started:<19}  {s.get('seconds', 0):>8,.1f}  {exit_code:>4}  "
                     f"{s.get('api_calls', 0):>6,}  {s.get('charged', 0):>8,}  {s.get('images', 0):>7,}  "
                     f"{s.get('bytes', 0) / 1e6:>8,.1f}  {ending}")
    return "\n".join(lines)


