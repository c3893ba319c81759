"""The sans-IO core of P042 fulltext-image (`--drawings all`): every drawing of one patent, in pages.

One patent a call: `{patent_id | patent_number, limit ≤ 100, offset}` as a JSON body. The answer's
`data` holds `pn`, `patent_id`, `total_search_result_count` and a page of `fulltext_image` items
(`path`, `image_type`); the client pages with `offset += limit` while `offset < total`.

`Paging` is the flow of one patent as values: `next_body()` says what to send (None: done),
`receive(answer)` takes each decoded page. Its `outcomes()` are what the state store records:
`NotFound` (data null, an empty list, or no pn), `NoImage` (no drawings), else `Listed` followed by
one `Resolved` per drawing under a `FigureKey`: its figure (1-based, in the API's order) and its identity,
the path of its URL (`image_path_of`). A path listed twice is one drawing, at its first place; two paths
with one image id (which names a drawing's file) make the answer hostile. Pages that listed at least one
drawing are charged (PatSnap bills per successful result); `charged` counts them.

An answer lost on the way (a body cut short, a reset or a timeout after the API answered) was billed
as the one that arrived in its place: `receive(page, lost)` charges a page that listed drawings once
more per lost answer, and counts those in `recharged`. When no answer arrived at all (`unanswered`),
each lost one was possibly billed: counted as charged (the first once, the others as recharged), so
the run never reports less than the API billed.

Nothing here touches the network, the disk or the clock; callers pass `answered_at`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from downloader.core.errors import ApiError, TransientApiError
from downloader.core.expiry import url_window
from downloader.core.model import Failed, FigureKey, Listed, NoImage, NotFound, Outcome, PatentKey, Resolved
from downloader.core.protocol import error_for_code, field_text

PAGE_SIZE = 100
# A hostile or broken total must not make a patent page forever: no patent has 10,000 drawings.
MAX_DRAWINGS = 10_000
_MAX_URL = 8192


@dataclass(frozen=True, slots=True)
class Page:
    """One decoded page: the patent as the API names it, its drawing total, and this page's items."""

    pn: Any
    patent_id: Any
    total: int
    items: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class PageAnswer:
    """A decoded 200 answer: a page, no patent (`page` None and no error), or the error it carries."""

    page: Page | None
    error: ApiError | None = None


def request_body(key: PatentKey, offset: int, limit: int = PAGE_SIZE) -> dict[str, Any]:
    """The JSON body of one call: the patent under its kind, the page size and where it starts."""
    return {key.kind.value: key.value, "limit": limit, "offset": offset}


def decode_page(body: Any) -> PageAnswer:
    """Turn the parsed JSON of a 200 response into a page, "no such patent", or its error."""
    if not isinstance(body, Mapping):
        return PageAnswer(None, TransientApiError("the API answer is not a JSON object"))
    if body.get("status") is not True:
        code = body.get("error_code")
        if not isinstance(code, int) or isinstance(code, bool):
            return PageAnswer(None, TransientApiError("the API answered status false without a code"))
        return PageAnswer(None, error_for_code(code, str(body.get("error_msg") or "")))
    data = body.get("data")
    if isinstance(data, list):  # an empty list for an unknown patent; tolerate the object wrapped in one
        data = next((d for d in data if isinstance(d, Mapping)), None)
    if data is None:
        return PageAnswer(None)
    if not isinstance(data, Mapping):
        return PageAnswer(None, TransientApiError("the API answer's data is not an object"))
    raw_items = data.get("fulltext_image")
    items = tuple(i for i in raw_items if isinstance(i, Mapping)) if isinstance(raw_items, list) else ()
    total = data.get("total_search_result_count")
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        total = len(items)
    return PageAnswer(Page(data.get("pn"), data.get("patent_id"), min(total, MAX_DRAWINGS), items))


@dataclass
class Paging:
    """The pages of one patent, as a flow of values (see the module docstring)."""

    key: PatentKey
    limit: int = PAGE_SIZE
    pages: list[Page] = field(default_factory=list)
    unknown: bool = False
    charged: int = 0
    recharged: int = 0

    def next_body(self) -> dict[str, Any] | None:
        """The body of the next call, or None when every page is in (or the patent is unknown)."""
        if not self.pages:
            return None if self.unknown else request_body(self.key, 0, self.limit)
        offset = len(self.pages) * self.limit
        last = self.pages[-1]
        if offset >= self.pages[0].total or not last.items:  # an empty page ends it even below the total
            return None
        return request_body(self.key, offset, self.limit)

    def receive(self, page: Page | None, lost: int = 0) -> None:
        """Take the decoded page of the last call (None: the API does not know the patent); `lost`
        answers to the same call were billed, as this one, but lost on the way."""
        if page is None:
            self.unknown = self.unknown or not self.pages
            return
        self.pages.append(page)
        if page.items:
            self.charged += 1 + lost
            self.recharged += lost

    def unanswered(self, lost: int) -> None:
        """The last call got no answer past its retries, but `lost` answers were lost on the way:
        each possibly billed (the patent is asked again later, from its first page)."""
        self.charged += lost
        self.recharged += max(0, lost - 1)

    def outcomes(self, answered_at: float) -> list[Outcome]:
        """What the state store records for this patent once `next_body()` is None."""
        if self.unknown or not self.pages:
            return [NotFound(self.key)]
        first = self.pages[0]
        pn, patent_id = field_text(first.pn), field_text(first.patent_id)
        if pn is None or patent_id is None:
            return [Failed(self.key, "HostileAnswer: pn or patent_id is not a short plain string")]
        if not pn and not patent_id:
            return [NotFound(self.key)]
        items = [item for page in self.pages for item in page.items][:MAX_DRAWINGS]
        if not items:
            return [NoImage(self.key, pn, patent_id)]
        drawings: dict[str, Resolved] = {}  # by image: a drawing listed twice is one drawing, at its first place
        names: set[str] = set()
        for index, item in enumerate(items):
            drawing = _drawing(self.key, len(drawings) + 1, pn, patent_id, item, answered_at)
            if drawing is None:
                return [Failed(self.key, f"HostileAnswer: fulltext_image[{index}].path is not an http(s) URL")]
            image = image_path_of(drawing.url)
            if image in drawings:
                continue
            if drawing.num in names:  # its file would be another drawing's (files are named by image id)
                return [Failed(self.key, f"HostileAnswer: two drawings named {drawing.num[:80]!r} at other paths")]
            names.add(drawing.num)
            drawings[image] = drawing
        return [Listed(self.key, pn, patent_id, len(drawings)), *drawings.values()]


def _drawing(patent: PatentKey, figure: int, pn: str, patent_id: str, item: Mapping[str, Any],
             answered_at: float) -> Resolved | None:
    path = item.get("path")
    if not isinstance(path, str) or not path.lower().startswith(("http://", "https://")) or len(path) > _MAX_URL:
        return None
    try:
        image, num = image_path_of(path), image_id(path)
    except ValueError:  # urlsplit refuses it (an unbalanced '[' in the host): no URL anyone can fetch
        return None
    signed_at, expires_at = url_window(path, answered_at=answered_at)
    image_type = field_text(item.get("image_type")) or ""
    return Resolved(FigureKey(patent.kind, patent.value, figure, image), pn, patent_id, num, path, expires_at,
                    signed_at, image_type)


def image_path_of(url: str) -> str:
    """A drawing's identity: its URL's path, without the query that signs it (the object's name, the same
    in every listing while signatures and, at times, hosts change). A store from before finds it the same way
    (`state/*_schema.py`)."""
    return urlsplit(url).path


def image_id(url: str) -> str:
    """The drawing's stable name: the file name of its URL without the extension (e.g. HDA…0011)."""
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return field_text(stem) or ""
