"""The SQLite store's rows as manifests and reports read them: the columns, and the paged query.

Pages walk `seq` (the input order) from the last one read: each page is one short read on the
store's reading connection, and a million-row manifest never sits in memory. With --drawings all,
a page holds PAGE patents and each of their drawings in figure order (one row with no figure for a
patent without any).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from downloader.core.model import Status

PAGE = 1000
ROW_COLUMNS = ("kind, key, status, pn, patent_id, num, url, expires_at, local_file, bytes, sha256, error, "
               "updated_at")
_DRAWING_COLUMNS = ("p.kind, p.key, COALESCE(d.status, p.status), p.pn, p.patent_id, d.num, d.url, d.expires_at, "
                    "d.local_file, d.bytes, d.sha256, COALESCE(d.error, p.error), "
                    "COALESCE(d.updated_at, p.updated_at), d.figure, d.image_type")


def page_query(run_id: int | None, status: Status | None, *, drawings: bool) -> tuple[str, list[Any]]:
    """The query of one page and its parameters after the first (the last `seq` read comes first);
    each row starts with its patent's `seq`, then the columns `base.patent_row` reads."""
    conditions, params = ["seq>?"], list[Any]()
    if run_id is not None:
        # With the run alone, a unary + keeps SQLite off the patents_work index: through it each page
        # scanned and sorted every row of the run (quadratic: minutes of CPU for a million-row
        # manifest), where the rowid range reads each row once. With a status, that index gives the order
        # (of patents: a page of drawings picks its patents with the + as well).
        conditions.append("seen_run=?" if status is not None and not drawings else "+seen_run=?")
        params.append(run_id)
    if status is not None:
        conditions.append("status=?")
        params.append(status.value)
    where = " AND ".join(conditions)
    if not drawings:
        return f"SELECT seq, {ROW_COLUMNS} FROM patents WHERE {where} ORDER BY seq LIMIT {PAGE}", params
    return (f"SELECT p.seq, {_DRAWING_COLUMNS} FROM patents p LEFT JOIN drawings d ON d.kind=p.kind AND "
            f"d.key=p.key WHERE p.seq IN (SELECT seq FROM patents WHERE {where} ORDER BY seq "
            f"LIMIT {PAGE}) ORDER BY p.seq, d.figure"), params


def last_page(page: Sequence[Any], *, drawings: bool) -> bool:
    """Whether no page follows `page`: a short page of patents, or an empty one (a page of drawings has
    as many rows as its patents have drawings, so only an empty one tells)."""
    return not page or (not drawings and len(page) < PAGE)
