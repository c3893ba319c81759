"""`patent-images status`: totals by status and the recent runs, read from the state store."""

from __future__ import annotations

import json
import time
from typing import Any

from downloader.cli.finalline import stop_words
from downloader.core.settings import Settings
from downloader.job import job_status


def show_status(out: str, state_url: str | None, as_json: bool, runs: int) -> int:
    """Print the status of a job (read through the library's `Job.status`)."""
    data = job_status(out, Settings(state_url=state_url), runs=runs).to_dict()
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
        ending = stop_words(s) if run["exit_code"] is not None else _unfinished(run)
        lines.append(f"{run['id']:>5}  {started:<19}  {s.get('seconds', 0):>8,.1f}  {exit_code:>4}  "
                     f"{s.get('api_calls', 0):>6,}  {s.get('charged', 0):>8,}  {s.get('images', 0):>7,}  "
                     f"{s.get('bytes', 0) / 1e6:>8,.1f}  {ending}")
    return "\n".join(lines)


def _unfinished(run: dict[str, Any]) -> str:
    """A run without an exit code: still going (its progress so far), or killed ("unfinished")."""
    if not run.get("live"):
        return "unfinished"
    total, settled = run.get("total", 0), run.get("settled", 0)
    share = f" ({100 * settled / total:.0f}%)" if total else ""
    return f"running: {settled:,} of {total:,} settled{share}"
