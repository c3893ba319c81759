"""Excel workbooks (.xlsx) as inputs, streamed with openpyxl's read-only mode (the optional `xlsx` extra).

PatSnap and the patent offices export result lists as workbooks, so analysts need not convert
them. The same column rules as for CSV apply (`rows.RowRules`): header aliases or `--column`,
a headerless single column, one `Reject` per unusable row, its source written `FILE[Sheet]`
and its line the sheet's row number. The first worksheet whose first non-blank row gives a
layout is read; earlier sheets without one (a cover sheet, the search query) are passed over,
and a workbook with no such sheet is refused like a CSV file without a usable column.

Memory: read-only mode parses the sheet's XML as it goes, so rows are never held together.
What openpyxl does keep is the workbook's shared-string table: the text of each distinct cell,
about 80 bytes a row of patent numbers (some 80 MB for a million), instead of the gigabytes
a fully loaded workbook of that size would take.
"""

from __future__ import annotations

import datetime
import zipfile
from collections.abc import Iterator
from typing import Any

from downloader.core.errors import InputError
from downloader.core.model import PatentKey, Reject
from downloader.inputs.rows import RowRules

INSTALL = "pip install 'patent-images[xlsx]'"


def check(source: str, column: str | None) -> None:
    """Fail fast: the workbook opens and one of its sheets has a usable column (reads only up to there)."""
    for _ in _sheet_rows(source, column, stop_at_layout=True):
        pass


def read(source: str, column: str | None) -> Iterator[PatentKey | Reject]:
    """Yield a `PatentKey` or a `Reject` for each row of the workbook's list sheet, in order."""
    yield from _sheet_rows(source, column, stop_at_layout=False)


def _sheet_rows(source: str, column: str | None, stop_at_layout: bool) -> Iterator[PatentKey | Reject]:
    workbook = _open(source)
    try:
        tried = []
        for sheet in workbook.worksheets:
            rules = RowRules(f"{source}[{sheet.title}]", column)
            rows = _rows(sheet)
            found, first = _first_layout(rules, rows)
            if not found:
                tried.append(sheet.title)
                continue
            if stop_at_layout:
                return
            if first is not None:
                yield first
            for line, cells in rows:
                item = rules.row(cells, line)
                if item is not None:
                    yield item
            return
        raise InputError(f"{source}: no worksheet has a patent_number/pn/publication_number or patent_id column "
                         f"or a column of patent numbers (sheets: {', '.join(tried) or 'none'}); name the column "
                         "with --column, or save the list as CSV")
    finally:
        workbook.close()


def _first_layout(rules: RowRules, rows: Iterator[tuple[int, list[str]]]) -> tuple[bool, PatentKey | Reject | None]:
    """Feed rows until the layout is known: (True, the first row's item or None for a header), else (False, None)."""
    for line, cells in rows:
        if not any(c.strip() for c in cells):
            continue
        try:
            return True, rules.row(cells, line)
        except InputError:
            return False, None  # this sheet's first row is neither a header nor a key: try the next sheet
    return False, None


def _rows(sheet: Any) -> Iterator[tuple[int, list[str]]]:
    """(row number, cell texts) for each row; openpyxl yields () for an empty row."""
    start = sheet.min_row or 1
    for offset, values in enumerate(sheet.iter_rows(values_only=True)):
        yield start + offset, [_text(v) for v in values]


def _text(value: object) -> str:
    """A cell as the text a person sees: numbers without a spurious ".0", dates as ISO dates."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).upper()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    return str(value)


def _open(source: str) -> Any:
    try:
        import openpyxl
    except ImportError:
        raise InputError(f"{source} is an Excel workbook (.xlsx); reading it needs openpyxl: {INSTALL}, "
                         "or save it as CSV") from None
    try:
        return openpyxl.load_workbook(source, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise InputError(f"{source}: cannot read this workbook ({type(exc).__name__}: {exc}); "
                         "open it in Excel and save it again, or as CSV") from None
