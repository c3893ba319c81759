"""What `run` and `demo` share: settings from options, the job call, its output and exit code."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from downloader.cli.finalline import describe_summary
from downloader.core.outcome import Summary
from downloader.core.settings import Settings


def err_line(text: str) -> None:
    """One line on stderr."""
    print(text, file=sys.stderr, flush=True)  # noqa: T201


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings from parsed options (validated: bad values raise UsageError)."""
    fields = {name: getattr(args, name) for name in (
        "rate", "api_concurrency", "download_concurrency", "batch_size", "retries", "retry_failed", "column",
        "max_charged", "max_runtime", "recheck_after_days", "durable", "expiry_margin", "dry_run", "log_file",
        "log_format", "state_url", "workers", "lease", "s3_endpoint_url", "throttle_patience", "io")}
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

    with open_sinks(settings) as sink:
        summary = run_job(inputs, out, settings, sink=sink, handle_signals=True)
        sink.finish(summary.to_dict())
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, sort_keys=True))  # noqa: T201
    err_line(describe_summary(summary, open_sink(out).url_of("manifest.csv")))
    if after:
        after(summary)
    return summary.exit_code
