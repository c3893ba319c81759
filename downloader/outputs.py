"""Files a run leaves in DIR: manifest.csv, manifest.jsonl, rejects.csv, summary.json.

Each is written to a temporary file in DIR and renamed over the old one, so a reader (or a kill
in the middle of the write) only ever sees a complete file. The manifest is streamed from the
state store row by row: memory does not grow with the number of patents.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from downloader.core.model import Reject
from downloader.state.sqlite import MANIFEST_COLUMNS

MANIFEST_CSV = "manifest.csv"
MANIFEST_JSONL = "manifest.jsonl"
REJECTS_CSV = "rejects.csv"
SUMMARY_JSON = "summary.json"


@contextmanager
def atomic_text(path: Path, durable: bool = False) -> Iterator[TextIO]:
    """Write a text file via a temp file in the same folder and an atomic rename."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            yield out
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: Path) -> None:
    """Delete the temp files of writes a killed run left half done (call it holding the DIR lock)."""
    for name in (MANIFEST_CSV, MANIFEST_JSONL, REJECTS_CSV, SUMMARY_JSON):
        for temp in folder.glob(f".{name}.*.tmp"):
            temp.unlink(missing_ok=True)


def write_manifest(folder: Path, rows: Iterable[dict[str, Any]], durable: bool = False) -> int:
    """manifest.csv and manifest.jsonl in one pass over `rows`; returns the row count.

    One pass, not one per file: at a million rows the state store's read is a good part of the cost.
    """
    count = 0
    with atomic_text(folder / MANIFEST_CSV, durable) as table, atomic_text(folder / MANIFEST_JSONL, durable) as lines:
        writer = csv.DictWriter(table, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            lines.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


class RejectsWriter:
    """Streams rejected rows to rejects.csv (via a temp file, renamed when closed)."""

    def __init__(self, folder: Path) -> None:
        self._cm = atomic_text(folder / REJECTS_CSV)
        self._out = self._cm.__enter__()
        self._writer = csv.writer(self._out)
        self._writer.writerow(["source", "line", "value", "reason"])
        self.count = 0

    def add(self, reject: Reject) -> None:
        """Record one rejected row."""
        self._writer.writerow([reject.source, reject.line, reject.raw, reject.reason])
        self.count += 1

    def close(self, ok: bool = True) -> None:
        """Finish the file (or drop it when the run failed before reading everything)."""
        if ok:
            self._cm.__exit__(None, None, None)
        else:
            try:
                self._cm.__exit__(RuntimeError, RuntimeError(), None)
            except RuntimeError:
                pass


def write_summary(folder: Path, summary: dict[str, Any], durable: bool = False) -> None:
    """summary.json of the last run."""
    with atomic_text(folder / SUMMARY_JSON, durable) as out:
        json.dump(summary, out, indent=2, sort_keys=True)
        out.write("\n")
