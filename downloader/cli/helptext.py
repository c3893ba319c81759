"""The words of `--help`: what each command does and examples of it (the README says the same).

Kept apart from the parser so the parser reads as a list of options. The exit-code table is not
written here: it is the docstring of `core.outcome`, the module that decides exit codes.
"""

from __future__ import annotations

import textwrap

from downloader.core import outcome


def exit_codes() -> str:
    """The exit-code table, from `core.outcome`'s docstring (its lines after the first paragraph)."""
    doc = outcome.__doc__ or ""
    table = doc.split("\n\n", 1)[1] if "\n\n" in doc else doc
    return "exit codes:\n" + textwrap.indent(textwrap.dedent(table).strip("\n"), "  ")


TOP = "Download PatSnap patent abstract images (front-page drawings) in bulk, resumably, with a manifest."
TOP_EXAMPLES = """\
examples:
  patent-images demo                                  try it: the whole pipeline against a built-in simulator
  patent-images run patents.csv --out images/         the real job (credentials from PATSNAP_* variables)
  patent-images status --out images/                  where a job stands, calling nothing
  patent-images report --out images/                  images/report.html: counts, runs, failures, drawings

Run `patent-images COMMAND --help` for the options of each command."""

RUN = """\
Download the abstract image (front-page drawing) of every patent listed in the INPUT files into DIR,
with manifest.csv and manifest.jsonl describing each one.

INPUT is a CSV file (a patent_number, pn, publication_number or patent_id column, or one column
without a header) or an Excel workbook (.xlsx, with the xlsx extra). Unusable rows go to
DIR/rejects.csv with a reason. Patents already settled in DIR are never asked again: after any
stop, run the same command to continue; a finished list costs nothing to run again.

Credentials: --client-id/--client-secret (OAuth2), or --token with --api-key; each can come from
its PATSNAP_* environment variable, which keeps it off the command line."""
RUN_EXAMPLES = """\
examples:
  export PATSNAP_CLIENT_ID=... PATSNAP_CLIENT_SECRET=...
  patent-images run patents.csv --out images/
  patent-images run export.xlsx more.csv --out images/ --max-charged 50000 --max-runtime 6h
  patent-images run patents.csv --out images/ --dry-run          what it would ask and cost
  patent-images run patents.csv --out images/ --retry-failed --log-file run.log
  patent-images run patents.csv --out images/ \\
      --metrics-file /var/lib/node_exporter/textfile_collector/patent-images.prom
  patent-images run patents.csv --out images/ --workers 4       four processes on this machine
  patent-images run patents.csv --out s3://bucket/drawings --state postgresql://patents@db:5432/patents
                                   one of several workers (any machine) sharing one job"""

DEMO = """\
Run the real pipeline against the built-in simulator of the PatSnap API and its image CDN, on a
loopback port chosen from DIR: no credentials, no network. It reads the bundled sample list (about
1,000 patents) and leaves a job folder to look at: manifest, images, summary.json, and report.html
after `patent-images report`. Stopped with Ctrl-C, the same command continues where it stopped."""
DEMO_EXAMPLES = """\
examples:
  patent-images demo
  patent-images demo --out /tmp/demo --patents 5000
  patent-images demo --input my-list.csv --out /tmp/demo
  patent-images report --out patent-images-demo             then open patent-images-demo/report.html"""

STATUS = """\
Show where a job stands: its patents counted by status, and its most recent runs (when, how long,
exit code, API calls, charged results, images, megabytes). Reads the state store only: calls
nothing and changes nothing, so it is safe while a run is going."""
STATUS_EXAMPLES = """\
examples:
  patent-images status --out images/
  patent-images status --out images/ --runs 30
  patent-images status --out images/ --json | jq .by_status"""

SIMULATE = """\
Serve the simulator of the PatSnap API (OAuth token, abstract-image endpoint) and its image CDN
(signed, expiring URLs) until Ctrl-C, for trying the tool or other clients against it. Faults can
be injected: throttling, errors, resets, slow or truncated bodies, expired URLs, refused
credentials. It prints the options that point `run` at it."""
SIMULATE_EXAMPLES = """\
examples:
  patent-images simulate
  patent-images simulate --port 9000 --qps-limit 5 --image-fault-rate 0.05
  patent-images run patents.csv --out /tmp/sim --api-base http://127.0.0.1:8080 --token demo-token --api-key demo-key"""

REPORT = """\
Write report.html for a job folder: counts by status, charged results and images per run,
failures grouped by reason with what to do about each, links to the manifest files, and a
contact sheet of the most recent drawings. One self-contained file that works offline; the
thumbnails point at DIR/images, so keep the report next to the job folder (or use --to)."""
REPORT_EXAMPLES = """\
examples:
  patent-images report --out images/                        writes images/report.html
  patent-images report --out images/ --to /var/www/html/patents"""
