"""The image sink protocol: where verified images and the run's output files go.

Two implementations: `local.LocalSink` (a folder: temp file, atomic rename; the embedded
default) and `s3.S3Sink` (one object per verified image in any S3-compatible store). A third one
implements this protocol and is chosen by `sinks.open_sink(out)`.

The fetcher streams the body, hashes it and checks it (status, length, magic bytes, size cap);
the sink only stores. Nothing is visible under its final name before `commit`: a kill at any
instant leaves either no object or a complete, verified one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Upload(Protocol):
    """One image being written. Exactly one of `commit` or `discard` ends it."""

    def write(self, chunk: bytes) -> None:
        """Add bytes (buffered: a local page-cache write, or memory for an object store)."""
        ...

    async def commit(self, relative: str, *, content_type: str, sha256: str) -> None:
        """Make the bytes visible at `relative` (e.g. images/ab/c/US1_0001.png), atomically."""
        ...

    async def discard(self) -> None:
        """Drop the bytes; nothing becomes visible."""
        ...


class ImageSink(Protocol):
    """A folder or a bucket prefix holding images/, manifests, summary, rejects and report."""

    location: str  # for messages: the folder, or s3://bucket/prefix
    durable: bool

    async def prepare(self, *, clean: bool = True) -> None:
        """Check it can be written (raise UsageError if not); with `clean`, clear a killed run's
        leftovers (only the holder of the job's lock may: other workers may be writing)."""
        ...

    def begin(self) -> Upload:
        """Start writing one image."""
        ...

    async def close(self) -> None:
        """Finish (remove temp folders, close connections)."""
        ...

    def staging(self, name: str) -> Path:
        """A local path to write output file `name` (manifest.csv, summary.json, …) to."""
        ...

    async def publish(self, name: str, staged: Path, *, content_type: str) -> None:
        """Put the file written at `staged` in place as `name`, atomically; `staged` is consumed."""
        ...

    def url_of(self, name: str) -> str:
        """Where `name` lives, for messages and links: a path or s3://bucket/prefix/name."""
        ...
