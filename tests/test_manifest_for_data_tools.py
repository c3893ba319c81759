"""manifest.csv and manifest.jsonl as data tools read them (DuckDB): types, nulls, counts, permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest

from .support import numbers, run, write_csv

duckdb = pytest.importorskip("duckdb", reason="duckdb (test extra) is not installed")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple:
    from downloader.simulator import SimulatorConfig, simulator_in_thread

    tmp = tmp_path_factory.mktemp("manifest")
    old = os.umask(0o022)
    try:
        with simulator_in_thread(SimulatorConfig(seed=0)) as sim:
            out = tmp / "out"
            summary = run([write_csv(tmp / "in.csv", numbers(300))], out, sim)
    finally:
        os.umask(old)
    return out, summary


def test_duckdb_reads_both_files_with_the_documented_types(finished):
    out, summary = finished
    con = duckdb.connect()
    # `num` is text: drawing numbers keep their leading zeros ("0001"), so it is read as VARCHAR.
    table = con.execute(f"SELECT * FROM read_csv('{out / 'manifest.csv'}', header=true, "
                        "types={'num': 'VARCHAR', 'bytes': 'BIGINT'})")
    columns = {d[0]: d[1] for d in table.description}
    rows = table.fetchall()
    assert list(columns) == ["patent_number", "patent_id", "pn", "num", "path", "local_file", "status", "bytes",
                             "sha256", "error"]
    assert len(rows) == summary["unique"] == 300
    lines = con.execute(f"SELECT * FROM read_json('{out / 'manifest.jsonl'}', format='newline_delimited')")
    json_types = {d[0]: str(d[1]) for d in lines.description}
    json_rows = lines.fetchall()
    assert len(json_rows) == 300
    assert json_types["bytes"] == "BIGINT" and json_types["num"] == "VARCHAR"
    by_status = dict(con.execute(f"SELECT status, COUNT(*) FROM read_json('{out / 'manifest.jsonl'}', "
                                 "format='newline_delimited') GROUP BY status").fetchall())
    assert by_status == {k: v for k, v in summary["by_status"].items() if v}
    nums = [r[0] for r in con.execute(f"SELECT num FROM read_json('{out / 'manifest.jsonl'}', "
                                      "format='newline_delimited') WHERE num IS NOT NULL").fetchall()]
    assert nums and all(len(n) == 4 and n.isdigit() for n in nums)  # "0001", not 1


def test_absent_values_are_null_in_jsonl_never_empty_strings(finished):
    out, _ = finished
    for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        assert "" not in row.values(), row
        if row["status"] != "downloaded":
            assert row["bytes"] is None and row["sha256"] is None and row["local_file"] is None
        assert row["status"] in {"downloaded", "no_image", "not_found", "failed", "pending"}


def test_output_files_get_the_umask_permissions_like_the_rest_of_the_folder(finished):
    out, _ = finished
    for name in ("manifest.csv", "manifest.jsonl", "summary.json", "rejects.csv"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
