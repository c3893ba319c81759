"""Reading input CSVs: layout detection, normalization, rejects, and streaming."""

from __future__ import annotations

import inspect
import itertools
import tracemalloc
from pathlib import Path

import pytest

from downloader.core.errors import InputError
from downloader.core.model import Kind, PatentKey, Reject
from downloader.inputs.reader import BLANK, check_inputs, classify_value, looks_like_key, read_inputs

ID1 = "077f4978-092c-4522-bc98-e8257a5c99f9"
ID2 = "6e5c550d-28d6-4cf1-a265-b5488996b641"


def N(value: str) -> PatentKey:
    return PatentKey(Kind.NUMBER, value)


def I(value: str) -> PatentKey:  # noqa: E743 - reads as the kind it builds
    return PatentKey(Kind.ID, value)


def _write(tmp_path: Path, content: str | bytes, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _read(tmp_path: Path, content: str | bytes, column: str | None = None) -> list[object]:
    """Keys as themselves, rejects as (line, reason) so tables stay short."""
    path = _write(tmp_path, content)
    out: list[object] = []
    for item in read_inputs([path], column):
        out.append((item.line, item.reason) if isinstance(item, Reject) else item)
    return out


@pytest.mark.parametrize("header", ["patent_number", "PN", " pn ", "Publication_Number", "publication number",
                                    "Patent Number", "PATENT-NUMBER"])
def test_number_header_aliases(tmp_path: Path, header: str) -> None:
    """Every alias of patent_number is recognized, in any case and spacing."""
    assert _read(tmp_path, f"{header},title\nCN104169186A,Lamp\n") == [N("CN104169186A")]


@pytest.mark.parametrize(("content", "expected"), [
    pytest.param(b"\xef\xbb\xbfpatent_number\r\nUS11205304B2\r\n", [N("US11205304B2")], id="bom-crlf"),
    pytest.param(b"\xef\xbb\xbfUS11205304B2\n", [N("US11205304B2")], id="bom-headerless"),
    pytest.param("Patent_ID\n" + ID1.upper() + "\n", [I(ID1)], id="id-header"),
    pytest.param("patent id;title\n" + ID1 + ";x\n", [I(ID1)], id="id-header-semicolons"),
    pytest.param("pn\ttitle\nUS11205304B2\tx\n", [N("US11205304B2")], id="tabs"),
    pytest.param("pn\rUS11205304B2\rCN104169186A\r", [N("US11205304B2"), N("CN104169186A")], id="cr-only"),
    pytest.param("US11205304B2\ncn104169186a\n" + ID1 + "\n",
                 [N("US11205304B2"), N("CN104169186A"), I(ID1)], id="headerless-first-row-is-data"),
    pytest.param(ID2 + "\nUS11205304B2\n", [I(ID2), N("US11205304B2")], id="headerless-starting-with-id"),
    pytest.param("\n\n  \nUS11205304B2,\n", [N("US11205304B2")], id="headerless-after-blanks-trailing-comma"),
    pytest.param(f"patent_number,patent_id\nCN104169186A,{ID1}\nUS11205304B2,\n,{ID2.upper()}\n",
                 [I(ID1), N("US11205304B2"), I(ID2)], id="both-columns-id-preferred"),
    pytest.param("pn\n\nCN104169186A\n   \n\"\"\n\nUS11205304B2\n\n",
                 [N("CN104169186A"), N("US11205304B2")], id="blank-lines-and-empty-cells-skipped"),
    pytest.param("pn,title\nCN104169186A,x\n,no number\nUS11205304B2\n, \n",
                 [N("CN104169186A"), (3, BLANK), N("US11205304B2")], id="empty-key-cell-rejected-blank-line-skipped"),
    pytest.param("title,pn\nLamp,CN104169186A\nShort row\n", [N("CN104169186A"), (3, BLANK)],
                 id="short-row-without-the-key-column-rejected"),
    pytest.param(f"patent_number,patent_id,title\n,,Lamp\n,{ID1},x\n", [(2, BLANK), I(ID1)],
                 id="both-key-cells-empty-rejected"),
    pytest.param("pn,title\nCN104169186A,a\npn,title\nUS11205304B2,b\n",
                 [N("CN104169186A"), N("US11205304B2")], id="repeated-header-skipped"),
    pytest.param("pn\n", [], id="header-only"),
    pytest.param("", [], id="empty-file"),
])
def test_layouts(tmp_path: Path, content: str | bytes, expected: list[object]) -> None:
    """Header, headerless, both columns, delimiters and line endings are all read."""
    assert _read(tmp_path, content) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("  us 11205304 b2 ", N("US11205304B2")),
    ("US-11205304-B2", N("US11205304B2")),
    ("\u00a0CN104169186A\u00a0", N("CN104169186A")),
    ("'US5123456", N("US5123456")),
    ('="CN303649457S"', N("CN303649457S")),
    ("“EP3456789B1”", N("EP3456789B1")),
    ("WO 2020/123456 A1", N("WO2020123456A1")),
    ("JP2019-123456A", N("JP2019123456A")),
    ("ＣＮ１０４１６９１８６Ａ", N("CN104169186A")),
    ("USD900123S", N("USD900123S")),
    ("CN3307359D", N("CN3307359D")),
    ("US11205304", N("US11205304")),
    (ID1.upper(), I(ID1)),
    (f"\t{ID1} ", I(ID1)),
    ("hello", "not a patent number or patent id: 'hello'"),
    ("not-a-patent", "not a patent number or patent id: 'not-a-patent'"),
    ("CN123", "not a patent number or patent id: 'CN123'"),
    ("12345678", "not a patent number or patent id: '12345678'"),
    ("CN201910123456.7", "not a patent number or patent id: 'CN201910123456.7'"),
    ("CN104169186A CN303649457S", "several values in one cell"),
    (f"CN104169186A;{ID2}", "several values in one cell"),
    ("CN10416\ufffd9186A", "not valid UTF-8"),
    ("A" * 70, "value too long (70 chars)"),
    ("'", "empty value"),
])
def test_classify_value(raw: str, expected: PatentKey | str) -> None:
    """Values are trimmed, upper-cased and de-hyphenated; ids lower-cased; junk gets a reason."""
    assert classify_value(raw) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("US11205304B2", True), (ID1, True), ("numbers", False), ("patent_number", False), ("", False)])
def test_looks_like_key(text: str, expected: bool) -> None:
    """Header detection tells data from names."""
    assert looks_like_key(text) is expected


@pytest.mark.parametrize(("content", "expected"), [
    pytest.param("pn,title\nhello,x\nCN1,y\nUS11205304B2,z\n",
                 [(2, "not a patent number or patent id: 'hello'"),
                  (3, "not a patent number or patent id: 'CN1'"), N("US11205304B2")], id="bad-values"),
    pytest.param("US11205304B2\nCN104169186A,EP3456789B1\nJP2019123456A\n",
                 [N("US11205304B2"), (2, "several values in one row"), N("JP2019123456A")],
                 id="headerless-several-values"),
    pytest.param(b"pn\nCN\xff104169186A\nUS11205304B2\n",
                 [(2, "not valid UTF-8"), N("US11205304B2")], id="not-utf8"),
    pytest.param("pn\n" + "A1" * 40 + "\n", [(2, "value too long (80 chars)")], id="too-long-value"),
    pytest.param('pn,title\nCN104169186A,"two\nlines"\nUS11205304B2,x\nhello,y\n',
                 [N("CN104169186A"), N("US11205304B2"), (5, "not a patent number or patent id: 'hello'")],
                 id="line-numbers-are-physical"),
    pytest.param('pn,title\n"CN104169186A,x\nUS11205304B2,y\nEP3456789B1,z\n',
                 [(2, "malformed CSV row: unbalanced quote"), N("US11205304B2"), N("EP3456789B1")],
                 id="unbalanced-quote-to-eof-costs-one-row"),
    pytest.param('pn,title\nCN104169186A,"x\nUS11205304B2,y\nEP3456789B1,"z"\nKR102123456B1,w\n',
                 [(2, "malformed CSV row: ',' expected after '\"'"), N("US11205304B2"),
                  N("EP3456789B1"), N("KR102123456B1")], id="unbalanced-quote-in-title-costs-one-row"),
    pytest.param('US11205304B2\n"CN104169186A\nEP3456789B1"\nKR102123456B1\n',
                 [N("US11205304B2"), (2, "malformed CSV row: unbalanced quote"), N("EP3456789B1"),
                  N("KR102123456B1")], id="key-spanning-lines"),
    pytest.param("pn\n" + '"CN1\n' + "US11205304B2\n" * 150,
                 [(2, "malformed CSV row: unbalanced quote")] + [N("US11205304B2")] * 150,
                 id="unbalanced-quote-past-the-line-budget"),
])
def test_rejects(tmp_path: Path, content: str | bytes, expected: list[object]) -> None:
    """Bad rows become rejects with a reason and their physical line; the rest is still read."""
    assert _read(tmp_path, content) == expected


def test_reject_carries_source_and_truncated_raw(tmp_path: Path) -> None:
    """`source` is the path as given and `raw` is cut to 200 characters."""
    path = _write(tmp_path, "pn\n" + "X" * 500 + "\n")
    [reject] = read_inputs([str(path)])
    assert reject == Reject(str(path), 2, "X" * 200, "value too long (500 chars)")


def test_a_10mb_line_is_one_reject_in_bounded_memory(tmp_path: Path) -> None:
    """A 10 MB line of garbage is rejected alone, without holding it, and later rows still count."""
    path = _write(tmp_path, b"pn\nCN104169186A\n" + b"x" * 10_000_000 + b"\r\nUS11205304B2\n")
    tracemalloc.start()
    try:
        items = list(read_inputs([path]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert items == [N("CN104169186A"), Reject(str(path), 3, "x" * 200, "line too long (10000000 bytes)"),
                     N("US11205304B2")]
    assert peak < 8_000_000


def test_reading_is_lazy_and_streams(tmp_path: Path) -> None:
    """read_inputs is a generator, and the first rows of a big file come without reading it all."""
    rows = "".join(f"CN{100000000 + i}A,{'a long realistic title of the invention ' * 2}\n" for i in range(200_000))
    path = _write(tmp_path, "patent_number,title\n" + rows)
    assert path.stat().st_size > 15_000_000
    stream = read_inputs([tmp_path / "missing.csv", path])
    assert inspect.isgenerator(stream)  # nothing opened yet, so no error yet
    tracemalloc.start()
    try:
        first = list(itertools.islice(read_inputs([path]), 3))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert first == [N("CN100000000A"), N("CN100000001A"), N("CN100000002A")]
    assert peak < 1_000_000


def test_files_are_read_in_order(tmp_path: Path) -> None:
    """Several inputs are read one after the other, rejects naming their own file."""
    a = _write(tmp_path, "pn\nCN104169186A\nbad1\n", "a.csv")
    b = _write(tmp_path, "US11205304B2\n", "b.csv")
    assert list(read_inputs([a, str(b)])) == [
        N("CN104169186A"), Reject(str(a), 3, "bad1", "not a patent number or patent id: 'bad1'"),
        N("US11205304B2")]


def test_utf16_excel_unicode_text(tmp_path: Path) -> None:
    """Excel's "Unicode Text" export (UTF-16 with BOM, tab-separated) is read too."""
    path = tmp_path / "u16.txt"
    path.write_text("Publication Number\tTitle\r\nCN104169186A\t灯\r\n", encoding="utf-16")
    assert list(read_inputs([path])) == [N("CN104169186A")]


@pytest.mark.parametrize(("content", "column", "expected"), [
    pytest.param(f"title,My Numbers\nfoo,CN104169186A\nbar,{ID1}\n", "my numbers",
                 [N("CN104169186A"), I(ID1)], id="named-column-classified-per-value"),
    pytest.param("patent_number,family\nCN104169186A,US11205304B2\n", "FAMILY", [N("US11205304B2")],
                 id="column-overrides-detection"),
    pytest.param("numbers\nCN104169186A\n", "Numbers", [N("CN104169186A")], id="single-unknown-header"),
    pytest.param("Publication_Number\nCN104169186A\n", "publication number", [N("CN104169186A")],
                 id="separators-ignored"),
])
def test_column_option(tmp_path: Path, content: str, column: str, expected: list[object]) -> None:
    """--column picks a header cell case-insensitively."""
    assert _read(tmp_path, content, column) == expected


@pytest.mark.parametrize(("content", "column", "message"), [
    pytest.param("title,abstract\nfoo,bar\n", None,
                 "no patent_number/pn/publication_number or patent_id column; name one with --column "
                 "(columns are: title, abstract)", id="several-unknown-columns"),
    pytest.param("numbers\nCN104169186A\n", None, "first row 'numbers' is neither a known column name",
                 id="single-unknown-header"),
    pytest.param("pn,title\nCN104169186A,x\n", "number", "column 'number' not found in ", id="unknown-column"),
    pytest.param("CN104169186A\n", "pn", "is the file headerless?", id="column-on-headerless-file"),
])
def test_layout_errors(tmp_path: Path, content: str, column: str | None, message: str) -> None:
    """A file without a usable column is an InputError naming the file, from both entry points."""
    path = _write(tmp_path, content)
    with pytest.raises(InputError, match="in.csv") as raised:
        list(read_inputs([path], column))
    assert message in str(raised.value)
    with pytest.raises(InputError, match="in.csv"):
        check_inputs([path], column)


@pytest.mark.parametrize(("make", "message"), [
    pytest.param(lambda p: p / "nope.csv", "input file not found: ", id="missing"),
    pytest.param(lambda p: p, "input is a directory, not a CSV file: ", id="directory"),
])
def test_unreadable_paths(tmp_path: Path, make: object, message: str) -> None:
    """A missing path or a directory is an InputError with the path, when reached or checked."""
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(InputError, match=message + str(path)):
        list(read_inputs([path]))
    with pytest.raises(InputError, match=message):
        check_inputs([_write(tmp_path, "pn\nCN104169186A\n"), path])


def test_check_inputs_accepts_good_files_and_refuses_none(tmp_path: Path) -> None:
    """check_inputs passes good files (even empty ones) and refuses an empty list."""
    check_inputs([_write(tmp_path, "pn\nCN104169186A\n", "a.csv"), _write(tmp_path, "", "b.csv")])
    with pytest.raises(InputError, match="no input files"):
        check_inputs([])


@pytest.mark.parametrize(("content", "expected"), [
    pytest.param("pn\r\nCN12345678901234\r\nhello\r\n",  # 16 + CRLF: the CR lands on the cap
                 [N("CN12345678901234"), (3, "not a patent number or patent id: 'hello'")],
                 id="crlf-split-at-the-cap"),
    pytest.param("pn\r\nCN123456789012345\r\nhello\r\n",
                 [(2, "line too long (17 bytes)"), (3, "not a patent number or patent id: 'hello'")],
                 id="just-over-the-cap"),
    pytest.param("pn\r\n" + "x" * 32 + "\r\nhello\r\n",  # the last chunk ends on a CR at the cap
                 [(2, "line too long (32 bytes)"), (3, "not a patent number or patent id: 'hello'")],
                 id="long-line-crlf-split"),
    pytest.param("pn\n" + "é" * 20 + "\nUS11205304B2\n",
                 [(2, "line too long (40 bytes)"), N("US11205304B2")], id="size-in-utf8-bytes"),
])
def test_line_cap_keeps_line_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str,
                                     expected: list[object]) -> None:
    """At the line cap (shrunk here to 16 characters) CRLF pairs stay one line break."""
    monkeypatch.setattr("downloader.inputs.reader.MAX_LINE_CHARS", 16)
    assert _read(tmp_path, content) == expected
