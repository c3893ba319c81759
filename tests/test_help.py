"""`--help` of every command: a description, examples, every option explained; `run` ends with the exit codes."""

from __future__ import annotations

import argparse
import re

import pytest

from downloader.cli import app as cli
from downloader.cli.helptext import exit_codes
from downloader.core import outcome


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


COMMANDS = sorted(_subparsers())


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        cli.main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_description_and_examples(command, capsys):
    """The help text says what the command does (a paragraph, not a line) and shows it used."""
    text = _help(capsys, command)
    parser = _subparsers()[command]
    assert parser.description and len(parser.description) > 150
    assert "\nexamples:\n" in text
    examples = text.split("\nexamples:\n", 1)[1]
    assert f"patent-images {command}" in examples


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_of_every_command_has_help(command, capsys):
    """No option or argument is left unexplained (argparse would print it bare)."""
    _help(capsys, command)  # builds the simulator's options too
    parser = _subparsers()[command]
    bare = [a.option_strings or [a.dest] for a in parser._actions
            if not isinstance(a, argparse._HelpAction) and not (a.help and a.help.strip())]
    assert bare == []


def test_run_help_ends_with_the_exit_code_table_from_outcome(capsys):
    """`run --help` ends with every exit code of core.outcome, in the words of its docstring."""
    text = _help(capsys, "run")
    assert text.rstrip().endswith(exit_codes().rstrip().splitlines()[-1].strip())
    table = text.split("\nexit codes:\n", 1)[1]
    codes = {int(m) for m in re.findall(r"^\s+(\d+)\s", table, re.M)}
    assert codes == set(outcome.EXIT_BY_STOP.values()) | {code for _, code in outcome.EXIT_BY_ERROR} | {0}


def test_top_level_help_lists_commands_with_examples(capsys):
    """`patent-images --help` names every command and shows the first ones to try."""
    text = _help(capsys)
    assert all(command in text for command in COMMANDS)
    assert "patent-images demo" in text.split("examples:", 1)[1]


def _defaults(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options whose default is a value (not None, not a flag's False), help and version aside."""
    return [a for a in parser._actions if a.option_strings and a.default not in (None, False, argparse.SUPPRESS)
            and not isinstance(a, argparse._HelpAction | argparse._VersionAction)]


@pytest.mark.parametrize("command", ["run", "demo"])
def test_every_default_is_the_one_the_help_names(command):
    """Each option with a default says it, and says the real one: `demo --help` said rate 5 but ran at 20;
    --workers and --io did not say theirs."""
    parser = _subparsers()[command]
    for action in _defaults(parser):
        if action.dest in ("state_url", "s3_endpoint_url", "api_base"):  # from the environment: named by its env
            continue
        shown = f"{action.default:g}" if isinstance(action.default, float) else str(action.default)
        text = action.help or ""
        assert "default" in text and f"{shown})" in text, (action.option_strings, text)
    assert parser.get_default("rate") == (20.0 if command == "demo" else 5.0)
    workers = next(a for a in parser._actions if a.dest == "workers")
    assert "another each time the first is CPU-bound" in (workers.help or "")


@pytest.mark.parametrize("command", ["run", "demo"])
def test_placeholders_are_short_and_alike(command):
    """Counts are N, durations SECONDS or DURATION: no argparse-made API_CONCURRENCY beside N."""
    parser = _subparsers()[command]
    for action in parser._actions:
        if action.option_strings and action.nargs != 0 and not action.choices:
            assert action.metavar is not None and "_" not in action.metavar, action.option_strings
