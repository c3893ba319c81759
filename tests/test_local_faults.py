"""Faults of the machine on real file systems: a disk that fills up, a low open-file limit, an output
folder that turns read-only or goes away mid-run. Each ends with a rerun once the fault is lifted.

The file systems are real: a small tmpfs made by the test, a read-only bind mount over DIR, a bind
mount that is lazily unmounted. Mounting needs root (CAP_SYS_ADMIN); where it is not allowed those
tests skip with one reason. Every mount is undone in a `finally`, also when a test fails.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from downloader import machine
from downloader.cli import app as cli
from downloader.core.errors import LocalResourceError, OutputError
from downloader.core.model import Kind, PatentKey, Resolved
from downloader.outputs import write_manifest
from downloader.simulator import Simulator
from downloader.sinks.local import LocalSink
from downloader.state.sqlite import SqliteStore

from .support import (
    Cli,
    check_downloads,
    cli_args,
    cli_command,
    image_files,
    leftovers,
    manifest,
    numbers,
    one_clear_line,
    run_cli,
    state_rows,
    write_csv,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
# Batches of 20 and 4 downloads: the API cannot run far ahead of the downloads, so a fault mid-run
# leaves keys never asked (the tests check that asking stopped).
SMALL_BATCHES = ("--batch-size", "20", "--download-concurrency", "4")


# --- real file systems, always unmounted ----------------------------------------------------------


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def _is_mounted(target: Path) -> bool:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        return any(line.split()[1] == str(target) for line in mounts)


def _unmount_all(target: Path) -> None:
    """Undo every mount stacked on `target` (lazily when something still holds it)."""
    for _ in range(5):
        if not _is_mounted(target):
            return
        if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.fixture(scope="session")
def can_mount(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip (one reason) where this process may not mount file systems."""
    if not sys.platform.startswith("linux"):
        pytest.skip("real-file-system fault tests need Linux mounts (tmpfs, bind mounts)")
    probe = tmp_path_factory.mktemp("probe")
    try:
        _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe))
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or err
        pytest.skip(f"mounting is not allowed here (needs root or CAP_SYS_ADMIN): {str(detail).strip()}")
    _unmount_all(probe)


@contextmanager
def mounted(target: Path, *args: str) -> Iterator[Path]:
    """`mount ARGS target` for the duration; unmounted whatever happens."""
    target.mkdir(parents=True, exist_ok=True)
    _mount(*args, str(target))
    try:
        yield target
    finally:
        _unmount_all(target)





def statuses(out: Path) -> Counter[str]:
    return Counter(status for _, _, status in state_rows(out))


def assert_rerun_is_complete(out: Path, sim: Simulator, source: Path, unique: int, *extra: str) -> str:
    """The rerun after the fault: exit 0, a full and right manifest, every sha256 right, and no key
    asked (charged) twice over both runs. Returns the rerun's final line."""
    charged_before = sim.counters.charged
    rerun = run_cli(*cli_args(sim, [source], out, *extra), timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    rows = manifest(out)
    assert len(rows) == unique and {r["status"] for r in rows} <= {"downloaded", "no_image", "not_found"}
    assert check_downloads(out, sim) == sum(r["status"] == "downloaded" for r in rows)
    assert len(sim.asks) == unique and max(sim.asks.values()) == 1, "a key was asked (and charged) twice"
    assert not leftovers(out) and not (out / ".partial").exists() and not (out / machine.RESERVE_FILE).exists()
    return f"{rerun.stderr.strip().splitlines()[-1]} [rerun charged {sim.counters.charged - charged_before}]"


def paid_but_not_stored(out: Path) -> int:
    return statuses(out)["resolved"]


# --- 1. the disk fills up during a run ------------------------------------------------------------


def test_a_full_disk_stops_the_run_with_one_line_and_the_rerun_pays_nothing_twice(
        tmp_path, can_mount, sim_config, threaded_simulator):
    """ENOSPC mid-run on a 4 MB tmpfs: exit 3 and one line naming DIR and its free space, no temp file
    left, nothing failed, manifest and summary written; paid-for URLs are kept, the rerun (after the
    tmpfs grows) asks no key twice."""
    sim = threaded_simulator
    source = write_csv(tmp_path / "in.csv", numbers(500, seed=12))
    with mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=4m", "tmpfs") as disk:
        out = disk / "out"
        first = run_cli(*cli_args(sim, [source], out, *SMALL_BATCHES, "--log-file", str(tmp_path / "run.log")))
        line = one_clear_line(first.stderr)
        print(f"\n[disk full] exit {first.returncode}: {line}; {sim.counters.api_requests} calls, charged "
              f"{sim.counters.charged}, {len(image_files(out))} images stored, {paid_but_not_stored(out)} paid for but "
              f"not stored, {500 - len(sim.asks)} never asked")
        assert first.returncode == 3
        assert line.startswith(f"patent-images: no space left on {out} (") and " MB free); free some space and " \
            "run the same command" in line
        assert not leftovers(out) and not (out / ".partial").exists() and not (out / machine.RESERVE_FILE).exists()
        counts = statuses(out)
        assert counts["failed"] == 0 and counts["resolved"] > 0  # paid for, not stored: their URLs are kept
        assert len(sim.asks) < 500  # it stopped asking
        assert len(manifest(out)) == 500 and (out / "summary.json").exists()  # the reserve left room for them
        assert check_downloads(out, sim) == counts["downloaded"]
        assert "no space left" in (tmp_path / "run.log").read_text(encoding="utf-8")

        _mount("-o", "remount,size=64m", str(disk))  # the fault is lifted
        print(f"[disk full] {assert_rerun_is_complete(out, sim, source, 500, *SMALL_BATCHES)}")


# --- 2. a low open-file limit ---------------------------------------------------------------------


def _limit_64() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def test_an_open_file_limit_of_64_caps_the_concurrency_and_the_run_completes(tmp_path, threaded_simulator):
    """Soft and hard RLIMIT_NOFILE 64 with --download-concurrency 200: one line says the concurrency was
    lowered (stderr and log), and the run ends 0 with everything right."""
    sim = threaded_simulator
    out, log = tmp_path / "out", tmp_path / "run.log"
    source = write_csv(tmp_path / "in.csv", numbers(400, seed=13))
    args = cli_args(sim, [source], out, "--download-concurrency", "200", "--log-file", str(log))
    done = subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=120, cwd=ROOT,
                          preexec_fn=_limit_64, check=False)
    lines = done.stderr.strip().splitlines()
    print(f"\n[nofile 64/64] exit {done.returncode}: " + " | ".join(lines))
    assert done.returncode == 0, done.stderr
    said = [x for x in lines if "open-file limit" in x]
    assert len(said) == 1 and "is 64" in said[0] and "--download-concurrency 200" in said[0]
    assert "open-file limit" in log.read_text(encoding="utf-8")
    assert check_downloads(out, sim) == statuses(out)["downloaded"] > 0
    print(f"[nofile 64/64] {assert_rerun_is_complete(out, sim, source, 400)}")


_HOG = """
import os, sys, threading, time
from downloader.cli.app import main

def hog(images, hold):
    while not os.path.isdir(images):
        time.sleep(0.001)
    time.sleep(0.05)
    taken, until = [], time.monotonic() + hold
    while time.monotonic() < until:  # take every descriptor, and each one freed meanwhile
        try:
            taken.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            time.sleep(0.0005)
    for fd in taken:
        os.close(fd)
    print(f"hog: held every free descriptor ({len(taken)}) for {hold} s", file=sys.stderr, flush=True)

threading.Thread(target=hog, args=(sys.argv[1], float(sys.argv[2])), daemon=True).start()
sys.exit(main(sys.argv[3:]))
"""


def test_running_out_of_descriptors_anyway_is_waited_out(tmp_path, sim_config, threaded_simulator):
    """Every free descriptor taken for 1 s mid-download (EMFILE on temp files): the run backs off and
    retries, ends 0, nothing failed, every sha256 right."""
    sim = threaded_simulator
    sim_config.cdn_latency = 0.01  # downloads last a few seconds: the drought falls among them
    out = tmp_path / "out"
    source = write_csv(tmp_path / "in.csv", numbers(400, seed=14))
    args = cli_args(sim, [source], out, "--download-concurrency", "8")
    done = subprocess.run([sys.executable, "-c", _HOG, str(out / "images"), "1.0", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, preexec_fn=_limit_64, check=False)
    print(f"\n[EMFILE anyway] exit {done.returncode}: " + " | ".join(done.stderr.strip().splitlines()))
    assert "hog: held every free descriptor" in done.stderr  # the drought did happen
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["retries"] > 0  # and was waited out
    assert statuses(out)["failed"] == 0
    assert check_downloads(out, sim) == statuses(out)["downloaded"]
    print(f"[EMFILE anyway] {assert_rerun_is_complete(out, sim, source, 400)}")


# --- 3. the output folder turns read-only, or goes away, mid-run ----------------------------------


def test_an_output_folder_turned_read_only_mid_run_stops_with_exit_3(tmp_path, can_mount, sim_config,
                                                                      threaded_simulator):
    """DIR made read-only (a read-only bind mount over it) mid-download: exit 3, one line naming DIR,
    nothing failed; once writable again the rerun completes and asks no key twice."""
    sim = threaded_simulator
    sim_config.cdn_latency = 0.02
    out = tmp_path / "out"
    source = write_csv(tmp_path / "in.csv", numbers(300, seed=15))
    args = cli_args(sim, [source], out, *SMALL_BATCHES)
    try:
        with Cli(args, tmp_path / "err.txt") as run:
            run.when(lambda: len(image_files(out)) >= 20)
            _mount("--bind", "-o", "ro", str(out), str(out))
            code, err = run.finish()
        line = one_clear_line(err)
        print(f"\n[read-only] exit {code}: {line}")
        assert code == 3
        assert line.startswith(f"patent-images: {out} is read-only") and "make it writable again" in line
        assert "not written: manifest.csv" in line  # and it says so
        counts = statuses(out)
        assert counts["failed"] == 0 and counts["downloaded"] >= 20 and len(sim.asks) < 300
    finally:
        _unmount_all(out)  # the fault is lifted
    print(f"[read-only] {assert_rerun_is_complete(out, sim, source, 300, *SMALL_BATCHES)}")


def test_an_output_file_system_that_goes_away_mid_run_stops_with_exit_3(tmp_path, can_mount, sim_config,
                                                                         threaded_simulator):
    """DIR's file system unmounted under the run (lazily, as a vanished NFS mount): exit 3, one line saying
    DIR went away, nothing failed; mounted again, the rerun completes and asks no key twice."""
    sim = threaded_simulator
    sim_config.cdn_latency = 0.02
    real, out = tmp_path / "real", tmp_path / "out"
    real.mkdir()
    source = write_csv(tmp_path / "in.csv", numbers(300, seed=16))
    args = cli_args(sim, [source], out, *SMALL_BATCHES)
    with mounted(out, "--bind", str(real)):
        with Cli(args, tmp_path / "err.txt") as run:
            run.when(lambda: len(image_files(out)) >= 20)
            subprocess.run(["umount", "-l", str(out)], check=True)
            code, err = run.finish()
    line = one_clear_line(err)
    print(f"\n[gone] exit {code}: {line}")
    assert code == 3
    assert line.startswith(f"patent-images: {out} went away") and "mount or restore it" in line
    assert statuses(real)["failed"] == 0 and len(sim.asks) < 300
    with mounted(out, "--bind", str(real)):  # the fault is lifted
        print(f"[gone] {assert_rerun_is_complete(out, sim, source, 300, *SMALL_BATCHES)}")


# --- the boundaries, on a real full file system ---------------------------------------------------


async def test_the_sink_and_the_store_name_a_full_disk_and_leave_no_temp_file(tmp_path, can_mount):
    """On a genuinely full tmpfs: an image write, a state write, a new state store and the manifest each
    raise the OutputError naming the folder; no temp or staging file is left."""
    with mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=3m", "tmpfs") as disk:
        sink = LocalSink(disk / "out")
        await sink.prepare()
        store = await SqliteStore.open(disk / "out" / "state.sqlite")
        key = PatentKey(Kind.NUMBER, "US1234567B2")
        await store.ingest([key], run_id=1)
        with (disk / "filler").open("wb") as filler:  # fill every byte that is left
            try:
                while True:
                    filler.write(b"\0" * MB)
                    filler.flush()
            except OSError as err:
                assert err.errno == errno.ENOSPC
        upload = sink.begin()
        with pytest.raises(OutputError, match=f"no space left on {disk / 'out'} \\(0 MB free\\)"):
            for _ in range(64):
                upload.write(b"x" * 65536)
            await upload.commit("images/a/b/x.png", content_type="image/png", sha256="")
        await upload.discard()
        assert not list((disk / "out" / ".partial").iterdir())
        assert not (disk / "out" / machine.RESERVE_FILE).exists()  # given back on the first "no space"
        (disk / "filler").unlink()
        with (disk / "filler").open("wb") as filler:
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            except OSError:
                pass
        url_events = [Resolved(PatentKey(Kind.NUMBER, f"US{i}B2"), "US1", "id", "1", "https://x/" + "u" * 900, 1e10)
                      for i in range(2000)]
        with pytest.raises(OutputError, match="no space left on"):
            await store.ingest([e.key for e in url_events], run_id=1)
            await store.apply(url_events)
        with pytest.raises(OutputError, match="no space left on"):
            await SqliteStore.open(disk / "elsewhere.sqlite")
        with pytest.raises(OutputError, match=f"no space left on {disk / 'out'}"):
            await write_manifest(sink, store.rows())
        assert not leftovers(disk / "out") and not (disk / "out" / "manifest.csv").exists()
        await store.close()
        await sink.close()


def test_os_errors_are_named_by_errno():
    """Each errno the tool can name gets its own words; EMFILE is transient, not an output fault."""
    cases = {errno.ENOSPC: "no space left on /d (", errno.EDQUOT: "disk quota exceeded on /d",
             errno.EROFS: "/d is read-only", errno.EACCES: "/d cannot be written (Permission denied)",
             errno.ENOENT: "/d went away", errno.ESTALE: "/d went away", errno.EIO: "/d cannot be written"}
    for code, text in cases.items():
        err = machine.output_error(OSError(code, os.strerror(code)), "/d")
        assert isinstance(err, OutputError) and str(err).startswith(text), (code, err)
        assert "run the same command" in err.hint
    assert isinstance(machine.output_error(OSError(errno.EMFILE, "Too many open files"), "/d"), LocalResourceError)
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13  # type: ignore[attr-defined]
    assert isinstance(machine.state_error(full, "/d"), OutputError)
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5  # type: ignore[attr-defined]
    assert machine.state_error(busy, "/d") is None


@pytest.mark.parametrize(("limit", "in_use", "api", "downloads", "expected"), [
    (1024, 10, 4, 32, (4, 32, False)),
    (64, 6, 4, 200, (4, 14, True)),
    (48, 6, 4, 200, (4, 6, True)),
    (40, 6, 4, 200, (4, 2, True)),
    (36, 6, 4, 200, (2, 1, True)),
    (16, 6, 4, 200, (1, 1, True)),
])
def test_concurrencies_are_fitted_to_the_open_file_limit(limit, in_use, api, downloads, expected):
    """Downloads (a socket and a temp file each) are capped first, then API requests, never below 1."""
    fit = machine.fit_concurrency(limit, in_use, api, downloads)
    assert (fit.api, fit.downloads, fit.capped) == expected


# --- 4. no internal error for an OSError the tool can name ----------------------------------------


def test_a_log_file_on_a_read_only_file_system_is_named_not_an_internal_error(tmp_path, can_mount, capsys):
    """--log-file on a read-only file system: exit 3 and one line naming its folder."""
    logs = tmp_path / "logs"
    source = write_csv(tmp_path / "in.csv", numbers(3))
    with mounted(logs, "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs"):
        code = cli.main(["run", str(source), "--out", str(tmp_path / "out"), "--token", "t", "--api-key", "k",
                         "--log-file", str(logs / "run.log")])
    line = one_clear_line(capsys.readouterr().err)
    assert code == 3 and line.startswith(f"patent-images: {logs} is read-only")


def test_an_unexpected_error_leaves_its_traceback_in_the_log_file(tmp_path, monkeypatch, capsys):
    """Exit 1 and one line on stderr; the traceback goes to --log-file."""
    def broken(*args, **kwargs):
        raise RuntimeError("something unforeseen")

    monkeypatch.setattr("downloader.job.run_job", broken)
    source, log = write_csv(tmp_path / "in.csv", numbers(3)), tmp_path / "run.log"
    code = cli.main(["run", str(source), "--out", str(tmp_path / "out"), "--token", "t", "--api-key", "k",
                     "--log-file", str(log)])
    assert code == 1 and "internal error: RuntimeError" in one_clear_line(capsys.readouterr().err)
    text = log.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text and "something unforeseen" in text
