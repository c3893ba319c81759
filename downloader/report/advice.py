"""What to do about each kind of failed patent, by the error type stored in its `error` ("Type: detail").

Used by the report's failure groups; the words name the options that help, so a person can act
without reading the source.
"""

from __future__ import annotations

ADVICE: dict[str, str] = {
    "BadImageError": "The image CDN answered with something that is not a usable image (a missing file, an HTML "
                     "page, a broken or oversized body). Usually on PatSnap's side: rerun with --retry-failed in a "
                     "day; if the same patents keep failing, send their numbers to PatSnap support.",
    "InvalidParameterError": "PatSnap refused these identifiers as invalid. Check them in the input (a typo, a "
                             "kind code that does not exist, an application number given as a publication "
                             "number), correct the input and rerun with --retry-failed.",
    "UrlExpiredError": "The signed image URLs kept expiring before their download could start: downloads were "
                       "slower than the URLs' lifetime. Rerun with --retry-failed, with a higher "
                       "--download-concurrency or a smaller --expiry-margin.",
    "TransientApiError": "Temporary API errors outlasted the retries. Rerun with --retry-failed (and a higher "
                         "--retries if this happens often).",
    "TransientDownloadError": "Temporary download errors outlasted the retries. Rerun with --retry-failed (and a "
                              "higher --retries if this happens often).",
}
DEFAULT = ("Rerun with --retry-failed to try these patents again; each failure's detail is in the manifest's "
           "error column and in the --log-file.")


def advice_for(error_type: str) -> str:
    """What to do about failures of this type (a general hint for types without their own)."""
    return ADVICE.get(error_type, DEFAULT)
