"""Words shared by the final line, `status` and the report: counted nouns, why a run stopped."""

from __future__ import annotations

from typing import Any

from downloader.core.outcome import Summary, settled_count


def count(n: int | float, one: str, many: str | None = None) -> str:
    """`n` with its noun, singular or plural, thousands separated: count(1, "call") → "1 call"."""
    word = one if n == 1 else (many or one + "s")
    return f"{n:,} {word}"


def nothing_done(s: Summary, settled: int) -> bool:
    """True for a run that asked nothing and fetched nothing because every patent was already settled."""
    return s.nothing_to_do or (s.unique > 0 and settled == s.unique and not s.api_calls and not s.images
                                and s.stop_reason is None)


def stop_words(summary: dict[str, Any]) -> str:
    """A history table's last column: why the run stopped early, or that it had nothing to do."""
    if summary.get("stop_reason"):
        return str(summary["stop_reason"])
    try:
        s = Summary.from_dict(summary)
    except (TypeError, ValueError):
        return ""
    settled = settled_count(s.by_status)
    return "nothing to do" if nothing_done(s, settled) else ""
