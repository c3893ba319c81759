"""The shared vocabulary of the pipeline: frozen values passed between stages.

Nothing here does I/O; every stage speaks in these types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Kind(enum.StrEnum):
    """Which API parameter a key is sent as. A batch holds one kind only."""

    NUMBER = "patent_number"
    ID = "patent_id"


class Status(enum.StrEnum):
    """Where a patent stands in the state store.

    `pending` (nothing known yet, or its URL expired) and `resolved` (a signed URL is known, the
    image is not on disk yet) are unsettled; the other four are what the manifest reports.
    """

    PENDING = "pending"
    RESOLVED = "resolved"
    DOWNLOADED = "downloaded"
    NO_IMAGE = "no_image"
    NOT_FOUND = "not_found"
    FAILED = "failed"



@dataclass(frozen=True, slots=True)
class PatentKey:
    """One normalized input identifier: a publication number or a PatSnap patent id."""

    kind: Kind
    value: str


@dataclass(frozen=True, slots=True)
class FigureKey(PatentKey):
    """One drawing of a patent (`--drawings all`): the patent's key and `image`, the path of the drawing's
    URL (the object's name, the same in every listing while the signature changes), which is what tells it
    from the patent's other drawings; `figure` is where the listing that named it put it (1-based, in the
    API's order), not part of its identity: a drawing listed again keeps its key when the drawings before it
    change. Results of a drawing carry it; the state store files them under the patent."""

    figure: int = field(compare=False)
    image: str


class Drawings(enum.StrEnum):
    """Which drawings a job fetches; one job (output folder or state store) holds one kind."""

    ABSTRACT = "abstract"  # the front-page drawing, P021 abstract-image, 100 patents a call
    ALL = "all"  # every drawing, P042 fulltext-image, one patent a call, pages of 100


@dataclass(frozen=True, slots=True)
class Reject:
    """An input row that cannot be used, and why. Goes to rejects.csv; never stops the run."""

    source: str
    line: int
    raw: str
    reason: str


@dataclass(frozen=True, slots=True)
class Batch:
    """Up to 100 keys of one kind, asked in one API call; `lease` is the generation of the claim
    that holds them (0: no claim), which the results' writes must match. `stored` (--drawings all):
    drawings of these keys already downloaded (a patent asked again for one expired URL keeps them: listed
    again, they are not downloaded again)."""

    kind: Kind
    keys: tuple[str, ...]
    lease: int = 0
    stored: frozenset[FigureKey] = frozenset()


@dataclass(frozen=True, slots=True)
class Resolved:
    """The API gave a signed image URL for this key; `signed_at` is when it was signed (read from
    the URL, else the answer's time), so `expires_at - signed_at` is the URL's lifetime.
    A drawing of `--drawings all` has a FigureKey and the API's `image_type` (e.g. "drawings")."""

    key: PatentKey
    pn: str
    patent_id: str
    num: str
    url: str
    expires_at: float
    signed_at: float | None = None
    image_type: str | None = None


@dataclass(frozen=True, slots=True)
class Listed:
    """P042 listed `figures` (≥ 1) drawings of this patent; its drawings' Resolved events follow in
    the same record. The patent is settled once each of its drawings is."""

    key: PatentKey
    pn: str
    patent_id: str
    figures: int


@dataclass(frozen=True, slots=True)
class NoImage:
    """The patent exists but has no abstract drawing."""

    key: PatentKey
    pn: str
    patent_id: str


@dataclass(frozen=True, slots=True)
class NotFound:
    """The API returned nothing for this key."""

    key: PatentKey


@dataclass(frozen=True, slots=True)
class Failed:
    """This key could not be settled; `error` is `TypeName: detail`, kept in the manifest."""

    key: PatentKey
    error: str


Outcome = Resolved | Listed | NoImage | NotFound | Failed


@dataclass(frozen=True, slots=True)
class Downloaded:
    """An image is on disk, verified, under its final name (relative to the output folder)."""

    key: PatentKey
    local_file: str
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class UrlExpired:
    """The URL expired (or was about to) before the download; the key goes back for a fresh URL.

    A key whose URLs expired unused over and over is deferred until `retry_at` (epoch seconds):
    an expiry is never the patent's fault, so it never makes it `failed`."""

    key: PatentKey
    reason: str
    retry_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Deferred:
    """Not settled for reasons outside the patent (an outage, spent retries): asked or fetched later.

    The status does not change (pending stays pending; resolved keeps its URL for the download).
    `retry_at` (epoch seconds) keeps claims off it until then; `error` says why, for the log.
    `billed`: an API answer for it may have been billed and was lost on the way (or a page of its
    listing was paid for): the store remembers it, so asking again later counts as a recharge.
    """

    key: PatentKey
    error: str
    retry_at: float
    billed: bool = False


@dataclass(frozen=True, slots=True)
class ImageJob:
    """A download to do: the key, its signed URL and where the file belongs.

    `signed_at` is None when not known (a URL claimed from the store): read from the URL then.
    `lease` is the generation of the claim that holds the key (0: no claim): the image is put in
    place, and its result written, only while that claim stands.
    """

    key: PatentKey
    pn: str
    num: str
    url: str
    expires_at: float
    signed_at: float | None = None
    lease: int = 0


@dataclass(slots=True)
class Counters:
    """Run-wide tallies that end up in summary.json and the run history."""

    api_calls: int = 0
    asked: int = 0
    charged: int = 0
    recharged: int = 0  # results paid again: an earlier URL expired unused, or an answer was lost on the way
    retries: int = 0
    throttled: int = 0
    token_refreshes: int = 0
    bytes: int = 0
    images: int = 0
    expired_urls: int = 0
    fenced: int = 0  # results refused or images not put in place: the lease had lapsed, another worker held the keys
