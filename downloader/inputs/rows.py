"""The column and value rules every input format shares: which cell holds the key, and what a key is.

A row is a list of cell texts (from a CSV record or a worksheet row); `RowRules` turns each into a
`PatentKey`, a `Reject` or nothing (a blank line, the header). `reader` (CSV text) and `xlsx`
(workbooks) both use it, and neither imports the other.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from downloader.core.errors import InputError
from downloader.core.model import Kind, PatentKey, Reject

MAX_VALUE_CHARS = 64
RAW_CHARS = 200  # how much of a bad row is kept in its Reject
BLANK = "blank: the patent number / patent id cell is empty"  # a row with other cells filled

_NUMBER_HEADERS = frozenset({"patent_number", "pn", "publication_number"})
_ID_HEADERS = frozenset({"patent_id"})
_JUNK = " \t\"'`‘’“”„«»\u200b\u200c\u200d\u2060\ufeff"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Two letters of country, then letters/digits, with at least four digits somewhere.
_NUMBER = re.compile(r"(?=(?:[^0-9]*[0-9]){4})[A-Z]{2}[A-Z0-9]{2,24}")
_SEPARATORS = re.compile(r"[\s\-/,\u200b\u200c\u200d\u2060]+")
_SPLIT = re.compile(r"[\s/,;|]+")
_HEADER_SEPARATORS = re.compile(r"[\s_\-]+")


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


@dataclass(frozen=True, slots=True)
class _Layout:
    """Which cells hold the key: header columns by preference, or () for a headerless column."""

    columns: tuple[int, ...]
    names: tuple[str, ...]  # the header's normalized names, to skip the header when repeated


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
        used = used_cells(cells, self.layout.columns)
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


def used_cells(cells: list[str], columns: tuple[int, ...]) -> list[str]:
    """The non-blank cells that may hold the key: the first filled one of `columns`, or all (headerless)."""
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
