"""`--metrics-file PATH`: the last run's figures in the Prometheus text format, for node_exporter.

node_exporter's textfile collector reads every `*.prom` file of its `--collector.textfile.directory`
at each scrape, so a batch job that runs from cron or a systemd timer reports by rewriting one file
after each run. The file is replaced atomically (a hidden temporary file in the same folder, then a
rename), so a scrape never sees half of it. Values are gauges of the last run; the time of the last
successful run (exit 0) is carried over from the previous file when this run did not succeed, which
is what an alert such as `time() - patent_images_last_success_timestamp_seconds > 2 * 86400` needs.

Every series has an `out` label (the output folder), so several jobs on one machine can write
their own files into the same collector folder without their series colliding.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

from downloader.cli.finalline import STATUS_ORDER
from downloader.core.outcome import Summary

PREFIX = "patent_images"
LAST_SUCCESS = f"{PREFIX}_last_success_timestamp_seconds"

# name suffix, help text, Summary field (for the per-run figures)
_RUN_FIGURES = (
    ("last_run_api_calls", "API calls made by the last run.", "api_calls"),
    ("last_run_charged_results", "Results the API may have charged in the last run.", "charged"),
    ("last_run_recharged_results",
     "Charged results of patents asked again (their URL had expired, or an answer was lost on the way).", "recharged"),
    ("last_run_retries", "Requests retried after transient faults in the last run.", "retries"),
    ("last_run_images", "Images downloaded by the last run.", "images"),
    ("last_run_bytes", "Bytes of images downloaded by the last run.", "bytes"),
    ("last_run_rejected_rows", "Input rows rejected by the last run (see rejects.csv).", "rejected"),
    ("last_run_duplicate_rows", "Input rows that repeated a patent already listed, in the last run.", "duplicates"),
)


def render_metrics(summary: Summary, last_success: float | None, *, finished: float | None = None,
                   labels: Mapping[str, str] | None = None) -> str:
    """The exposition text for one run. `finished` defaults to now; `last_success` is omitted when None.

    A run that ended before it started (bad input, a locked folder: `run_id` 0) reports only its
    exit code and times, never counts of zero that a dashboard would take for real.
    """
    finished = time.time() if finished is None else finished
    base = dict(labels or {})
    lines: list[str] = []
    if summary.run_id:
        _gauge(lines, "last_run_patents", "Patents of the last run's inputs, by status after the run.",
               [({**base, "status": s}, summary.by_status.get(s, 0)) for s in STATUS_ORDER])
        for suffix, text, name in _RUN_FIGURES:
            _gauge(lines, suffix, text, [(base, getattr(summary, name))])
    _gauge(lines, "last_run_duration_seconds", "How long the last run took.", [(base, summary.seconds)])
    _gauge(lines, "last_run_exit_code", "Exit code of the last run (0 all settled, 1 some failed, 2 usage or "
           "input, 3 fatal API condition, 4 cap reached, 130 interrupted).", [(base, summary.exit_code)])
    _gauge(lines, "last_run_timestamp_seconds", "When the last run ended (Unix time).", [(base, finished)])
    if last_success is not None:
        _gauge(lines, "last_success_timestamp_seconds", "When the last run that exited 0 ended (Unix time).",
               [(base, last_success)])
    return "\n".join(lines) + "\n"


def write_metrics(path: str | os.PathLike[str], summary: Summary, *, labels: Mapping[str, str] | None = None,
                  finished: float | None = None) -> None:
    """Replace the metrics file atomically; the last success time is this run's if it exited 0, else kept."""
    target = Path(path)
    finished = time.time() if finished is None else finished
    last_success = finished if summary.exit_code == 0 else previous_success(target)
    text = render_metrics(summary, last_success, finished=finished, labels=labels)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # not *.prom: the collector skips it
    try:
        temp.write_text(text, encoding="utf-8")
        os.chmod(temp, 0o644)  # node_exporter runs as its own user
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def previous_success(path: Path) -> float | None:
    """The last success time recorded in an existing metrics file, if any."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    found = re.search(rf"^{LAST_SUCCESS}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)
    try:
        return float(found[1]) if found else None
    except ValueError:
        return None


def _gauge(lines: list[str], suffix: str, text: str, samples: list[tuple[Mapping[str, str], float]]) -> None:
    name = f"{PREFIX}_{suffix}"
    lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
    lines += [f"{name}{_labels(labels)} {_value(value)}" for labels, value in samples]


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _escape(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
