"""What `run` and `demo` share: settings from options, the job call, its output and exit code."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from downloader.cli.finalline import describe_summary
from downloader.core.errors import UsageError
from downloader.core.outcome import Summary, exit_code_for
from downloader.core.settings import Settings


def err_line(text: str) -> None:
    """One line on stderr."""
    print(text, file=sys.stderr, flush=True)  # noqa: T201


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings from parsed options (validated: bad values raise UsageError)."""
    fields = {name: getattr(args, name) for name in (
        "rate", "api_concurrency", "download_concurrency", "batch_size", "retries", "retry_failed", "column",
        "max_charged", "max_runtime", "recheck_after_days", "durable", "expiry_margin", "dry_run", "log_file",
        "log_format", "state_url", "workers", "lease", "s3_endpoint_url", "throttle_patience", "state_patience",
        "io", "drawings")}
    for name in ("api_base", "api_key", "token", "client_id", "client_secret"):
        if hasattr(args, name):
            fields[name] = getattr(args, name)
    fields["progress"] = False if args.no_progress else None
    fields.update(overrides)
    return Settings(**fields)


def run_command(inputs: list[str], out: str, settings: Settings, args: argparse.Namespace,
                after: Callable[[Summary], None] | None = None) -> int:
    """Run the job (or its dry run), print what a person and a script need, return the exit code."""
    from downloader.cli.runlog import open_sinks

    if settings.dry_run:
        from downloader.dryrun import describe_plan, dry_run

        plan = dry_run(inputs, out, settings)
        print(json.dumps(plan, indent=2) if args.json else describe_plan(plan))  # noqa: T201
        return 0
    from downloader.job import run_job
    from downloader.sinks import open_sink

    metrics = getattr(args, "metrics_file", None)
    if metrics and not Path(metrics).parent.is_dir():
        raise UsageError(f"--metrics-file {metrics}: folder {Path(metrics).parent} does not exist")
    started = time.time()
    try:
        with open_sinks(settings, verbose=getattr(args, "verbose", False)) as sink:
            summary = run_job(inputs, out, settings, sink=sink, handle_signals=True)
            sink.finish(summary.to_dict())
    except BaseException as err:
        if metrics:
            _write_metrics(metrics, out, _summary_of(err, started))
        raise
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, sort_keys=True))  # noqa: T201
    err_line(describe_summary(summary, open_sink(out).url_of("manifest.csv")))
    if metrics:
        _write_metrics(metrics, out, summary)
    if after:
        after(summary)
    return summary.exit_code


def _summary_of(err: BaseException, started: float) -> Summary:
    """The summary of a run that ended with an exception: the job's own if it attached one, else the bare end."""
    attached = getattr(err, "summary", None)
    if isinstance(attached, Summary):
        return attached
    return Summary(exit_code=exit_code_for(err), seconds=round(time.time() - started, 3))


def _write_metrics(path: str, out: str, summary: Summary) -> None:
    """--metrics-file after a run; a failure to write it is said in one line and does not change the exit code."""
    from downloader.cli.metrics import write_metrics

    try:
        write_metrics(path, summary, labels={"out": out})
    except OSError as err:
        err_line(f"patent-images: cannot write --metrics-file {path}: {err.strerror or err}")
