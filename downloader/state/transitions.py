"""Which status each result may move a key out of, and the guarded UPDATE that applies it.

Pure: both stores build their statements here (only the placeholder differs), so their
transitions cannot drift apart. A result whose guard does not match is ignored: a late or
repeated event never undoes progress.

Fencing: a result written under a claim (`Held`) also names the claim's generation, and its UPDATE
matches only while the key's `lease_gen` is still that generation. A worker whose lease lapsed
(cut off from the database, paused) and whose keys another worker claimed since writes nothing:
the store counts such results as refused (`refused` tells them from late events).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

from downloader.core.model import (
    Deferred,
    Downloaded,
    Failed,
    FigureKey,
    Listed,
    NoImage,
    NotFound,
    Resolved,
    Status,
    UrlExpired,
)
from downloader.state.base import Held, StateEvent

# Which statuses each new status may be reached from (UrlExpired leads back to pending; Deferred
# changes no status: it only sets `retry_at`, so a resolved key keeps its URL for a later download).
ALLOWED_FROM: dict[Status, tuple[Status, ...]] = {
    Status.RESOLVED: (Status.PENDING, Status.RESOLVED),
    Status.NO_IMAGE: (Status.PENDING, Status.RESOLVED),
    Status.NOT_FOUND: (Status.PENDING, Status.RESOLVED),
    Status.FAILED: (Status.PENDING, Status.RESOLVED),
    Status.DOWNLOADED: (Status.RESOLVED,),
    Status.PENDING: (Status.RESOLVED,),  # a URL that expired before its download
}
_DEFERRED_FROM = (Status.PENDING, Status.RESOLVED)
# A key whose fresh URLs expired this many times before their download is deferred (until the event's
# retry_at) before it is asked again; an expiry is never the patent's fault, so it never fails it.
MAX_EXPIRIES = 5
_RELEASE = "claimed_by=NULL, lease_until=NULL"


def transition_allowed(current: Status, new: Status) -> bool:
    """Whether an event that sets `new` may apply to a row in `current`."""
    return current in ALLOWED_FROM.get(new, ())


def statement_for(event: StateEvent, mark: str, now: float) -> tuple[str, tuple[Any, ...]]:
    """The guarded statement for one event and all its parameters (`now` is updated_at)."""
    if isinstance(event.key, FigureKey):
        return drawing_update(event, event.key, mark, now)
    sql, params = update_for(event, mark)
    return sql, (*params, now, event.key.kind.value, event.key.value)


def fenced_statement(write: StateEvent | Held, mark: str, now: float) -> tuple[str, tuple[Any, ...]]:
    """`statement_for`, and for a Held write the fence: its row (or, for a drawing being listed, its
    patent's row) must still have the write's generation. The generation is the last parameter."""
    if not isinstance(write, Held):
        return statement_for(write, mark, now)
    sql, params = statement_for(write.event, mark, now)
    return _fenced(sql, mark), (*params, write.lease)


@functools.lru_cache(maxsize=64)
def _fenced(sql: str, mark: str) -> str:
    # Cached, as `_guarded` and `_drawing` are: the same few statements serve every event, and building
    # them anew for each one cost a third of `fenced_statement` (3.1 → 2.1 µs CPU per event, timeit).
    if sql.startswith("INSERT"):  # a listed drawing, inserted from its patent's row: fenced there
        return sql.replace(" ON CONFLICT", f" AND p.lease_gen={mark} ON CONFLICT", 1)
    return f"{sql} AND lease_gen={mark}"


Fence = tuple[str, str, str, str]  # table, kind, key, a drawing's image ("" for a patent's row)


def fence_of(write: Held) -> Fence:
    """The row whose generation decides whether `write` applies."""
    event, key = write.event, write.event.key
    if isinstance(key, FigureKey) and not isinstance(event, Resolved):
        return "drawings", key.kind.value, key.value, key.image
    return "patents", key.kind.value, key.value, ""


def refused(writes: Sequence[StateEvent | Held], current: dict[Fence, int]) -> list[Held]:
    """The held writes whose row now has another generation (`current`: fence → lease_gen)."""
    return [w for w in writes if isinstance(w, Held) and current.get(fence_of(w), w.lease) != w.lease]


def update_for(event: StateEvent, mark: str) -> tuple[str, tuple[Any, ...]]:
    """The guarded UPDATE of a patent's row for one event, with `mark` as placeholder ('?' or '%s').

    Its trailing parameters, appended by the caller, are updated_at, kind, key (`fenced_update` does).
    """
    m, guarded = mark, _guarded
    match event:  # the two of nearly every image first: a match tries its cases in order
        case Downloaded(_, local_file, size, sha):
            return guarded(Status.DOWNLOADED, f"local_file={m}, bytes={m}, sha256={m}, error=NULL, {_RELEASE}",
                           (), m), (local_file, size, sha)
        case Resolved(_, pn, pid, num, url, expires_at):
            return guarded(Status.RESOLVED, f"pn={m}, patent_id={m}, num={m}, url={m}, expires_at={m}, error=NULL, "
                                            "retry_at=NULL, attempts=attempts+1", (), m), (
                pn, pid, num, url, expires_at)
        case Listed(_, pn, pid, figures):  # its drawings' rows follow (drawing_update); it keeps its claim
            return guarded(Status.RESOLVED, f"pn={m}, patent_id={m}, figures={m}, url=NULL, expires_at=NULL, "
                                            "error=NULL, retry_at=NULL, attempts=attempts+1", (), m), (pn, pid, figures)
        case NoImage(_, pn, pid):  # figures=NULL: a patent listed before lists none now (`retire_unlisted`)
            return guarded(Status.NO_IMAGE, f"pn={m}, patent_id={m}, url=NULL, error=NULL, retry_at=NULL, "
                                            f"figures=NULL, attempts=attempts+1, {_RELEASE}", (), m), (pn, pid)
        case NotFound():
            return guarded(Status.NOT_FOUND, "url=NULL, error=NULL, retry_at=NULL, figures=NULL, "
                                             f"attempts=attempts+1, {_RELEASE}", (), m), ()
        case Failed(_, error):
            return guarded(Status.FAILED, f"error={m}, attempts=attempts+1, {_RELEASE}", (), m), (error,)
        case UrlExpired(_, reason, retry_at):
            often = f"expiries+1>={MAX_EXPIRIES}"
            return guarded(Status.PENDING, f"url=NULL, expires_at=NULL, expiries=expiries+1, error={m}, "
                                           f"retry_at=CASE WHEN {often} THEN {m} ELSE NULL END, {_RELEASE}", (), m), (
                reason, retry_at)
        case Deferred(_, error, retry_at, billed):
            # An answer billed but lost counts as an attempt: the claim that asks again calls it a repeat.
            paid = "attempts=attempts+1, " if billed else ""
            return guarded(None, f"error={m}, retry_at={m}, {paid}{_RELEASE}", _DEFERRED_FROM, m), (error, retry_at)
    raise TypeError(f"not a state event: {event!r}")


@functools.lru_cache(maxsize=64)
def _guarded(new: Status | None, assignments: str, allowed: tuple[Status, ...], mark: str) -> str:
    """The UPDATE of one key, allowed only from the statuses `allowed` (by default those that may
    become `new`); `new` None leaves the status as it is. Cached: the same few statements serve every event."""
    if new is not None:
        allowed, assignments = allowed or ALLOWED_FROM[new], f"status='{new.value}', {assignments}"
    sources = ",".join(f"'{s.value}'" for s in allowed)
    return (f"UPDATE patents SET {assignments}, updated_at={mark} "
            f"WHERE kind={mark} AND key={mark} AND status IN ({sources})")


# --- drawings (--drawings all): one row per drawing under its patent ------------------------------
#
# A drawing's row is found by its `image` (the path of its URL: `FigureKey`), never by its figure: when the
# API drops a drawing from the middle of a patent's list, the later ones move up a place, and a row found by
# its place would pair a stored file with another drawing's URL. A complete listing (`Listed` and a
# `Resolved` for each drawing it names, in one transaction) renumbers the patent's rows to its own order:
# each drawing it names is written at its figure negated (kept rows and new ones alike, so no figure is ever
# two rows' at once); the rows still at a positive figure after it are the ones it no longer names
# (`retire_unlisted`), and `seat_listed` then turns the negated figures positive. A drawing downloaded before
# keeps its file, URL and status: only its figure follows the listing.

_DRAWING_WHERE = "WHERE kind={m} AND key={m} AND image={m} AND status IN ({sources})"
# What a listing gives a drawing's row: a fresh URL held by the patent's claim, unless it is downloaded.
_LISTED = {"pn": "excluded.pn", "num": "excluded.num", "url": "excluded.url", "expires_at": "excluded.expires_at",
           "image_type": "excluded.image_type", "status": "'resolved'", "error": "NULL", "retry_at": "NULL",
           "claimed_by": "excluded.claimed_by", "lease_until": "excluded.lease_until",
           "lease_gen": "excluded.lease_gen", "updated_at": "excluded.updated_at"}
_RELISTED = "figure=excluded.figure, " + ", ".join(
    f"{column}=CASE WHEN drawings.status='downloaded' THEN drawings.{column} ELSE {value} END"
    for column, value in _LISTED.items())


def drawing_update(event: StateEvent, key: FigureKey, mark: str, now: float) -> tuple[str, tuple[Any, ...]]:
    """The guarded statement for an event of one drawing, and its parameters.

    A listed drawing is inserted under its patent (once the listing made the patent resolved), held by the
    patent's claim (the worker that asked downloads it), or, listed before, given a fresh URL unless it is
    already downloaded (the pipeline does not download those again: `Batch.stored`); either way at its new
    figure, negated until `seat_listed` (see above). The patent's own row follows its drawings through
    `settle_patent`, run after them in the same transaction.
    """
    m, where = mark, (now, key.kind.value, key.value, key.image)
    match event:
        case Resolved(_, _, _, num, url, expires_at, _, image_type):
            return (f"INSERT INTO drawings (kind, key, figure, image, pn, num, url, expires_at, image_type, status, "
                    f"claimed_by, lease_until, lease_gen, updated_at) SELECT p.kind, p.key, {m}, {m}, p.pn, {m}, {m}, "
                    f"{m}, {m}, 'resolved', p.claimed_by, p.lease_until, p.lease_gen, {m} FROM patents p "
                    f"WHERE p.kind={m} AND p.key={m} AND p.status='resolved' "
                    f"ON CONFLICT (kind, key, image) DO UPDATE SET {_RELISTED}",
                    (-key.figure, key.image, num, url, expires_at, image_type, now, key.kind.value, key.value))
        case Downloaded(_, local_file, size, sha):
            return _drawing(f"status='downloaded', local_file={m}, bytes={m}, sha256={m}, error=NULL, {_RELEASE}",
                            ("resolved",), m), (local_file, size, sha, *where)
        case UrlExpired(_, reason, retry_at):  # the patent is asked again (SETTLE_PATENT) for fresh URLs
            often = f"expiries+1>={MAX_EXPIRIES}"  # ... not before retry_at, when it happened often
            return _drawing(f"status='pending', url=NULL, expires_at=NULL, expiries=expiries+1, error={m}, "
                            f"retry_at=CASE WHEN {often} THEN {m} ELSE NULL END, {_RELEASE}",
                            ("resolved",), m), (reason, retry_at, *where)
        case Failed(_, error):
            return _drawing(f"status='failed', error={m}, {_RELEASE}", ("resolved", "pending"), m), (error, *where)
        case Deferred(_, error, retry_at, _):
            return _drawing(f"error={m}, retry_at={m}, {_RELEASE}", ("resolved",), m), (error, retry_at, *where)
    raise TypeError(f"not an event of a drawing: {event!r}")


@functools.lru_cache(maxsize=64)
def _drawing(assignments: str, sources: tuple[str, ...], m: str) -> str:
    listed = ",".join(f"'{s}'" for s in sources)
    return f"UPDATE drawings SET {assignments}, updated_at={m} " + _DRAWING_WHERE.format(m=m, sources=listed)


def settles_patent(event: StateEvent) -> bool:
    """Whether this event may settle its patent or send it back to the API (see `settle_patent`): a
    drawing's result, or the patent listed again with every drawing already downloaded (the store kept
    them; none waits for a download, so nothing else would settle it)."""
    if isinstance(event, Listed):
        return True
    return isinstance(event.key, FigureKey) and isinstance(event, Downloaded | UrlExpired | Failed)


def lists_patent(event: StateEvent) -> bool:
    """Whether this event is a complete listing of a patent's drawings (all its pages answered: the
    resolver returns none before), after which `retire_unlisted` runs: Listed, or none at all."""
    return isinstance(event, Listed | NoImage | NotFound)


def retire_unlisted(mark: str) -> str:
    """Drop the drawings of a patent that its latest complete listing no longer names: after no_image or
    not_found (its row's `figures` NULL) all of them; after a listing, those it did not write (still at a
    positive figure while the ones it named wait at theirs negated: see above). The manifest keeps one
    row per drawing the API lists, and a drawing left pending by a URL that expired cannot send its
    patent back to the API (and bill it) again and again. Run after the listing's own statements, before
    `seat_listed` and `settle_patent`; a refused or late listing wrote no row and records no NULL, so it
    retires nothing. A file already downloaded for such a drawing stays where it is. Parameters: kind, key."""
    m = mark
    return (f"DELETE FROM drawings WHERE kind={m} AND key={m} AND figure > 0 AND ((SELECT p.figures FROM patents p "
            "WHERE p.kind=drawings.kind AND p.key=drawings.key) IS NULL OR EXISTS (SELECT 1 FROM drawings n "
            "WHERE n.kind=drawings.kind AND n.key=drawings.key AND n.figure < 0))")


def seat_listed(mark: str) -> str:
    """Give the drawings a listing just wrote their figure (written negated: see above), once
    `retire_unlisted` dropped the rows that held those figures before. Parameters: kind, key."""
    m = mark
    return f"UPDATE drawings SET figure=-figure WHERE kind={m} AND key={m} AND figure < 0"


def settle_patent(mark: str) -> str:
    """A listed patent none of whose drawings waits for a download any more: pending again when a
    URL expired (asked again: one call, fresh URLs; not before a drawing's retry_at, set when its URLs
    expired often), else failed if a drawing failed, else downloaded.
    Parameters: updated_at, kind, key."""
    m = mark
    left = "FROM drawings d WHERE d.kind=patents.kind AND d.key=patents.key AND d.status="
    return (f"UPDATE patents SET status=CASE WHEN EXISTS (SELECT 1 {left}'pending') THEN 'pending' "
            f"WHEN EXISTS (SELECT 1 {left}'failed') THEN 'failed' ELSE 'downloaded' END, "
            f"error=(SELECT MIN(d.error) {left}'failed'), retry_at=(SELECT MAX(d.retry_at) {left}'pending'), "
            f"{_RELEASE}, updated_at={m} "
            f"WHERE kind={m} AND key={m} AND status='resolved' AND figures IS NOT NULL "
            f"AND NOT EXISTS (SELECT 1 {left}'resolved')")


Rows = list[tuple[Any, ...]]


class Writes(NamedTuple):
    """A batch of results as the statements that apply it, in order: `results`, runs of alike statements
    (one executemany each; the rows they change count against the batch), then `follow_ups`: the
    patents listed whole (`retire_unlisted`, `seat_listed`) and those whose drawings settled (`settle_patent`)."""

    results: list[tuple[str, Rows]]
    follow_ups: list[tuple[str, Rows]]


def writes(events: Sequence[StateEvent | Held], mark: str, now: float) -> Writes:
    """The statements for a batch of results (see `Writes`); `now` is updated_at."""
    results: list[tuple[str, Rows]] = []
    patents: dict[tuple[Any, ...], None] = {}  # whose drawings settled: the patent may settle too
    listings: dict[tuple[Any, ...], None] = {}  # listed whole: drawings no longer listed are retired
    for event in events:
        sql, params = fenced_statement(event, mark, now)
        if not results or results[-1][0] != sql:
            results.append((sql, []))
        results[-1][1].append(params)
        plain = event.event if isinstance(event, Held) else event
        if lists_patent(plain):
            listings[(plain.key.kind.value, plain.key.value)] = None
        if settles_patent(plain):
            patents[(now, plain.key.kind.value, plain.key.value)] = None
    follow_ups = [(sql, list(rows)) for sql, rows in ((retire_unlisted(mark), listings), (seat_listed(mark), listings),
                                                      (settle_patent(mark), patents)) if rows]
    return Writes(results, follow_ups)
