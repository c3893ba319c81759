"""The line a person reads when a run ends (stderr), from the run's typed summary.

Every count a person may wonder about is there, in words that read right: "1 API call",
"2 API calls", thousands separated. Input rows that were not used (rejected, duplicates) are
counted too, so no row of the input goes unmentioned. A run that found everything already
settled says so instead of a line of zeros.
"""

from __future__ import annotations

from pathlib import PurePath

from downloader.core.outcome import StopReason, Summary, settled_count
from downloader.report.words import count, nothing_done, stop_words

__all__ = ["STATUS_ORDER", "count", "describe_summary", "nothing_done", "stop_words"]

STATUS_ORDER = ("downloaded", "no_image", "not_found", "failed", "pending", "resolved")  # as shown and exported
_STOPS = {
    StopReason.BUDGET: " Stopped: the --max-charged budget is spent; the next run continues.",
    StopReason.RUNTIME: " Stopped: --max-runtime reached; the next run continues.",
}


def describe_summary(s: Summary, manifest: str) -> str:
    """The final one-paragraph summary; `manifest` is where manifest.csv was written."""
    settled = settled_count(s.by_status)
    if nothing_done(s, settled):
        return (f"Nothing to do: {settled:,} of {count(s.unique, 'patent')} already settled "
                f"({_statuses(s)}){_inputs(s, manifest)}; no API call made. Manifest: {manifest}.")
    stop = _STOPS.get(s.stop_reason, "") if s.stop_reason else ""
    recharged = f" ({s.recharged:,} recharged)" if s.recharged else ""
    return (f"Done in {s.seconds:.1f} s: {count(s.unique, 'patent')} ({_statuses(s) or 'nothing to do'})"
            f"{_inputs(s, manifest)}; {count(s.api_calls, 'API call')}, "
            f"{count(s.charged, 'charged result')}{recharged}, {count(s.retries, 'retry', 'retries')}, "
            f"{count(s.images, 'image')} ({s.bytes / 1e6:,.1f} MB, {s.images_per_second:,.0f}/s), "
            f"peak memory {s.peak_rss_mb:,.0f} MB. Manifest: {manifest}.{stop}")


def _statuses(s: Summary) -> str:
    return ", ".join(f"{s.by_status[k]:,} {k}" for k in STATUS_ORDER if s.by_status.get(k))


def _inputs(s: Summary, manifest: str) -> str:
    """"; 3 rejected rows (see …/rejects.csv), 12 duplicates", or nothing when every row was used once."""
    parts = []
    if s.rejected:
        rejects = PurePath(manifest).with_name("rejects.csv")
        parts.append(f"{count(s.rejected, 'rejected row')} (see {rejects})")
    if s.duplicates:
        parts.append(count(s.duplicates, "duplicate"))
    return "; " + ", ".join(parts) if parts else ""
