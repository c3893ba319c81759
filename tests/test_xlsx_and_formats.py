"""Analysts' own files: .xlsx workbooks read directly and streamed; other binary kinds refused in one line."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from openpyxl import Workbook

from downloader.cli import app as cli
from downloader.core.errors import InputError
from downloader.core.model import Kind, PatentKey, Reject
from downloader.inputs.reader import BLANK, check_inputs, read_inputs

from .support import cli_args, manifest, numbers, one_clear_line

ID1 = "077f4978-092c-4522-bc98-e8257a5c99f9"


def N(value: str) -> PatentKey:
    return PatentKey(Kind.NUMBER, value)


def workbook(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    """An .xlsx written with openpyxl's write-only mode, as exports are: one list of rows per sheet."""
    book = Workbook(write_only=True)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


def items(path: Path, column: str | None = None) -> list[object]:
    """Keys as themselves, rejects as (source, line, raw, reason)."""
    return [(r.source, r.line, r.raw, r.reason) if isinstance(r, Reject) else r for r in read_inputs([path], column)]


def test_xlsx_with_header_aliases_rejects_by_sheet_and_row(tmp_path):
    """PatSnap-style export: header alias, other columns, blank rows, bad or empty cells; rejects name FILE[Sheet]."""
    path = workbook(tmp_path / "export.xlsx", {"Results": [
        ["Title", "Publication Number", "Applicant"],
        ["Lamp", "cn104169186a", "ACME"],
        [],
        ["Hinge", "US-11205304-B2", "ACME"],
        ["Cap", "hello", "X"],
        ["No number here", None, "X"],
        ["Lamp", "CN104169186A", "dup"],
    ]})
    source = f"{path}[Results]"
    assert items(path) == [
        N("CN104169186A"), N("US11205304B2"),
        (source, 5, "hello", "not a patent number or patent id: 'hello'"),
        (source, 6, "No number here,,X", BLANK),
        N("CN104169186A"),  # de-duplicated by the state store, as for CSV
    ]


def test_xlsx_headerless_column_numbers_and_ids(tmp_path):
    """One headerless column: numbers, ids, and a number Excel stored as a number is read without ".0"."""
    path = workbook(tmp_path / "list.xlsx", {"Sheet1": [["US11205304B2"], [ID1.upper()], [20201234567.0]]})
    assert items(path) == [N("US11205304B2"), PatentKey(Kind.ID, ID1),
                           (f"{path}[Sheet1]", 3, "20201234567", "not a patent number or patent id: '20201234567'")]


def test_xlsx_cover_sheet_is_passed_over_and_column_option_works(tmp_path):
    """A first sheet holding the search query is skipped; --column picks a column by name."""
    path = workbook(tmp_path / "two.xlsx", {
        "Query": [["Search", "lamp AND hinge"], ["Date", "2024-05-01"]],
        "Patents": [["Family", "Pub No."], ["F1", "CN104169186A"], ["F2", "EP3456789B1"]],
    })
    assert items(path, column="Pub No.") == [N("CN104169186A"), N("EP3456789B1")]
    check_inputs([path], "Pub No.")


def test_xlsx_without_a_usable_sheet_is_one_clear_error(tmp_path):
    """No sheet with a known column or a column of numbers: InputError naming the sheets and --column."""
    path = workbook(tmp_path / "notes.xlsx", {"Notes": [["Meeting", "Tuesday"], ["a", "b"]]})
    with pytest.raises(InputError, match=r"no worksheet has .*sheets: Notes.*--column"):
        check_inputs([path])


def test_run_reads_an_xlsx_end_to_end(tmp_path, threaded_simulator, capsys):
    """`run export.xlsx`: every key asked once, rejects.csv names the sheet and row, the final line counts them."""
    values = numbers(40)
    rows: list[list[object]] = [["patent_number", "title"]] + [[v, "t"] for v in values] + [["bad!", "x"], [None, "y"]]
    path = workbook(tmp_path / "in.xlsx", {"Results": rows})
    out = tmp_path / "out"
    code = cli.main(cli_args(threaded_simulator, [path], out))
    assert code in (0, 1)
    assert len(manifest(out)) == len(set(values))
    with (out / "rejects.csv").open(newline="", encoding="utf-8") as f:
        rejects = list(csv.DictReader(f))
    assert [(r["source"], r["line"]) for r in rejects] == [(f"{path}[Results]", "42"), (f"{path}[Results]", "43")]
    assert "2 rejected rows" in capsys.readouterr().err


@pytest.fixture(scope="module")
def big_workbook(tmp_path_factory) -> Path:
    """100,000 patent numbers in one sheet, written in write-only mode (about 6 s, once)."""
    path = tmp_path_factory.mktemp("xlsx") / "big.xlsx"
    book = Workbook(write_only=True)
    sheet = book.create_sheet("Results")
    sheet.append(["Publication Number", "Title"])
    for i in range(100_000):
        sheet.append([f"CN{100_000_000 + i}A", "Lamp with adjustable arm"])
    book.save(path)
    return path


# Peak RSS from /proc (VmHWM): getrusage's ru_maxrss would include the parent's peak, inherited at fork.
_MEASURE = """
import json, re, sys
from downloader.inputs.reader import read_inputs
def peak_kb():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())[1])
rows = int(sys.argv[2])
before = peak_kb()
count = 0
for item in read_inputs([sys.argv[1]]):
    count += 1
    if count == rows:
        break
print(json.dumps({"count": count, "grew_mb": (peak_kb() - before) / 1024}))
"""


def _peak_growth(path: Path, rows: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(rows)], capture_output=True, text=True,
                          check=True, timeout=300)
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc")
def test_a_100k_row_workbook_streams_in_flat_memory(big_workbook):
    """Reading 100,000 rows grows peak memory no more than reading 1,000: rows are never held together.

    (openpyxl writes inline strings; a workbook saved by Excel also has a shared-string table,
    which openpyxl loads whole: some tens of bytes per distinct cell text, see inputs/xlsx.py.)
    """
    first = _peak_growth(big_workbook, 1_000)
    whole = _peak_growth(big_workbook, 100_000)
    assert whole["count"] == 100_000
    print(f"peak RSS growth: {first['grew_mb']:.1f} MB after 1,000 rows, {whole['grew_mb']:.1f} MB after 100,000")
    assert first["grew_mb"] > 1  # the measure sees openpyxl arrive: it is not blind
    assert whole["grew_mb"] - first["grew_mb"] < 10
    assert whole["grew_mb"] < 80


# --- other kinds of file, recognised from their first bytes -----------------------------------------------


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def _xls(path: Path) -> Path:
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504) + b"Workbook")
    return path


def _gzip(path: Path) -> Path:
    path.write_bytes(gzip.compress(b"patent_number\nCN104169186A\n"))
    return path


KINDS = {
    "xls": (_xls, "Excel 97–2003 workbook (.xls)"),
    "ods": (lambda p: _zip(p, {"mimetype": b"application/vnd.oasis.opendocument.spreadsheet",
                               "content.xml": b"<x/>"}), "OpenDocument spreadsheet (.ods)"),
    "parquet": (lambda p: p.write_bytes(b"PAR1" + bytes(100) + b"PAR1") and p, "Parquet file"),
    "zip": (lambda p: _zip(p, {"patents.csv": b"patent_number\nCN104169186A\n"}), "zip archive"),
    "pdf": (lambda p: p.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n") and p, "PDF document"),
    "docx": (lambda p: _zip(p, {"word/document.xml": b"<w/>", "[Content_Types].xml": b"<x/>"}), "Word document"),
    "gzip": (_gzip, "gzip-compressed file"),
    # `run /bin/ls` printed 200 characters of the program and advised --column.
    "elf": (lambda p: p.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(57) + b"\xe0a\x00pG\x02") and p,
            "compiled program or library (ELF)"),
    "png": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(40)) and p, "binary file"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_binary_kinds_are_named_with_what_to_do(tmp_path, kind, capsys):
    """Each kind: InputError naming it and what to do; the CLI answers exit 2 and one line, no bytes of it."""
    make, name = KINDS[kind]
    path = tmp_path / f"list.{kind}.csv"  # the extension does not matter: the first bytes do
    make(path)
    with pytest.raises(InputError) as caught:
        list(read_inputs([path]))
    message = str(caught.value)
    assert name in message and ("CSV" in message or "gunzip" in message) and "\n" not in message
    assert cli.main(["run", str(path), "--out", str(tmp_path / "out"), "--token", "t", "--api-key", "k",
                     "--api-base", "http://127.0.0.1:9"]) == 2
    line = one_clear_line(capsys.readouterr().err)
    assert name in line and "PK\x03" not in line and "\ufffd" not in line and len(line) < 300
    assert line.isprintable() and "not a CSV or .xlsx file" in line


def test_xlsx_without_openpyxl_says_how_to_get_it(tmp_path, monkeypatch):
    """openpyxl missing: the workbook is recognised and the error names the extra to install (or CSV)."""
    path = workbook(tmp_path / "in.xlsx", {"S": [["patent_number"], ["CN104169186A"]]})
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # import openpyxl now raises ImportError
    with pytest.raises(InputError, match=r"Excel workbook \(\.xlsx\).*patent-images\[xlsx\].*CSV"):
        check_inputs([path])


def test_text_files_are_still_csv(tmp_path):
    """Plain text, even starting with bytes that look binary-ish, stays CSV: no false alarms."""
    path = tmp_path / "in.csv"
    path.write_text("PK,title\nCN104169186A,x\n", encoding="utf-8")  # "PK" but no zip signature
    assert list(read_inputs([path], column="PK")) == [N("CN104169186A")]


def test_unicode_text_with_nul_bytes_is_still_csv(tmp_path):
    """Excel's "Unicode Text" (UTF-16 with its BOM) is half NUL bytes, yet text: read, not refused as binary."""
    path = tmp_path / "in.txt"
    path.write_bytes("patent_number\r\nCN104169186A\r\n".encode("utf-16"))
    assert list(read_inputs([path])) == [N("CN104169186A")]
