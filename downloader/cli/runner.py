"""What `run` and `demo` share: settings from options, the job call, its output and exit code."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from downloader.cli.finalline import describe_summary
from downloader.cli.runlog import err_line, open_sinks
from downloader.core.errors import UsageError
from downloader.core.outcome import Summary, exit_code_for
from downloader.core.settings import Settings


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings from parsed options (validated: bad values raise UsageError)."""
    fields = {name: getattr(args, name) for name in (
        "rate", "api_concurrency", "download_concurrency", "batch_size", "retries", "retry_failed", "column",
        "max_charged", "max_runtime", "recheck_after_days", "durable", "expiry_margin", "dry_run",
        "state_url", "workers", "lease", "s3_endpoint_url", "throttle_patience", "state_patience", "io", "drawings")}
    for name in ("api_base", "api_key", "token", "client_id", "client_secret"):
        if hasattr(args, name):
            fields[name] = getattr(args, name)
    fields.update(overrides)
    return Settings(**fields)


def run_command(inputs: list[str], out: str, settings: Settings, args: argparse.Namespace,
                after: Callable[[Summary], None] | None = None) -> int:
    """Run the job (or its dry run) through the library, print what a person and a script need, return
    the exit code. The CLI asks the library for what a program may do to its process: signal handling
    (Ctrl-C stops cleanly) and the open-file limit raised."""
    from downloader import job

    if settings.dry_run:
        from downloader.dryrun import describe_plan

        plan = job.plan_job(inputs, out, settings)
        print(json.dumps(plan.to_dict(), indent=2) if args.json else describe_plan(plan))  # noqa: T201
        return 0
    metrics = getattr(args, "metrics_file", None)
    if metrics and not Path(metrics).parent.is_dir():
        raise UsageError(f"--metrics-file {metrics}: folder {Path(metrics).parent} does not exist")
    started, summary = time.time(), None
    try:
        with open_sinks(settings, progress=False if args.no_progress else None, log_file=args.log_file,
                        log_format=args.log_format, verbose=getattr(args, "verbose", False)) as sink:
            summary = job.run_job(inputs, out, settings, events=sink, handle_signals=True, raise_open_files=True)
            sink.finish(summary.to_dict())
            if summary.error is not None:  # fatal or interrupted: said in one line by the CLI's error table
                raise summary.error
    except BaseException as err:
        if metrics:
            _write_metrics(metrics, out, summary or Summary(exit_code=exit_code_for(err),
                                                            seconds=round(time.time() - started, 3)))
        raise
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, sort_keys=True))  # noqa: T201
    err_line(describe_summary(summary, summary.manifest))
    if metrics:
        _write_metrics(metrics, out, summary)
    if after:
        after(summary)
    return summary.exit_code


def _write_metrics(path: str, out: str, summary: Summary) -> None:
    """--metrics-file after a run; a failure to write it is said in one line and does not change the exit code."""
    from downloader.cli.metrics import write_metrics

    try:
        write_metrics(path, summary, labels={"out": out})
    except OSError as err:
        err_line(f"patent-images: cannot write --metrics-file {path}: {err.strerror or err}")
