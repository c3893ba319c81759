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
import re
import unicodedata
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TextIO

from downloader.core.errors import InputError
from downloader.core.model import Kind, PatentKey, Reject
from downloader.inputs import formats

MAX_LINE_CHARS = 1 << 20  # a physical line longer than this is rejected unread
MAX_RECORD_LINES = 100  # a quoted cell spanning more lines than this is an unbalanced quote
MAX_RECORD_CHARS = 2 * MAX_LINE_CHARS
MAX_VALUE_CHARS = 64
RAW_CHARS = 200  # how much of a bad row is kept in its Reject
BLANK = "blank: the patent number / patent id cell is empty"  # a row with other cells filled

_NUMBER_HEADERS = frozenset({"patent_number", "pn", "publication_number"})
_ID_HEADERS = frozenset({"patent_id"})
_EOL = ("\n", "\r")
_JUNK = " \t\"'`‘’“”„«»\u200b\u200c\u200d\u2060\ufeff"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Two letters of country, then letters/digits, with at least four digits somewhere.
_NUMBER = re.compile(r"(?=(?:[^0-9]*[0-9]){4})[A-Z]{2}[A-Z0-9]{2,24}")
_SEPARATORS = re.compile(r"[\s\-/,\u200b\u200c\u200d\u2060]+")
_SPLIT = re.compile(r"[\s/,;|]+")
_HEADER_SEPARATORS = re.compile(r"[\s_\-]+")


class _RecordTooLong(Exception):
    """A record ran past MAX_RECORD_LINES / MAX_RECORD_CHARS: an unbalanced quote."""


def classify_value(text: str) -> PatentKey | str:
    """Normalize one cell: a `PatentKey`, or the reason (a str) why it is not one.

    UUIDs become lower-cased patent ids; anything else must be a publication number, which is
    upper-cased with spaces, hyphens, slashes and commas removed (`US-11205304-B2`,
    `WO 2020/123456 A1`) and stray quotes, Excel's `="..."` and full-width forms undone.
    """
    if _NUMBER.fullmatch(text):  # the common case: already normal
        return PatentKey(Kind.NUMBER, text)
    value = _clean(text)
    if not value:
        return "empty value"
    if "\ufffd" in value:
        return "not valid UTF-8"
    if len(value) > MAX_VALUE_CHARS:
        return f"value too long ({len(value)} chars)"
    if _UUID.fullmatch(value):
        return PatentKey(Kind.ID, value.lower())
    if _SPLIT.search(value) and _several_keys(value):
        return "several values in one cell"
    number = _as_number(value)
    if number is None:
        return f"not a patent number or patent id: {value[:40]!r}"
    return PatentKey(Kind.NUMBER, number)


def looks_like_key(text: str) -> bool:
    """True when `text` is a patent number or id (so a first row holding it is data, not a header)."""
    return isinstance(classify_value(text), PatentKey)


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
            from downloader.inputs import xlsx  # imports this module

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
        from downloader.inputs import xlsx  # imports this module

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


def _clean(text: str) -> str:
    value = text.strip()
    if not value.isascii():
        value = unicodedata.normalize("NFKC", value).strip()  # full-width forms from CJK input
    return value.removeprefix("=").strip(_JUNK)


def _as_number(value: str) -> str | None:
    number = _SEPARATORS.sub("", value.upper())
    return number if _NUMBER.fullmatch(number) else None


def _several_keys(value: str) -> bool:
    # "CN104169186A CN303649457S" is two numbers, not one to be glued together; "US 11205304 B2"
    # is one, because its parts are not numbers on their own.
    parts = [p for p in _SPLIT.split(value) if p]
    return len(parts) > 1 and all(_UUID.fullmatch(p) or _as_number(p) for p in parts)


def _header_key(cell: str) -> str:
    return _HEADER_SEPARATORS.sub("_", cell.strip().strip(_JUNK).lower())


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


@dataclass(frozen=True, slots=True)
class _Layout:
    """Which cells hold the key: header columns by preference, or () for a headerless column."""

    columns: tuple[int, ...]
    names: tuple[str, ...]  # the header's normalized names, to skip the header when repeated


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
                "\n" in v or "\r" in v for v in _used_cells(cells, layout.columns)):
            return self._malformed("unbalanced quote")  # a key never spans lines
        return self.rules.row(cells, self._lines.record[0][0])


class RowRules:
    """The column rules every input format shares, applied one row (a list of cell texts) at a time.

    The first non-blank row decides the layout (a header naming the column(s), or one headerless
    column of values); then each row gives a `PatentKey`, a `Reject`, or None (a blank line, the
    header, the header repeated).
    """

    def __init__(self, source: str, column: str | None) -> None:
        self.source = source
        self.column = column
        self.layout: _Layout | None = None

    def row(self, cells: list[str], line: int) -> PatentKey | Reject | None:
        """Classify the row at `line` (1-based, as the file or sheet numbers it)."""
        if self.layout is None:
            if not any(c.strip() for c in cells):
                return None
            self.layout = _detect_layout(cells, self.column, self.source)
            if self.layout.columns:
                return None  # the header itself
        used = _used_cells(cells, self.layout.columns)
        if not used:
            if not any(c.strip() for c in cells):
                return None  # an entirely blank line
            return Reject(self.source, line, ",".join(cells)[:RAW_CHARS], BLANK)
        if len(used) > 1:
            return Reject(self.source, line, ",".join(used)[:RAW_CHARS], "several values in one row")
        key = classify_value(used[0])
        if isinstance(key, PatentKey):
            return key
        if _header_key(used[0]) in self.layout.names:
            return None  # the header repeated, as in concatenated exports
        return Reject(self.source, line, used[0][:RAW_CHARS], key)


def _used_cells(cells: list[str], columns: tuple[int, ...]) -> list[str]:
    if not columns:
        return [c for c in cells if c.strip()]
    for i in columns:  # patent_id first: PatSnap ignores the number when both are sent
        if i < len(cells) and cells[i].strip():
            return [cells[i]]
    return []


def _detect_layout(cells: list[str], column: str | None, source: str) -> _Layout:
    names = tuple(_header_key(c) for c in cells)
    if column is not None:
        return _Layout((_find_column(cells, names, column, source),), names)
    ids = [i for i, n in enumerate(names) if n in _ID_HEADERS]
    numbers = [i for i, n in enumerate(names) if n in _NUMBER_HEADERS]
    if ids or numbers:
        return _Layout(tuple(ids[:1] + numbers[:1]), names)
    filled = [c for c in cells if c.strip()]
    if len(filled) == 1 and looks_like_key(filled[0]):
        return _Layout((), ())
    if len(filled) == 1:
        raise InputError(f"{source}: first row {_one_line(filled[0])!r} is neither a known column name "
                         "(patent_number, pn, publication_number, patent_id) nor a patent number or id; "
                         "name the column with --column")
    raise InputError(f"{source}: no patent_number/pn/publication_number or patent_id column; "
                     f"name one with --column (columns are: {_listing(cells)})")


def _find_column(cells: list[str], names: tuple[str, ...], column: str, source: str) -> int:
    wanted = column.strip().casefold()
    for i, cell in enumerate(cells):
        if cell.strip().casefold() == wanted:
            return i
    if _header_key(column) in names:  # "publication number" finds "Publication_Number"
        return names.index(_header_key(column))
    hint = " (the first row looks like data: is the file headerless?)" if any(
        looks_like_key(c) for c in cells if c.strip()) else ""
    raise InputError(f"column {column!r} not found in {source}; columns are: {_listing(cells)}{hint}")


def _listing(cells: list[str]) -> str:
    shown = ", ".join(_one_line(c)[:40] for c in cells[:20])
    return shown + (", ..." if len(cells) > 20 else "")


def _one_line(text: str) -> str:
    return " ".join(text.split())  # error messages stay on one line


def _sniff(line: str) -> str:
    # Excel writes ';' in locales with a decimal comma, and "Unicode Text" is tab-separated.
    counts = {d: line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


def _raise_field_limit() -> None:
    # The default (128 KiB) is below a legal line; our own record budget is the real cap.
    if csv.field_size_limit() < MAX_RECORD_CHARS + 16:
        csv.field_size_limit(MAX_RECORD_CHARS + 16)
