"""`patent-images`: parse, call the library, map exceptions to exit codes. No logic here."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from downloader import __version__
from downloader.cli import helptext
from downloader.cli.runlog import err_line as _err
from downloader.cli.runner import run_command, settings_from
from downloader.core.errors import DownloaderError, FatalError, OutputError, UsageError
from downloader.core.outcome import exit_code_for
from downloader.core.settings import DEFAULT_API_BASE, IO_MODES, Settings, parse_duration
from downloader.machine import output_error, settle_collector


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and `python -m downloader`."""
    if argv is None:  # the whole process is the tool (not a caller's test or script)
        settle_collector()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(with_simulator="simulate" in argv)
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    _sigterm_as_interrupt()
    try:
        return int(args.func(args))
    except BaseException as err:  # noqa: BLE001 - the one place that turns errors into exit codes
        if isinstance(err, SystemExit):
            raise
        err = named_os_error(err)
        code = exit_code_for(err)
        _report(err, code, debug)
        return code


_NAMED = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ESTALE, errno.EIO, errno.EMFILE, errno.ENFILE}


def named_os_error(err: BaseException) -> BaseException:
    """An OSError about a file that escaped the job's own mapping (say the lock or the log file on a full
    disk) as the condition it names; anything else as it is."""
    if isinstance(err, OSError) and err.filename and err.errno in _NAMED:
        return output_error(err, os.path.dirname(os.path.abspath(os.fsdecode(err.filename))))
    return err


def _report(err: BaseException, code: int, debug: bool) -> None:
    if debug and not isinstance(err, KeyboardInterrupt):
        traceback.print_exception(err, file=sys.stderr)
    if isinstance(err, OutputError):
        unsaved = f" (the state is intact; not written: {', '.join(err.unsaved)})" if err.unsaved else ""
        _err(f"patent-images: {err}; {err.hint}{unsaved}")
    elif isinstance(err, FatalError):
        hint = f" — {err.hint}" if err.hint else ""
        rerun = "" if err.hint_says_rerun else "; rerun the same command once this is fixed"
        _err(f"patent-images: stopped: {err}{hint}. State and manifest are saved{rerun}.")
    elif isinstance(err, KeyboardInterrupt):
        _err("patent-images: interrupted.")
    elif isinstance(err, DownloaderError):
        _err(f"patent-images: {err}")
    elif isinstance(err, OSError) and err.strerror:
        where = f": {os.fsdecode(err.filename)}" if err.filename else ""
        _err(f"patent-images: {err.strerror}{where} (run with --debug for details)")
    else:
        _err(f"patent-images: internal error: {type(err).__name__}: {err} (run with --debug for details)")


def _sigterm_as_interrupt() -> None:
    """SIGTERM outside the pipeline (which handles it itself) stops like Ctrl-C, not abruptly."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


# --- parser ---------------------------------------------------------------------------------


def build_parser(with_simulator: bool = True) -> argparse.ArgumentParser:
    """The argument parser with every command (the simulator's options only when asked for:
    importing the simulator costs start-up time every other command does not need)."""
    parser = argparse.ArgumentParser(prog="patent-images", description=helptext.TOP, epilog=helptext.TOP_EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_demo(sub)
    _add_status(sub)
    _add_simulate(sub, with_simulator)
    _add_report(sub)
    return parser


def _command(sub: Any, name: str, summary: str, description: str, epilog: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=description, epilog=epilog,
                                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def _add_common(p: argparse.ArgumentParser, rate: float = 5.0) -> None:
    p.add_argument("--rate", type=float, default=rate, metavar="R",
                   help=f"API requests per second, account-wide (default {rate:g})")
    p.add_argument("--api-concurrency", type=int, default=4, metavar="N", help="API requests in flight (default 4)")
    p.add_argument("--download-concurrency", type=int, default=64, metavar="N",
                   help="image downloads in flight, per worker process (default 64)")
    p.add_argument("--batch-size", type=int, default=100, metavar="N",
                   help="patents per API request, 1..100 (default 100)")
    p.add_argument("--drawings", choices=("abstract", "all"), default=_env("PATENT_IMAGES_DRAWINGS") or "abstract",
                   help="abstract: the front-page drawing of each patent (P021, 100 patents a call); all: every "
                        "drawing (P042 fulltext-image, one patent a call, pages of 100). One job holds one kind "
                        "(env PATENT_IMAGES_DRAWINGS; default abstract)")
    p.add_argument("--retries", type=int, default=5, metavar="N",
                   help="attempts per request on transient faults (default 5)")
    p.add_argument("--retry-failed", action="store_true", help="also retry patents that failed in earlier runs")
    p.add_argument("--column", metavar="NAME", help="the input column holding patent numbers or ids, when it is not "
                   "patent_number, pn, publication_number or patent_id")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars or progress lines (without a terminal: a line every few seconds)")
    p.add_argument("--verbose", action="store_true",
                   help="also show routine notices on stderr: token refreshes, each failed patent")
    p.add_argument("--max-charged", type=int, metavar="N",
                   help="stop asking once this many results may be charged (exit 4; the next run continues)")
    p.add_argument("--max-runtime", type=_duration, metavar="DURATION",
                   help="stop asking after this long, e.g. 90m or 2h (exit 4; the next run continues)")
    p.add_argument("--recheck-after", type=float, metavar="DAYS", dest="recheck_after_days",
                   help="ask again for no_image/not_found patents settled more than DAYS ago (default: never)")
    p.add_argument("--durable", action="store_true",
                   help="fsync each image and the state before a patent counts as downloaded (slower)")
    p.add_argument("--expiry-margin", type=float, default=120.0, metavar="SECONDS",
                   help="do not start a download this close to its URL's expiry (never more than a quarter of "
                        "the URL's lifetime); ask again (default 120)")
    p.add_argument("--dry-run", action="store_true", help="print what the run would do and cost; call nothing")
    p.add_argument("--json", action="store_true", help="print the summary (or dry-run plan) as JSON on stdout")
    p.add_argument("--log-file", metavar="PATH", help="append one line per event worth keeping to this file")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="log file format: text lines or JSON lines (default text)")
    p.add_argument("--metrics-file", metavar="PATH",
                   help="after the run, write its figures in the Prometheus text format for node_exporter's "
                        "textfile collector (replaced atomically; name it *.prom)")
    p.add_argument("--state", dest="state_url", default=_env("PATENT_IMAGES_STATE"), metavar="URL",
                   help="where the state lives: default DIR/state.sqlite; postgresql://user@host:port/db for a "
                        "store shared by several workers (env PATENT_IMAGES_STATE)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="processes on this machine that share the job (default: one, and another each time "
                        "the first is CPU-bound for half a second, up to one per 5,000 patents left to do, the "
                        "number of cores and 8)")
    p.add_argument("--lease", type=float, default=60.0, metavar="SECONDS",
                   help="how long a worker's claim on a batch lives without renewal; a dead worker's keys are "
                        "taken over after it (default 60)")
    p.add_argument("--s3-endpoint-url", default=_env("AWS_ENDPOINT_URL"), metavar="URL",
                   help="S3-compatible service for --out s3://bucket/prefix (MinIO, Ceph, COS, OSS); credentials "
                        "come from the standard AWS chain (env AWS_ENDPOINT_URL)")
    p.add_argument("--throttle-patience", type=float, default=60.0, metavar="SECONDS",
                   help="how long throttling answers may persist while the run is down to single spaced probes "
                        "before it is called a spent quota, exit 3 (default 60)")
    p.add_argument("--state-patience", type=_duration, default=300.0, metavar="SECONDS",
                   help="how long a shared state store may stay unreachable (restart, failover) before the run "
                        "stops with exit 3; within it, workers reconnect and lose nothing (90s, 5m; default 300)")
    p.add_argument("--io", choices=IO_MODES, default="auto",
                   help="how images are written: direct from the event loop (local disks), threads (one "
                        "worker-thread hop per image, for NFS/SMB/FUSE), auto: threads on such file systems "
                        "(default auto)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")


def _duration(text: str) -> float:
    """parse_duration for argparse: a bad value is a usage error (exit 2), not a traceback."""
    try:
        return parse_duration(text)
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_run(sub: Any) -> None:
    p = _command(sub, "run", "download the abstract images of the patents in CSV or .xlsx files",
                 helptext.RUN, helptext.RUN_EXAMPLES + "\n\n" + helptext.exit_codes())
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="CSV or .xlsx files listing patent numbers or PatSnap patent ids")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the job folder: images, manifest.csv/.jsonl, rejects.csv, summary.json, state")
    p.add_argument("--api-base", default=_env("PATSNAP_API_BASE") or DEFAULT_API_BASE, metavar="URL",
                   help=f"API base URL (env PATSNAP_API_BASE, default {DEFAULT_API_BASE})")
    p.add_argument("--api-key", default=_env("PATSNAP_API_KEY"), metavar="KEY",
                   help="the apikey query parameter (env PATSNAP_API_KEY; defaults to the client id); a key "
                        "of PatSnap's newer platform (sk-…) alone authenticates, sent as the bearer too")
    p.add_argument("--token", default=_env("PATSNAP_TOKEN"), metavar="TOKEN",
                   help="a static bearer token (env PATSNAP_TOKEN)")
    p.add_argument("--client-id", default=_env("PATSNAP_CLIENT_ID"), metavar="ID",
                   help="OAuth2 client id (env PATSNAP_CLIENT_ID)")
    p.add_argument("--client-secret", default=_env("PATSNAP_CLIENT_SECRET"), metavar="SECRET",
                   help="OAuth2 client secret (env PATSNAP_CLIENT_SECRET)")
    _add_common(p)
    p.set_defaults(func=cmd_run)


def _add_demo(sub: Any) -> None:
    p = _command(sub, "demo", "the whole pipeline against the built-in simulator, no credentials",
                 helptext.DEMO, helptext.DEMO_EXAMPLES)
    p.add_argument("--out", default="patent-images-demo", metavar="DIR",
                   help="the job folder to fill (default ./patent-images-demo)")
    p.add_argument("--patents", type=int, metavar="N",
                   help="use N generated publication numbers instead of the bundled sample list")
    p.add_argument("--input", metavar="FILE",
                   help="read this CSV or .xlsx instead (default: the bundled sample_inputs/patents.csv)")
    _add_common(p, rate=20.0)  # no account to spare on the simulator: faster than the real default
    p.set_defaults(func=cmd_demo)


def _add_status(sub: Any) -> None:
    p = _command(sub, "status", "counts by status and the last runs, calling nothing",
                 helptext.STATUS, helptext.STATUS_EXAMPLES)
    p.add_argument("--out", required=True, metavar="DIR", help="the job folder (or s3://bucket/prefix) to describe")
    _add_state(p)
    p.add_argument("--json", action="store_true", help="print the counts and runs as JSON")
    p.add_argument("--runs", type=int, default=10, metavar="N", help="how many recent runs to list (default 10)")
    p.set_defaults(func=cmd_status)


def _add_state(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", dest="state_url", default=_env("PATENT_IMAGES_STATE"), metavar="URL",
                   help="the job's state store, as given to run (env PATENT_IMAGES_STATE; default DIR/state.sqlite)")


def _add_simulate(sub: Any, full: bool) -> None:
    p = _command(sub, "simulate", "run the PatSnap API and CDN simulator alone",
                 helptext.SIMULATE, helptext.SIMULATE_EXAMPLES)
    if full:
        from downloader.simulator import add_simulate_arguments

        add_simulate_arguments(p)
    p.set_defaults(func=cmd_simulate)


def _add_report(sub: Any) -> None:
    p = _command(sub, "report", "write a self-contained HTML report of DIR",
                 helptext.REPORT, helptext.REPORT_EXAMPLES)
    p.add_argument("--out", required=True, metavar="DIR", help="the job folder (or s3://bucket/prefix) to report on")
    p.add_argument("--to", metavar="FOLDER",
                   help="where to write report.html (default: DIR); thumbnails link back to DIR/images")
    _add_state(p)
    p.add_argument("--s3-endpoint-url", default=_env("AWS_ENDPOINT_URL"), metavar="URL",
                   help="S3-compatible service for --out s3://… (env AWS_ENDPOINT_URL)")
    p.set_defaults(func=cmd_report)


# --- commands -------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """`run`: the main job."""
    return run_command(args.inputs, args.out, settings_from(args), args)


def cmd_demo(args: argparse.Namespace) -> int:
    """`demo`: start the simulator on loopback and run the real pipeline against it."""
    from downloader.cli.demo import run_demo

    return run_demo(args)


def cmd_status(args: argparse.Namespace) -> int:
    """`status`: counts and recent runs from the state store."""
    from downloader.cli.status import show_status

    return show_status(args.out, args.state_url, args.json, args.runs)


def cmd_simulate(args: argparse.Namespace) -> int:
    """`simulate`: the simulator alone until Ctrl-C."""
    from downloader.simulator import config_from_args, serve

    try:
        serve(config_from_args(args), args.host, args.port)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise UsageError(f"port {args.port} is in use; choose another with --port") from None
        if err.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
            raise UsageError(f"cannot listen on {args.host} port {args.port} ({err.strerror}); "
                             "choose another with --host or --port") from None
        raise
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """`report`: report.html for a job folder."""
    from downloader.job import report_job

    path = report_job(args.out, args.to, Settings(state_url=args.state_url, s3_endpoint_url=args.s3_endpoint_url))
    print(path)  # noqa: T201
    return 0
