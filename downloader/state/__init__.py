"""State stores: the protocol (`base`), the embedded SQLite file (`sqlite`), shared PostgreSQL (`postgres`)."""

from __future__ import annotations

from pathlib import Path

from downloader.core.errors import UsageError
from downloader.state.base import StateStore


def state_folder(out: str | Path) -> Path:
    """Where the embedded state (and its lock) lives for `--out`: DIR itself, or for a bucket
    (s3://bucket/prefix) a local folder named after it under the XDG state home.

    The scheme is tested here rather than through `sinks`: stores and sinks stand side by side.
    """
    text = str(out)
    if text[:5].lower() != "s3://":
        return Path(out)
    from downloader.state.sqlite import local_state_home

    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in text.removeprefix("s3://").strip("/"))
    return local_state_home() / slug


def is_shared(url: str | None) -> bool:
    """Whether `--state` names a server shared by several workers (not the embedded file)."""
    return bool(url) and str(url).startswith(("postgresql://", "postgres://"))


async def open_store(url: str | None, default: Path, *, durable: bool = False,
                     patience: float | None = None) -> StateStore:
    """The store named by `--state` (a postgresql:// URL, or a SQLite file path), else `default`.

    `patience`: how long a shared store may stay unreachable (--state-patience; None: its default).
    """
    if is_shared(url):
        try:
            from downloader.state.postgres import PostgresStore
        except ImportError as err:
            raise UsageError("--state postgresql://… needs the PostgreSQL extra: "
                             "pip install 'patent-images[postgres]'") from err
        assert url is not None
        if patience is None:
            return await PostgresStore.open(url, durable=durable)
        return await PostgresStore.open(url, durable=durable, patience=patience)
    from downloader.state.sqlite import SqliteStore

    if url == ":memory:":
        return await SqliteStore.open(url)
    path = Path(url.removeprefix("sqlite:///")) if url else default
    path.parent.mkdir(parents=True, exist_ok=True)
    return await SqliteStore.open(path, durable=durable)


async def open_existing(url: str | None, default: Path) -> StateStore:
    """The store to read for `status` and `report`: a UsageError when the embedded file is not there."""
    if not is_shared(url) and not (Path(url) if url else default).exists():
        raise UsageError(f"no state store at {url or default} (has a run used this --out and --state?)")
    return await open_store(url, default)
