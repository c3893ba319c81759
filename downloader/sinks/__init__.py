"""Image sinks: the protocol (`base`), a local folder (`local`), S3-compatible object storage (`s3`)."""

from __future__ import annotations

from pathlib import Path

from downloader.core.errors import UsageError
from downloader.sinks.base import ImageSink


def is_remote(out: str | Path) -> bool:
    """Whether `--out` names an object store rather than a local folder."""
    return str(out).startswith("s3://")


def open_sink(out: str | Path, *, endpoint_url: str | None = None, durable: bool = False,
              io: str = "auto") -> ImageSink:
    """The sink for `--out`: s3://bucket/prefix, or a local folder."""
    if is_remote(out):
        try:
            from downloader.sinks.s3 import S3Sink
        except ImportError as err:
            raise UsageError("--out s3://… needs the S3 extra: pip install 'patent-images[s3]'") from err
        return S3Sink(str(out), endpoint_url=endpoint_url, durable=durable)
    from downloader.sinks.local import LocalSink

    return LocalSink(Path(out), durable=durable, io=io)
