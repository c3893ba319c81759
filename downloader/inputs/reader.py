"""Input CSVs → normalized patent keys, streamed, with a `Reject` for every unusable row.

Theory of operation. Each file is read one physical line at a time (`readline` with a size
cap), so neither a ten-million-row file nor a ten-megabyte line is ever held in memory; an
over-long line becomes one `Reject` and a blank placeholder. The lines feed one strict
`csv.reader`, which may join several lines into one record when a quoted cell spans them. The
lines of the current record are remembered, so a record that goes wrong — a CSV error, an
unbalanced quote running past a budget, or a key cell containing a line break — is rejected as
its first line alone and the following lines are read again. One stray quote therefore costs one
row, never the rest of the file.

The first non-blank row decides the layout: a header naming the column(s) to read, or one
headerless column of values. De-duplication is not done here; the state store does it.
"""

from __future__ import annotations

import codecs
import csv
import os
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TextIO

from downloader.core.errors import InputError
from downloader.core.model import PatentKey, Reject
from downloader.inputs import formats
from downloader.inputs.rows import BLANK, RAW_CHARS, RowRules, classify_value, looks_like_key, used_cells

__all__ = ["BLANK", "check_inputs", "classify_value", "looks_like_key", "read_inputs"]

MAX_LINE_CHARS = 1 << 20  # a physical line longer than this is rejected unread
MAX_RECORD_LINES = 100  # a quoted cell spanning more lines than this is an unbalanced quote
MAX_RECORD_CHARS = 2 * MAX_LINE_CHARS

_EOL = ("\n", "\r")


class _RecordTooLong(Exception):
    """A record ran past MAX_RECORD_LINES / MAX_RECORD_CHARS: an unbalanced quote."""


def check_inputs(paths: Sequence[str | os.PathLike[str]], column: str | None = None) -> None:
    """Fail fast, before any work: every path is a readable file whose layout is understood.

    Reads each file only up to its first non-blank row. Raises `InputError` naming the path.
    """
    if not paths:
        raise InputError("no input files given")
    for path in paths:
        source = os.fspath(path)
        kind = formats.sniff(source)
        if kind is formats.XLSX:
            from downloader.inputs import xlsx  # openpyxl is imported only for a workbook

            xlsx.check(source, column)
            continue
        if not kind.readable:
            raise formats.refuse(source, kind)
        with _open(source) as f:
            reader = _FileReader(f, source, column)
            for _ in reader:
                if reader.rules.layout is not None:
                    break


def read_inputs(paths: Sequence[str | os.PathLike[str]],
                column: str | None = None) -> Iterator[PatentKey | Reject]:
    """Yield a `PatentKey` or a `Reject` per usable or unusable row, files and rows in order.

    Lazy: a file is opened when reached. CSV text is read here; an `.xlsx` workbook by
    `inputs.xlsx` with the same rules; other binary files raise `InputError`. Entirely blank
    lines are skipped; a row with other cells filled but an empty key cell is a `Reject` with
    reason `BLANK`, so no data row vanishes.
    `column` names the header cell to read (case-insensitive) instead of auto-detection.
    Raises `InputError` for an unreadable file or one without a usable column.
    """
    for path in paths:
        yield from _read_file(os.fspath(path), column)


def _read_file(source: str, column: str | None) -> Iterator[PatentKey | Reject]:
    kind = formats.sniff(source)
    if kind is formats.XLSX:
        from downloader.inputs import xlsx  # openpyxl is imported only for a workbook

        yield from xlsx.read(source, column)
        return
    if not kind.readable:
        raise formats.refuse(source, kind)
    with _open(source) as f:
        try:
            yield from _FileReader(f, source, column)
        except OSError as exc:
            raise InputError(f"cannot read {source}: {exc.strerror or exc}") from None


def _open(source: str) -> TextIO:
    try:
        return open(source, encoding=_encoding_of(source), errors="replace", newline="")
    except FileNotFoundError:
        raise InputError(f"input file not found: {source}") from None
    except IsADirectoryError:
        raise InputError(f"input is a directory, not a CSV file: {source}") from None
    except OSError as exc:
        raise InputError(f"cannot read {source}: {exc.strerror or exc}") from None


def _encoding_of(source: str) -> str:
    # Excel's "Unicode Text" export is UTF-16 with a BOM; everything else is read as UTF-8. Only
    # a regular file is peeked at: a pipe cannot be opened twice.
    if not os.path.isfile(source):
        return "utf-8-sig"
    with open(source, "rb") as f:
        return "utf-16" if f.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "utf-8-sig"


def _physical_lines(f: TextIO, source: str, rejects: list[Reject]) -> Iterator[tuple[int, str]]:
    """(line number, text) per physical line; an over-long line is skipped in bounded chunks and
    replaced by a blank line, its Reject appended to `rejects`."""
    lineno = 0
    drop_lf = False
    while chunk := f.readline(MAX_LINE_CHARS + 1):
        if drop_lf and chunk == "\n":  # the rest of a CRLF split by the size cap
            drop_lf = False
            continue
        lineno += 1
        if len(chunk) <= MAX_LINE_CHARS or chunk.endswith(_EOL):
            drop_lf = len(chunk) > MAX_LINE_CHARS and chunk.endswith("\r")
            yield lineno, chunk
            continue
        size, drop_lf = _skip_line(f, chunk)
        reason = f"line too long ({size} bytes)"
        rejects.append(Reject(source, lineno, chunk[:RAW_CHARS], reason))
        yield lineno, "\n"


def _skip_line(f: TextIO, chunk: str) -> tuple[int, bool]:
    """Read to the end of an over-long line; its size in bytes, and whether it ended on a lone CR."""
    size = 0
    while True:
        size += len(chunk.rstrip("\r\n").encode("utf-8", "replace"))
        if chunk.endswith(_EOL) or not chunk:
            return size, chunk.endswith("\r") and len(chunk) == MAX_LINE_CHARS
        chunk = f.readline(MAX_LINE_CHARS)


class _LineSource:
    """The lines fed to csv.reader, remembering those of the current record for a replay."""

    def __init__(self, lines: Iterator[tuple[int, str]]) -> None:
        self._lines = lines
        self._replay: deque[tuple[int, str]] = deque()
        self.record: list[tuple[int, str]] = []
        self._chars = 0

    def __iter__(self) -> _LineSource:
        return self

    def __next__(self) -> str:
        item = self._replay.popleft() if self._replay else next(self._lines)
        self.record.append(item)
        self._chars += len(item[1])
        if len(self.record) > MAX_RECORD_LINES or self._chars > MAX_RECORD_CHARS:
            raise _RecordTooLong("unbalanced quote")
        return item[1]

    def start_record(self) -> None:
        self.record = []
        self._chars = 0

    def replay_rest(self) -> None:
        """Give back every line of the current record but its first, to be parsed again."""
        self._replay.extendleft(reversed(self.record[1:]))
        del self.record[1:]

    def first_content_line(self) -> str:
        """Peek at the first non-blank line (within the first 1000) without consuming it."""
        seen: list[tuple[int, str]] = []
        for item in self._lines:
            seen.append(item)
            if item[1].strip() or len(seen) >= 1000:
                break
        self._replay.extend(seen)
        return seen[-1][1] if seen else ""


class _FileReader:
    """One open file, turned into keys and rejects."""

    def __init__(self, f: TextIO, source: str, column: str | None) -> None:
        self._source = source
        self.rules = RowRules(source, column)
        self._rejects: list[Reject] = []
        self._lines = _LineSource(_physical_lines(f, source, self._rejects))

    def __iter__(self) -> Iterator[PatentKey | Reject]:
        _raise_field_limit()
        reader = csv.reader(self._lines, delimiter=_sniff(self._lines.first_content_line()), strict=True)
        while True:
            self._lines.start_record()
            try:
                item = self._row(next(reader))
            except StopIteration:
                break
            except (_RecordTooLong, csv.Error) as exc:
                # csv's "unexpected end of data" is a quote left open at the end of the file.
                item = self._malformed("unbalanced quote" if "end of data" in str(exc) else str(exc))
            if self._rejects:
                yield from self._drain()
            if item is not None:
                yield item
        yield from self._drain()

    def _drain(self) -> Iterator[Reject]:
        yield from self._rejects
        self._rejects.clear()

    def _malformed(self, detail: str) -> Reject:
        """Reject the record's first line alone and re-read the lines it swallowed."""
        self._lines.replay_rest()
        line, text = self._lines.record[0]
        return Reject(self._source, line, text.rstrip("\r\n")[:RAW_CHARS], f"malformed CSV row: {detail}")

    def _row(self, cells: list[str]) -> PatentKey | Reject | None:
        layout = self.rules.layout
        if layout is not None and len(self._lines.record) > 1 and any(
                "\n" in v or "\r" in v for v in used_cells(cells, layout.columns)):
            return self._malformed("unbalanced quote")  # a key never spans lines
        return self.rules.row(cells, self._lines.record[0][0])


def _sniff(line: str) -> str:
    # Excel writes ';' in locales with a decimal comma, and "Unicode Text" is tab-separated.
    counts = {d: line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


def _raise_field_limit() -> None:
    # The default (128 KiB) is below a legal line; our own record budget is the real cap.
    if csv.field_size_limit() < MAX_RECORD_CHARS + 16:
        csv.field_size_limit(MAX_RECORD_CHARS + 16)
