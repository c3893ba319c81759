"""The manifest's fast lines are byte for byte what csv.writer and json.dumps write, whatever the values hold."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random

import pytest

from downloader.outputs import _json_line, plain_csv_line

TRICKY = ["", " ", "a,b", 'say "hi"', "line\nbreak", "carriage\rreturn", "tab\there", "ünïcødé", "'", ";", "\\",
          "http://cdn/x.png?sign=q%3Da%26b&response-expires=Mon%2C%2030%20Nov", "images/ab/c/US1_0001.png", "123"]


def _csv(values: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue()


@pytest.mark.parametrize("values", [[v] for v in TRICKY] + [["a"] * 10, [""] * 10, ["", "x"], ["x", ""]])
def test_each_tricky_value(values):
    line = plain_csv_line(values)
    assert line is None or line == _csv(values)


def test_random_rows_match_csv_writer_and_plain_rows_take_the_fast_path():
    rng = random.Random(7)
    fast = 0
    for _ in range(5000):
        values = [rng.choice(TRICKY) for _ in range(10)]
        line = plain_csv_line(values)
        if line is not None:
            fast += 1
            assert line == _csv(values), values
        elif not any(c in "".join(values) for c in ',"\r\n'):
            pytest.fail(f"a row needing no quotes was sent to csv.writer: {values}")
    assert fast > 100


def test_the_readme_explains_every_manifest_column_with_a_real_demo_row():
    """README's column table names each manifest column, in order, once; its example row is a manifest
    line of a demo run whose values are the table's examples (`path`: a signed URL, not a file)."""
    import re
    from pathlib import Path

    from downloader.core.naming import image_path
    from downloader.outputs import MANIFEST_COLUMNS
    from downloader.simulator import SimulatorConfig, Universe

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("| column | holds | example |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split(" | ") for line in table.strip().splitlines()[1:]]
    assert tuple(row[0].strip("| `") for row in rows) == MANIFEST_COLUMNS
    example = re.search(r"The whole row in manifest\.csv[^\n]*\n\n```\n(.+)\n```", readme)
    assert example is not None
    (values,) = list(csv.reader([example[1]]))
    row = dict(zip(MANIFEST_COLUMNS, values, strict=True))
    for (column, _, shown), value in zip(rows, values, strict=True):
        shown = shown.rstrip(" |").strip("`")
        assert value.startswith(shown.rstrip("…")) if shown.endswith("…") else shown in (value, "(empty)"), column
    record = Universe(SimulatorConfig().seed).lookup_number(row["patent_number"])  # the demo's own data
    assert record is not None and (record.patent_id, record.pn, record.num) == (row["patent_id"], row["pn"], row["num"])
    assert row["local_file"] == image_path(row["pn"], row["num"], "png") and row["path"].startswith("http://127.0.0.1:")
    image = Universe(SimulatorConfig().seed).image_bytes(row["pn"], row["num"])
    assert (row["bytes"], row["sha256"]) == (str(len(image)), hashlib.sha256(image).hexdigest())


def test_json_lines_are_what_json_dumps_writes():
    """manifest.jsonl's rows go through json's C encoder directly (outputs._json_line): same text as dumps."""
    rng = random.Random(7)
    for _ in range(500):
        row = {f"c{i}": rng.choice([*TRICKY, None, 0, 12345, -1, 1.5, "中文", "\x00\x1f\u2028"]) for i in range(10)}
        assert _json_line(row) == json.dumps(row, ensure_ascii=False)
