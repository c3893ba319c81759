"""Which status each result may move a key out of, and the guarded UPDATE that applies it.

Pure: both stores build their statements here (only the placeholder differs), so their
transitions cannot drift apart. A result whose guard does not match is ignored: a late or
repeated event never undoes progress.

Fencing: a result written under a claim (`Held`) also names the claim's generation, and its UPDATE
matches only while the key's `lease_gen` is still that generation. A worker whose lease lapsed
(cut off from the database, paused) and whose keys another worker claimed since writes nothing:
the store counts such results as refused (`refused_query` tells them from late events).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from downloader.core.model import Deferred, Downloaded, Failed, NoImage, NotFound, Resolved, Status, UrlExpired
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
# A key whose fresh URLs expired this many times before their download fails instead of being paid for again.
MAX_EXPIRIES = 5
_RELEASE = "claimed_by=NULL, lease_until=NULL"


def transition_allowed(current: Status, new: Status) -> bool:
    """Whether an event that sets `new` may apply to a row in `current`."""
    return current in ALLOWED_FROM.get(new, ())


def fenced_update(write: StateEvent | Held, mark: str, updated_at: float) -> tuple[str, tuple[Any, ...]]:
    """The whole UPDATE of one result and all of its parameters: `update_for`, plus the fence for a Held."""
    if isinstance(write, Held):
        query, params = update_for(write.event, mark)
        key = write.event.key
        return f"{query} AND lease_gen={mark}", (*params, updated_at, key.kind.value, key.value, write.lease)
    query, params = update_for(write, mark)
    return query, (*params, updated_at, write.key.kind.value, write.key.value)


def refused(writes: Sequence[StateEvent | Held], current: dict[tuple[str, str], int]) -> list[Held]:
    """The held writes whose key now has another generation (`current`: (kind, key) → lease_gen)."""
    return [w for w in writes if isinstance(w, Held)
            and current.get((w.event.key.kind.value, w.event.key.value), w.lease) != w.lease]


def update_for(event: StateEvent, mark: str) -> tuple[str, tuple[Any, ...]]:
    """The guarded UPDATE for one event, with `mark` as placeholder ('?' or '%s').

    Its trailing parameters, appended by the caller, are updated_at, kind, key (`fenced_update` does).
    """
    def guarded(new: Status | None, assignments: str, allowed: tuple[Status, ...] = ()) -> str:
        """The UPDATE of one key, allowed only from the statuses `allowed` (by default those that may
        become `new`); `new` None leaves the status as it is."""
        if new is not None:
            allowed, assignments = allowed or ALLOWED_FROM[new], f"status='{new.value}', {assignments}"
        sources = ",".join(f"'{s.value}'" for s in allowed)
        return (f"UPDATE patents SET {assignments}, updated_at={mark} "
                f"WHERE kind={mark} AND key={mark} AND status IN ({sources})")

    m = mark
    match event:
        case Resolved(_, pn, pid, num, url, expires_at):
            return guarded(Status.RESOLVED, f"pn={m}, patent_id={m}, num={m}, url={m}, expires_at={m}, error=NULL, "
                                            "retry_at=NULL, attempts=attempts+1"), (pn, pid, num, url, expires_at)
        case NoImage(_, pn, pid):
            return guarded(Status.NO_IMAGE, f"pn={m}, patent_id={m}, url=NULL, error=NULL, retry_at=NULL, "
                                            f"attempts=attempts+1, {_RELEASE}"), (pn, pid)
        case NotFound():
            return guarded(Status.NOT_FOUND, "url=NULL, error=NULL, retry_at=NULL, attempts=attempts+1, "
                                             f"{_RELEASE}"), ()
        case Failed(_, error):
            return guarded(Status.FAILED, f"error={m}, attempts=attempts+1, {_RELEASE}"), (error,)
        case Downloaded(_, local_file, size, sha):
            return guarded(Status.DOWNLOADED, f"local_file={m}, bytes={m}, sha256={m}, error=NULL, {_RELEASE}"), (
                local_file, size, sha)
        case UrlExpired(_, reason):
            gave_up = f"expiries+1>={MAX_EXPIRIES}"
            sql = guarded(Status.PENDING, f"url=NULL, expires_at=NULL, expiries=expiries+1, error={m}, {_RELEASE}")
            sql = sql.replace("status='pending'", f"status=CASE WHEN {gave_up} THEN 'failed' ELSE 'pending' END", 1)
            sql = sql.replace(f"error={m}", f"error=CASE WHEN {gave_up} THEN 'UrlExpiredError: the URL expired before "
                                            f"the download {MAX_EXPIRIES} times' ELSE {m} END", 1)
            return sql, (reason,)
        case Deferred(_, error, retry_at):
            return guarded(None, f"error={m}, retry_at={m}, {_RELEASE}", _DEFERRED_FROM), (error, retry_at)
    raise TypeError(f"not a state event: {event!r}")
