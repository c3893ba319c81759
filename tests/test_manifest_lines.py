"""The manifest's fast CSV lines are byte for byte what csv.writer writes, whatever the values hold."""

from __future__ import annotations

import csv
import io
import random

import pytest

from downloader.outputs import plain_csv_line

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
