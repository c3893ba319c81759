"""FulltextResolver: `--drawings all`, every drawing of each patent through P042 fulltext-image.

The second implementation of the pipeline's resolver (the first is `PatsnapClient.resolve`, P021,
100 patents a call). This one asks one patent a call and pages with `offset` while
`offset < total_search_result_count` (`core.fulltext.Paging`); every call goes through the same
machinery as P021's (`PatsnapClient.exchange`: the account-wide gate, retries, the credential
check, the outage detector), and failures past the retries are settled by the same rules
(`PatsnapClient.unanswered`: refused credentials stop the run, transport failures defer).

A patent's outcomes are returned only once all its pages are in, so a kill between pages leaves it
pending: it is asked once more, from its first page. Budget (--max-charged): each page reserves
one charge before its call (a page that lists drawings is charged) and gives it back when the page
listed none; a patent whose next page finds the budget spent is left for the next run. A page whose
answer was lost on the way is asked again only once one more charge is reserved (`Call.cost`): when
none is left, the patent is deferred as billed and the run stops asking.

Charges: an answer the API billed but that was lost on the way (a body cut short, a reset, a timeout
after the request was written) is counted as P021's are (`PatsnapClient.exchange` reports them in
`Call.lost`): charged and recharged as the answer that arrived in its place, or, when none arrived
before the retries ran out, as possibly charged (`core.fulltext.Paging`); the patent is then deferred
as billed, so asking it again later counts as a recharge.

Asked again (a drawing's URL expired, so its patent went back to pending), a patent is returned listed
whole, as the first time: the store matches each drawing with its row by its URL's path and gives it the
new listing's figure; those already downloaded (`Batch.stored`) keep their row and file, and the pipeline
downloads only the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio

from downloader.core.errors import (
    BudgetSpentError,
    InvalidParameterError,
    OutageError,
    TokenExpiredError,
    TransientApiError,
    describe,
)
from downloader.core.fulltext import Page, Paging, decode_page
from downloader.core.model import Batch, Failed, PatentKey
from downloader.core.ports import Answer, BatchResult
from downloader.net.api import ApiRequest, Call, PatsnapClient, budget_spent

FULLTEXT_PATH = "/basic-patent-data/fulltext-image"


@dataclass
class _Asked:
    """What asking one patent came to: its outcomes (None: the budget could not pay for it) and charges;
    `spent`: the budget could not pay to ask again after a lost answer (the outcomes defer it)."""

    outcomes: list[Answer] | None
    charged: int = 0
    recharged: int = 0
    spent: bool = False


@dataclass
class FulltextResolver:
    """Resolves batches of patents into per-drawing outcomes, one patent a call (see the module docstring)."""

    client: PatsnapClient

    async def resolve(self, batch: Batch) -> BatchResult:
        """Ask each patent of `batch` in turn; those the budget cannot pay for are returned unasked."""
        outcomes: list[Answer] = []
        charged = recharged = 0
        for index, value in enumerate(batch.keys):
            asked = await self._patent(PatentKey(batch.kind, value))
            charged, recharged = charged + asked.charged, recharged + asked.recharged
            if asked.outcomes is None:
                unasked = tuple(PatentKey(batch.kind, v) for v in batch.keys[index:])
                return BatchResult(outcomes, unasked, charged, recharged)
            outcomes += asked.outcomes
            if asked.spent:
                unasked = tuple(PatentKey(batch.kind, v) for v in batch.keys[index + 1:])
                return BatchResult(outcomes, unasked, charged, recharged, budget_spent=True)
        return BatchResult(outcomes, (), charged, recharged)

    def outage_error(self) -> OutageError | None:
        """The OutageError to stop with when every call failed for a while."""
        return self.client.outage_error()

    async def _patent(self, key: PatentKey) -> _Asked:
        paging = Paging(key)
        answered_at = 0.0
        try:
            while (body := paging.next_body()) is not None:
                if await self.client.budget.reserve(1) == 0:
                    return _Asked(None, paging.charged, paging.recharged)
                answered_at = await self._page(paging, body)
        except InvalidParameterError as err:
            return _Asked([Failed(key, describe(err))], paging.charged, paging.recharged)
        except (TokenExpiredError, TransientApiError) as err:
            deferred = self.client.unanswered(err, [key], billed=paging.charged > 0)
            return _Asked(deferred, paging.charged, paging.recharged)
        except BudgetSpentError as err:
            return _Asked(budget_spent(err, [key]), paging.charged, paging.recharged, spent=True)
        finally:
            self.client.count_charged(paging.charged)
        return _Asked(list(paging.outcomes(answered_at)), paging.charged, paging.recharged)

    async def _page(self, paging: Paging, body: dict[str, Any]) -> float:
        """Ask for one page (its charge reserved; each try after a lost answer reserves one more) and
        take it; the answers lost on the way count as charged even when the call fails (an invalid
        request is not billed). Returns when it was answered."""
        charged_before, call = paging.charged, Call(cost=1)
        try:
            page, answered_at = await self.client.exchange(ApiRequest(FULLTEXT_PATH, {}, body), _page, call)
        except InvalidParameterError:
            raise
        except BaseException:
            paging.unanswered(call.lost)
            raise
        else:
            paging.receive(page, call.lost)
        finally:
            with anyio.CancelScope(shield=True):
                await self.client.budget.settle(1 + call.extra, paging.charged - charged_before)
        return answered_at


def _page(body: object) -> Page | None:
    """A decoded page (None: no such patent), or the error its answer carries."""
    answer = decode_page(body)
    if answer.error is not None:
        raise answer.error
    return answer.page
