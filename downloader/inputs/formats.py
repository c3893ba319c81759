"""What kind of file an input is, from its first bytes, and what to tell a person who gave us the wrong kind.

Analysts export lists from PatSnap, patent office sites, spreadsheets and notebooks, and hand
over whatever they have. Text (CSV, TSV, Excel's "Unicode Text") is read as CSV; an `.xlsx`
workbook is read directly (`inputs.xlsx`, with the optional openpyxl); anything else recognised
is refused with exit 2 and one line naming the kind and what to do, never its bytes. A file that
is no text at all (a program, an image, an archive we do not know: NUL bytes or control characters
in its first block, no UTF-16/32 byte-order mark) is refused the same way.
"""

from __future__ import annotations

import codecs
import os
import zipfile
from dataclasses import dataclass

from downloader.core.errors import InputError

_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")
_ODS_MIME = b"application/vnd.oasis.opendocument.spreadsheet"
_TO_CSV = "save it as CSV (or .xlsx) and run again"
_HEAD_BYTES = 4096  # how much is looked at to tell text from a binary file
_UNICODE_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Control characters that never appear in a text export (tab, newlines, form feed and ESC may).
_BINARY_BYTES = frozenset(range(32)) - {9, 10, 12, 13, 27}
_PROGRAMS = {b"\x7fELF": "a compiled program or library (ELF)", b"MZ": "a Windows program (.exe or .dll)",
             b"\xcf\xfa\xed\xfe": "a compiled program (Mach-O)", b"\xca\xfe\xba\xbe": "a Java class or Mach-O program"}


@dataclass(frozen=True, slots=True)
class Kind:
    """A recognised kind of file: `readable` ones are read, the others refused with `advice`."""

    name: str
    readable: bool
    advice: str = ""


CSV = Kind("CSV text", True)
XLSX = Kind("an Excel workbook (.xlsx)", True)


def sniff(source: str) -> Kind:
    """The kind of the file at `source`, from its first bytes (text and non-regular files are CSV)."""
    if not os.path.isfile(source):
        return CSV  # a pipe or /dev/stdin cannot be read twice: taken as text
    try:
        with open(source, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError:
        return CSV  # the reader says why it cannot read it
    if head.startswith(_ZIP):
        return _zip_kind(source)
    if head.startswith(_OLE2):
        return Kind("an Excel 97–2003 workbook (.xls) or another Office 97 document", False,
                    "open it in Excel or LibreOffice and save it as CSV or .xlsx, then run again")
    if head.startswith(b"PAR1"):
        return Kind("a Parquet file", False, "write the column out as CSV (e.g. DuckDB: COPY (SELECT "
                    "patent_number FROM 'file.parquet') TO 'file.csv'), then run again")
    if head.startswith(b"%PDF"):
        return Kind("a PDF document", False, "export the list from where it came as CSV or .xlsx, then run again")
    if head.startswith(b"\x1f\x8b"):
        return Kind("a gzip-compressed file", False, "decompress it first (gunzip FILE), then run again")
    return _binary_kind(head) or CSV


def _binary_kind(head: bytes) -> Kind | None:
    """A Kind for a head of bytes that is no text, else None."""
    if head.startswith(_UNICODE_BOMS):
        return None  # Excel's "Unicode Text": NUL bytes are half of every character
    advice = "give the CSV or .xlsx file that lists the patent numbers"
    for magic, name in _PROGRAMS.items():
        if head.startswith(magic) and (magic != b"MZ" or _is_binary(head)):
            return Kind(name, False, advice)
    return Kind("a binary file", False, advice) if _is_binary(head) else None


def _is_binary(head: bytes) -> bool:
    """NUL bytes, or more than a few control characters: no text export looks like that."""
    return b"\0" in head or sum(byte in _BINARY_BYTES for byte in head) > max(4, len(head) // 100)


def refuse(source: str, kind: Kind) -> InputError:
    """The one-line error for a file that cannot be read as a list of patents."""
    return InputError(f"{source} is {kind.name}, not a CSV or .xlsx file: {kind.advice}")


def _zip_kind(source: str) -> Kind:
    try:
        with zipfile.ZipFile(source) as archive:
            names = set(archive.namelist())
            mime = archive.read("mimetype")[:100] if "mimetype" in names else b""
    except (zipfile.BadZipFile, OSError, KeyError):
        return Kind("a damaged zip archive", False, "check the file, or export it again as CSV")
    if "xl/workbook.xml" in names:
        return XLSX
    if mime.startswith(_ODS_MIME):
        return Kind("an OpenDocument spreadsheet (.ods)", False,
                    "in LibreOffice use File > Save As… CSV or Excel 2007-365 (.xlsx), then run again")
    if "word/document.xml" in names:
        return Kind("a Word document (.docx)", False, "put the list in a spreadsheet and " + _TO_CSV)
    return Kind("a zip archive", False, "unzip it and give the CSV or .xlsx file inside")
