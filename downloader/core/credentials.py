"""Credentials: which one to suspect when the API refuses, and the shared OAuth token record. Pure.

The fleet shares one OAuth token through a record of the state store (`update_shared`): a worker
whose token is missing, due for renewal or refused asks the record what to do (`token_step`):
use the token there, wait for the worker that is fetching one, or fetch one itself. So one token
request serves every worker, and a refusal triggers one refresh for the whole run. A refused
client (the token endpoint said no) is written to the record, so the workers that waited on that
fetch stop with the same error instead of asking again. The token in the record is sealed, and the
record belongs to the credentials that fetched it (`core/sealing.py`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from downloader.core.errors import ApiError, FatalApiError
from downloader.core.sealing import TokenSeal

FETCH_SECONDS = 30.0  # a token fetch that did not finish by then may be taken over by another worker

Record = dict[str, Any]


def legacy_record_name(api_base: str, client_id: str) -> str:
    """Where versions before sealing kept a client's token in plain text (to be emptied)."""
    digest = hashlib.sha256(f"{api_base.rstrip('/')}\x1f{client_id}".encode()).hexdigest()[:16]
    return f"oauth-token:{digest}"


def without_plain_token(old: Record | None, now: float) -> tuple[Record, None]:
    """A legacy record with its plain-text token removed."""
    return {k: v for k, v in (old or {}).items() if k != "token"}, None


def refresh_at(issued: float, lifetime: float) -> float:
    """When to fetch the next token: a minute early, or 20% early for short-lived tokens."""
    return issued + lifetime - min(60.0, lifetime * 0.2)


@dataclass(frozen=True, slots=True)
class Use:
    """Use this token; renew it after `renew_in` seconds."""

    token: str
    renew_in: float


@dataclass(frozen=True, slots=True)
class Wait:
    """Another worker is fetching a token (attempt `attempt`): ask again shortly."""

    attempt: str


@dataclass(frozen=True, slots=True)
class Fetch:
    """Fetch a token now as attempt `attempt`; `now` is the store's clock at the start."""

    attempt: str
    now: float


@dataclass(frozen=True, slots=True)
class Refused:
    """The fetch waited on was refused by the token endpoint: stop with this error."""

    message: str
    hint: str
    status: int | None


Step = Use | Wait | Fetch | Refused


def token_step(old: Record | None, now: float, *, me: str, stale: str | None, waited_on: str | None,
               seal: TokenSeal) -> tuple[Record, Step]:
    """What a worker needing a token does next (`stale`: the token the API just refused)."""
    record = dict(old or {})
    failed = record.get("failed")
    if failed and waited_on is not None and failed.get("attempt") == waited_on:
        return record, Refused(failed["message"], failed.get("hint", ""), failed.get("status"))
    token = seal.open(record.get("sealed"))
    if token and record.get("renew_at", 0.0) > now and token != stale:
        return record, Use(token, record["renew_at"] - now)
    attempt = record.get("attempt")
    if attempt and attempt.get("until", 0.0) > now and attempt.get("by") != me:
        return record, Wait(attempt["id"])
    attempt_id = f"{me}@{now:.6f}"
    record["attempt"] = {"id": attempt_id, "by": me, "until": now + FETCH_SECONDS}
    return record, Fetch(attempt_id, now)


def token_fetched(old: Record | None, now: float, *, attempt: str, token: str, lifetime: float,
                  started: float, seal: TokenSeal) -> tuple[Record, float]:
    """Store a fetched token for everyone, sealed; returns seconds until it is due for renewal."""
    record = dict(old or {})
    renew_at = refresh_at(started, lifetime)
    record.update(sealed=seal.seal(token), renew_at=renew_at, failed=None)
    if (record.get("attempt") or {}).get("id") == attempt:
        record["attempt"] = None
    return record, renew_at - now


def token_failed(old: Record | None, now: float, *, attempt: str, error: FatalApiError | None) -> tuple[Record, None]:
    """A fetch ended without a token: refused (`error`, which waiters then raise) or transient (None)."""
    record = dict(old or {})
    if (record.get("attempt") or {}).get("id") == attempt:
        record["attempt"] = None
    if error is not None:
        record["failed"] = {"attempt": attempt, "message": str(error), "hint": error.hint, "status": error.status}
    return record, None


def refused_error(err: ApiError, *, static: str | None, apikey_is_client_id: bool) -> FatalApiError:
    """The fatal error for a refusal that survived a token refresh, naming the suspect credential
    (never its value); `static` is the option that gave a static credential (--token, or --api-key
    for an sk- key), None with OAuth."""
    what = f"PatSnap error {err.code}" if err.code else f"HTTP {err.status}" if err.status else "a refusal"
    if static == "--api-key":
        message = f"the API refused the sk- key given with --api-key ({what})"
        hint = ("the suspect is the API key (--api-key / PATSNAP_API_KEY): check it on PatSnap's developer "
                "platform; it may be revoked or not entitled to this API")
    elif static is not None:
        message = f"the API refused the token given with --token ({what}); a static token cannot be refreshed"
        hint = ("the suspect is the static token (--token / PATSNAP_TOKEN): get a current one, or use "
                "--client-id/--client-secret so it is renewed")
    elif err.code in (67200003, 67200009) or apikey_is_client_id:
        message = f"the API refused a freshly issued token ({what})"
        hint = ("the suspect is the client id and secret (--client-id/--client-secret): the client may be "
                "disabled, expired or not entitled to this API")
    else:
        message = f"the API refused a freshly issued token ({what})"
        hint = ("the suspect is the apikey (--api-key / PATSNAP_API_KEY): the token endpoint accepted the "
                "client id and secret")
    return FatalApiError(message, hint=hint, code=err.code, status=err.status)
