"""The command line: help for every command, --version, one exit code per row of the table, and bad
input or usage answered with exit 2 (or rows in rejects.csv) and one clear line, never a traceback."""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from downloader import __version__
from downloader.cli import app as cli
from downloader.core import errors, outcome
from downloader.core.errors import FatalError
from downloader.simulator import Simulator, SimulatorConfig, simulator_in_thread

from .support import cli_args, manifest, numbers, one_clear_line, run_cli, write_csv


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """One simulator for the whole module (the runs here are small and independent)."""
    with simulator_in_thread(SimulatorConfig(seed=0)) as simulator:
        yield simulator


# --- help, version, exit code table ---------------------------------------------------------------


def _commands() -> list[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


@pytest.mark.parametrize("command", [[]] + [[c] for c in _commands()], ids=lambda c: " ".join(c) or "top")
def test_every_command_has_help(command, capsys):
    """`--help` exits 0 and describes the command."""
    with pytest.raises(SystemExit) as done:
        cli.main([*command, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("usage: patent-images")


def test_commands_are_the_documented_ones():
    """run, demo, status and simulate exist (DESIGN §1); others may be added."""
    assert {"run", "demo", "status", "simulate"} <= set(_commands())


def test_version():
    """`python -m downloader --version` prints the version and exits 0."""
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"patent-images {__version__}"


def _instance(cls: type[BaseException]) -> BaseException:
    if issubclass(cls, FatalError):
        return cls("PatSnap error 67200005", hint="top it up")
    return cls("boom")


@pytest.mark.parametrize(("cls", "code"), outcome.EXIT_BY_ERROR, ids=[c.__name__ for c, _ in outcome.EXIT_BY_ERROR])
def test_each_row_of_the_exit_code_table(cls, code, tmp_path, monkeypatch, capsys):
    """An exception of the row's class ending a command gives the row's exit code and one stderr line."""
    def fail(args: argparse.Namespace) -> int:
        raise _instance(cls)

    monkeypatch.setattr(cli, "cmd_status", fail)
    monkeypatch.setattr(cli, "_sigterm_as_interrupt", lambda: None)
    assert cli.main(["status", "--out", str(tmp_path)]) == code
    line = one_clear_line(capsys.readouterr().err)
    assert line.startswith("patent-images: ")
    if issubclass(cls, FatalError):
        assert "top it up" in line and "rerun" in line


def test_the_table_agrees_with_the_error_tree():
    """Every class the errors.py tree maps to an exit code gets that code from the CLI table."""
    documented = re.findall(r"^[ │├└─]*(\w+)[^\n]*→ exit (\d+)$", errors.__doc__ or "", re.MULTILINE)
    assert len(documented) >= 6
    for name, code in documented:
        cls = getattr(errors, name)
        assert outcome.exit_code_for(_instance(cls)) == int(code), name


def test_a_corrupt_state_store_is_a_clear_usage_error(tmp_path, sim):
    """A state.sqlite that is not a database: exit 2, one line saying what to do, no traceback."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "state.sqlite").write_bytes(b"this is not a database" * 100)
    plain = run_cli(*cli_args(sim, [write_csv(tmp_path / "in.csv", numbers(3))], out))
    line = one_clear_line(plain.stderr)
    assert plain.returncode == 2 and "not a usable state store" in line and "move it aside" in line


def test_unexpected_errors_exit_1_with_a_hint_and_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    """An internal error is one line with a hint; --debug adds the traceback."""
    def broken(*args, **kwargs):
        raise RuntimeError("something unforeseen")

    monkeypatch.setattr("downloader.job.run_job", broken)
    source = write_csv(tmp_path / "in.csv", numbers(3))
    args = ["run", str(source), "--out", str(tmp_path / "out"), "--token", "t", "--api-key", "k"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert one_clear_line(err).startswith("patent-images: internal error: RuntimeError") and "--debug" in err
    assert cli.main([*args, "--debug"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


# --- 9. bad input and bad usage -------------------------------------------------------------------


def _bad_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name → (extra run args, with {in} for a good input; text expected in the one stderr line)."""
    (tmp / "empty.csv").write_bytes(b"")
    (tmp / "header.csv").write_text("patent_number\n", encoding="utf-8")
    (tmp / "bad_utf8.csv").write_bytes(b"patent_number\n\xff\xfeUS\xe91234567\n")
    (tmp / "a_file").write_text("x", encoding="utf-8")
    (tmp / "folder.csv").mkdir()
    good = str(write_csv(tmp / "good.csv", numbers(3)))
    return {
        "empty file": ([str(tmp / "empty.csv")], "no patent numbers"),
        "header only": ([str(tmp / "header.csv")], "no patent numbers"),
        "only non-UTF-8 rows": ([str(tmp / "bad_utf8.csv")], "no patent numbers"),
        "unknown column": ([good, "--column", "nope"], "column 'nope' not found"),
        "missing input": ([str(tmp / "missing.csv")], "not found"),
        "input is a folder": ([str(tmp / "folder.csv")], "directory"),
        "out under a file": ([good, "--out", str(tmp / "a_file" / "out")], f"{tmp / 'a_file'} is a file, not a folder"),
        "out is a file": ([good, "--out", str(tmp / "a_file")], f"--out {tmp / 'a_file'} is a file, not a folder"),
        "log file in a missing folder": ([good, "--log-file", str(tmp / "nowhere" / "x.log")],
                                         f"--log-file {tmp / 'nowhere' / 'x.log'}: folder {tmp / 'nowhere'} does not "
                                         "exist"),
        "batch size 0": ([good, "--batch-size", "0"], "--batch-size must be between 1 and 100"),
        "batch size 101": ([good, "--batch-size", "101"], "--batch-size must be between 1 and 100"),
        "ftp api base": ([good, "--api-base", "ftp://x"], "--api-base must be an http(s) URL"),
        "api base not a url": ([good, "--api-base", "not a url"], "--api-base must be an http(s) URL"),
        "rate 0": ([good, "--rate", "0"], "--rate must be > 0"),
        "negative concurrency": ([good, "--download-concurrency", "-1"], "--download-concurrency"),
        "no credentials": ([good, "--token", "", "--client-id", ""], "no credentials"),
        "bad duration": ([good, "--max-runtime", "soon"], "not a duration"),
        "not a number": ([good, "--batch-size", "abc"], "invalid int value"),
    }


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory, sim) -> dict[str, tuple[Any, str, Path]]:
    """Every bad case run once as a subprocess, two at a time; name → (result, expected text, DIR)."""
    tmp = tmp_path_factory.mktemp("bad")
    cases = _bad_cases(tmp)

    def one(item: tuple[str, tuple[list[str], str]]) -> tuple[str, tuple[Any, str, Path]]:
        name, (extra, expected) = item
        out = tmp / re.sub(r"\W+", "_", name)
        args = cli_args(sim, [], out, *extra[1:])
        args[1:1] = extra[:1]  # the input path goes right after `run`
        return name, (run_cli(*args), expected, out)

    assert list(cases) == BAD_CASES
    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(one, cases.items()))


BAD_CASES = ["empty file", "header only", "only non-UTF-8 rows", "unknown column", "missing input",
             "input is a folder", "out under a file", "out is a file", "log file in a missing folder",
             "batch size 0", "batch size 101", "ftp api base",
             "api base not a url", "rate 0", "negative concurrency", "no credentials", "bad duration",
             "not a number"]


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_input_or_usage_exits_2_with_one_clear_line(bad_runs, name):
    """Exit 2, the reason on stderr, never a traceback."""
    done, expected, _ = bad_runs[name]
    print(f"\n[{name}] exit {done.returncode}: {done.stderr.strip().splitlines()[-1] if done.stderr else ''}")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    if name in ("not a number", "bad duration"):  # argparse's own format: the usage, then one error line
        last = done.stderr.strip().splitlines()[-1]
        assert "error:" in last and expected in last
    else:
        assert expected in one_clear_line(done.stderr)


def test_status_of_a_folder_without_state_is_a_usage_error(tmp_path):
    """`status` on a folder no run has used: exit 2, one line."""
    done = run_cli("status", "--out", str(tmp_path))
    assert done.returncode == 2 and "no state store" in one_clear_line(done.stderr)


def test_bad_rows_are_rejected_and_the_good_ones_run(tmp_path, sim):
    """Non-UTF-8 bytes and a 10 MB line become rows of rejects.csv; the rest of the file is downloaded."""
    good = numbers(5)
    source = tmp_path / "mixed.csv"
    with source.open("wb") as f:
        f.write(b"patent_number\n")
        f.write(good[0].encode() + b"\n")
        f.write(b"US\xff\xfe1234567\n")
        f.write(good[1].encode() + b"\n")
        f.write(b"X" * (10 * 1024 * 1024) + b"\n")
        f.write(b"\n".join(v.encode() for v in good[2:]) + b"\n")
    out = tmp_path / "out"
    done = run_cli(*cli_args(sim, [source], out))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert {r["patent_number"] for r in manifest(out)} == set(good)
    with (out / "rejects.csv").open(newline="", encoding="utf-8") as f:
        rejects = list(csv.DictReader(f))
    reasons = sorted(r["reason"] for r in rejects)
    print(f"\n[rejects] {[(r['line'], r['reason']) for r in rejects]}")
    assert len(rejects) == 2
    assert any("UTF-8" in r for r in reasons) and any("too long" in r for r in reasons)
    assert all(len(r["value"]) <= 200 for r in rejects)
