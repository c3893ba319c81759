"""Hostile or broken answers from the API and the CDN: never a file outside DIR/images/, never a crash of
the run; the patent fails with a reason, or (an odd pn) is downloaded under a safe name inside images/."""

from __future__ import annotations

from pathlib import Path

import pytest

from downloader.simulator import Record, Simulator

from .support import leftovers, manifest, numbers, run, sha256, write_csv

pytestmark = pytest.mark.slow

TOP_LEVEL = {"manifest.csv", "manifest.jsonl", "rejects.csv", "summary.json", "state.sqlite", "state.sqlite-wal",
             "state.sqlite-shm", ".lock"}


def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def assert_only_expected_files(tmp: Path, out: Path, before: set[Path]) -> None:
    """Every file the run created is a known top-level file of DIR or lies under DIR/images/."""
    for path in all_files(tmp) - before:
        relative = path.relative_to(out)  # raises if outside DIR
        assert relative.parts[0] == "images" or relative.as_posix() in TOP_LEVEL, path
        assert path.resolve().is_relative_to((out / "images").resolve()) or relative.as_posix() in TOP_LEVEL


def with_drawings(sim: Simulator, values: list[str]) -> list[tuple[str, Record]]:
    found = [(v, sim.universe.lookup_number(v)) for v in values]
    return [(v, r) for v, r in found if r is not None and r.num is not None]


def test_hostile_answers_fail_or_land_safely_inside_images(tmp_path, sim_config, threaded_simulator):
    """Odd pns, non-http paths and a body over the size cap: exit 1, reasons in the manifest, no escape."""
    sim = threaded_simulator
    values = numbers(120)
    usable = with_drawings(sim, values)
    donors = [r for _, r in usable[:4]]  # real drawings whose signed URLs the hostile items point at
    ids = [sim.universe.patent_id_for(r.pn) for r in donors]

    def item(patent_id: str, pn: str, path: str, num: str = "0001") -> dict:
        return {"pn": pn, "patent_id": patent_id, "abstract_drawing": {"num": num, "path": path}}

    hostile_ids = {
        ids[0]: item(ids[0], "../../x", sim.image_url(str(sim.base_url), donors[0]), donors[0].num or ""),
        ids[1]: item(ids[1], "/etc/passwd", sim.image_url(str(sim.base_url), donors[1]), "../../0001"),
        ids[2]: item(ids[2], "X" * 10_000, sim.image_url(str(sim.base_url), donors[2])),
        ids[3]: item(ids[3], "US1\x00/../../evil", sim.image_url(str(sim.base_url), donors[3])),
    }
    ftp, script, huge = (v for v, _ in usable[4:7])
    records = dict(usable)
    sim_config.overrides = {
        **hostile_ids,
        ftp: item(records[ftp].patent_id, records[ftp].pn, "ftp://x/y.png"),
        script: item(records[script].patent_id, records[script].pn, "javascript:alert(1)"),
    }
    sim_config.huge_images = {records[huge].pn}
    sim_config.huge_image_bytes = 3 * 1024 * 1024
    source = write_csv(tmp_path / "in.csv", values)
    id_source = write_csv(tmp_path / "ids.csv", ids, header="patent_id")
    out = tmp_path / "out"
    before = all_files(tmp_path)

    summary = run([source, id_source], out, sim, max_image_bytes=1024 * 1024)

    rows = {r["patent_number"] or r["patent_id"]: r for r in manifest(out)}
    print(f"\n[hostile] exit {summary['exit_code']}, {summary['by_status']}; "
          + "; ".join(f"{k[:12]}: {rows[k]['status']} {rows[k]['local_file'] or rows[k]['error'][:60]}"
                      for k in [*ids, ftp, script, huge]))
    assert summary["exit_code"] == 1
    assert_only_expected_files(tmp_path, out, before)
    assert not leftovers(out)
    for patent_id, donor in zip(ids[:2], donors[:2], strict=True):  # odd pn: downloaded, safe name, right bytes
        row = rows[patent_id]
        assert row["status"] == "downloaded", row
        local = out / row["local_file"]
        assert local.resolve().is_relative_to((out / "images").resolve())
        parts = Path(row["local_file"]).parts
        assert len(parts) == 4 and parts[0] == "images" and not any(p.startswith(".") for p in parts), parts
        assert local.read_bytes() == sim.expected_image(donor.pn, donor.num or "")
        assert sha256(local.read_bytes()) == row["sha256"]
    for key in (ids[2], ids[3], ftp, script):
        assert rows[key]["status"] == "failed" and rows[key]["error"].startswith("HostileAnswer"), rows[key]
    assert rows[huge]["status"] == "failed" and "cap" in rows[huge]["error"], rows[huge]
    assert sim.counters.images_served <= summary["images"] + 1  # the huge body was refused, not streamed
    for value in values:  # everything else is untouched by its neighbours' troubles
        row = rows[value]
        if value not in (ftp, script, huge) and row["status"] == "downloaded":
            assert (out / row["local_file"]).read_bytes() == sim.expected_image(row["pn"], row["num"])


def test_answers_that_are_not_json_are_an_outage_not_the_patents_failure(tmp_path, sim_config, threaded_simulator):
    """Every call answered with an HTML page: the patents stay pending and the run stops (exit 3, the API
    failing every call); once the API answers JSON again the plain rerun (no --retry-failed) settles them."""
    sim = threaded_simulator
    sim_config.api_fault_kinds = ("not_json",)
    sim_config.api_fault_rate = 1.0
    values = numbers(60)
    source = write_csv(tmp_path / "in.csv", values)
    out = tmp_path / "out"
    stopped = run([source], out, sim, batch_size=20, retries=3, outage_seconds=1.5)
    rows = manifest(out)
    print(f"\n[not json] {stopped['fatal']}; {sim.counters.api_faults_injected} HTML answers, "
          f"statuses {sorted({r['status'] for r in rows})}")
    assert stopped["exit_code"] == 3 and stopped["stop_reason"] == "fatal"
    assert {r["status"] for r in rows} == {"pending"} and len(rows) == 60
    assert "failed every call: the API answer is not JSON" in stopped["fatal"]
    assert sim.counters.api_faults_injected >= 5
    sim_config.api_fault_rate = 0.0
    again = run([source], out, sim)
    assert again["exit_code"] == 0 and again["api_calls"] == 1
