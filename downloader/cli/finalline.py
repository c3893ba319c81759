"""The line a person reads when a run ends (stderr), from the run's typed summary."""

from __future__ import annotations

from downloader.core.outcome import StopReason, Summary

_ORDER = ("downloaded", "no_image", "not_found", "failed", "pending", "resolved")
_STOPS = {
    StopReason.BUDGET: " Stopped: the --max-charged budget is spent; the next run continues.",
    StopReason.RUNTIME: " Stopped: --max-runtime reached; the next run continues.",
}


def describe_summary(s: Summary, manifest: str) -> str:
    """The final one-paragraph summary; `manifest` is where manifest.csv was written."""
    by = s.by_status
    parts = ", ".join(f"{by[k]} {k}" for k in _ORDER if by.get(k))
    stop = _STOPS.get(s.stop_reason, "") if s.stop_reason else ""
    return (f"Done in {s.seconds:.1f} s: {s.unique} patents ({parts or 'nothing to do'}); "
            f"{s.api_calls} API calls, {s.charged} charged results, {s.retries} retries, "
            f"{s.images} images ({s.bytes / 1e6:.1f} MB, {s.images_per_second:.0f}/s), "
            f"peak memory {s.peak_rss_mb:.0f} MB. Manifest: {manifest}.{stop}")
