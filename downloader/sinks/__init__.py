"""Image sinks: the protocol (`base`), a local folder (`local`), S3-compatible object storage (`s3`)."""

from __future__ import annotations

from pathlib import Path

from downloader.core.errors import UsageError
from downloader.sinks.base import ImageSink
from downloader.sinks.s3url import is_s3_url, parse_s3_url

S3_EXTRA_HINT = "pip install 'patent-images[s3]'"


def is_remote(out: str | Path) -> bool:
    """Whether `--out` names an object store rather than a local folder."""
    return is_s3_url(str(out))


def open_sink(out: str | Path, *, endpoint_url: str | None = None, durable: bool = False,
              io: str = "auto") -> ImageSink:
    """The sink for `--out`: s3://bucket/prefix, or a local folder."""
    if is_remote(out):
        return _open_s3(str(out), endpoint_url=endpoint_url, durable=durable)
    from downloader.sinks.local import LocalSink

    return LocalSink(Path(out), durable=durable, io=io)


def _open_s3(out: str, *, endpoint_url: str | None, durable: bool) -> ImageSink:
    parse_s3_url(out)  # a bad URL is a usage error even without the S3 extra
    try:
        from downloader.sinks.s3 import S3Sink
    except ImportError as err:
        raise UsageError(f"--out s3://… needs the S3 extra ({err.name or 'obstore'} is missing): "
                         f"{S3_EXTRA_HINT}") from None
    return S3Sink(out, endpoint_url=endpoint_url, durable=durable)
