"""Files a run leaves beside its images: manifest.csv, manifest.jsonl, rejects.csv, summary.json.

Each is written to a staging file and then published by the sink in one step (a rename in a local
folder, one upload to an object store), so a reader, or a kill in the middle of the write, only
ever sees a complete file. The manifest is streamed from the state store row by row: memory does
not grow with the number of patents. A file that cannot be written (full, read-only, gone) raises
the OutputError that names the folder, and its staging file is removed.

Manifest rows are the presentation of the store's rows: `resolved` (a URL known, the image not yet
stored) is shown as `pending`, and in manifest.jsonl an absent value is `null`, never "".
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from downloader import machine
from downloader.core.model import Kind, Reject, Status
from downloader.sinks.base import ImageSink
from downloader.state.base import PatentRow

MANIFEST_CSV = "manifest.csv"
MANIFEST_JSONL = "manifest.jsonl"
REJECTS_CSV = "rejects.csv"
SUMMARY_JSON = "summary.json"
MANIFEST_COLUMNS = ("patent_number", "patent_id", "pn", "num", "path", "local_file", "status",
                    "bytes", "sha256", "error")
# --drawings all: a row per drawing, with its 1-based figure (API order) and the API's image_type.
DRAWING_COLUMNS = (*MANIFEST_COLUMNS, "figure", "image_type")
# The manifest is written a row per patent, millions of them: csv.writer scans every character of
# the long signed URLs (~14 µs a row) and json.dumps with an option builds a new encoder per call.
_JSON = json.JSONEncoder(ensure_ascii=False)


def _json_line_encoder() -> Callable[[dict[str, Any]], str]:
    """`_JSON.encode` as one call into the C encoder that json builds anew on every `encode` (~3 µs a row,
    the manifest's costliest step). Its arguments are JSONEncoder.iterencode's for `_JSON`'s settings; the
    rows are flat dicts of str, int, float and None, so no circular check. Without the C accelerator
    (another Python), `_JSON.encode` itself."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _JSON.encode
    chunks = make(None, _JSON.default, json.encoder.encode_basestring, None, _JSON.key_separator,
                  _JSON.item_separator, False, False, True)
    return lambda row: "".join(chunks(row, 0))


_json_line = _json_line_encoder()


def manifest_row(row: PatentRow, drawings: bool = False) -> dict[str, Any]:
    """One manifest row (None for absent values) from a store row; with `drawings`, its figure too."""
    is_id = row.kind == Kind.ID
    status = Status.PENDING if row.status == Status.RESOLVED else row.status
    out = {"patent_number": None if is_id else row.key, "patent_id": row.key if is_id else row.patent_id,
           "pn": row.pn, "num": row.num, "path": row.url, "local_file": row.local_file, "status": status.value,
           "bytes": row.bytes, "sha256": row.sha256, "error": row.error}
    if drawings:
        out["figure"], out["image_type"] = row.figure, row.image_type
    return out


async def write_manifest(sink: ImageSink, rows: AsyncIterator[PatentRow], *, drawings: bool = False) -> int:
    """manifest.csv and manifest.jsonl in one pass over `rows`; returns the row count. With
    `drawings` (--drawings all) a row per drawing, and the figure and image_type columns."""
    count = 0
    table_path, lines_path = sink.staging(MANIFEST_CSV), sink.staging(MANIFEST_JSONL)
    try:
        with machine.output_faults(str(table_path.parent)), _text(table_path) as table, _text(lines_path) as lines:
            writer = csv.writer(table)
            writer.writerow(DRAWING_COLUMNS if drawings else MANIFEST_COLUMNS)
            async for stored in rows:
                row = manifest_row(stored, drawings)
                values = [v if type(v) is str else "" if v is None else str(v) for v in row.values()]
                line = plain_csv_line(values)
                if line is None:
                    writer.writerow(values)
                else:
                    table.write(line)
                lines.write(_json_line(row) + "\n")
                count += 1
        await sink.publish(MANIFEST_CSV, table_path, content_type="text/csv")
        await sink.publish(MANIFEST_JSONL, lines_path, content_type="application/x-ndjson")
    finally:
        machine.unlink_quietly(table_path)
        machine.unlink_quietly(lines_path)
    return count


def plain_csv_line(values: list[str]) -> str | None:
    """The line csv.writer (excel dialect) writes for `values` when none of them needs quoting, else None.

    Without a comma, quote or line break in any value, that line is the values joined by commas: a few
    scans in C instead of csv's per-character loop. The rest go through csv.writer.
    """
    line = ",".join(values)
    if line.count(",") != len(values) - 1 or '"' in line or "\n" in line or "\r" in line or not line:
        return None
    return line + "\r\n"


async def write_summary(sink: ImageSink, summary: dict[str, Any]) -> None:
    """summary.json of the last run."""
    staged = sink.staging(SUMMARY_JSON)
    try:
        with machine.output_faults(str(staged.parent)), _text(staged) as out:
            json.dump(summary, out, indent=2, sort_keys=True)
            out.write("\n")
        await sink.publish(SUMMARY_JSON, staged, content_type="application/json")
    finally:
        machine.unlink_quietly(staged)


class RejectsWriter:
    """Streams rejected rows to a staging file; `publish` puts rejects.csv in place."""

    def __init__(self, sink: ImageSink) -> None:
        self._sink = sink
        self._path = sink.staging(REJECTS_CSV)
        self._folder = str(self._path.parent)
        self._cm = _text(self._path)
        with machine.output_faults(self._folder):
            self._out = self._cm.__enter__()
        self._writer = csv.writer(self._out)
        self._writer.writerow(["source", "line", "value", "reason"])
        self.count = 0

    def add(self, reject: Reject) -> None:
        """Record one rejected row."""
        with machine.output_faults(self._folder):
            self._writer.writerow([reject.source, reject.line, reject.raw, reject.reason])
        self.count += 1

    async def publish(self) -> None:
        """Finish the file and put it in place."""
        try:
            with machine.output_faults(self._folder):
                self._cm.__exit__(None, None, None)
            await self._sink.publish(REJECTS_CSV, self._path, content_type="text/csv")
        finally:
            machine.unlink_quietly(self._path)

    def drop(self) -> None:
        """Forget the file (the run failed before reading every input)."""
        try:
            self._cm.__exit__(None, None, None)
        except OSError:
            pass  # a full disk: the file goes anyway
        machine.unlink_quietly(self._path)


@contextmanager
def _text(path: Path) -> Iterator[TextIO]:
    """A new text file with the permissions the umask gives (not mkstemp's 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
        yield out
