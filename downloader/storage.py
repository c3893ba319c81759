"""Where image files are written: the local disk (the first implementation of the file sink).

Bytes go to a temporary file under `DIR/.partial/` (same file system, so the final rename is
atomic), then are renamed to their place under `images/`. A kill at any instant leaves either
no final file or a complete one; leftovers in `.partial/` are removed by the next run.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO

PARTIAL_DIR = ".partial"


class LocalStore:
    """Temp files, atomic commit into `images/`, cleanup of what a killed run left."""

    def __init__(self, root: Path, *, durable: bool = False) -> None:
        self.root = root
        self.durable = durable
        self._partial = root / PARTIAL_DIR
        self._made: set[str] = set()

    def prepare(self) -> None:
        """Create the folders and remove partial files from an earlier, interrupted run."""
        shutil.rmtree(self._partial, ignore_errors=True)
        self._partial.mkdir(parents=True, exist_ok=True)

    def open_temp(self) -> tuple[BinaryIO, Path]:
        """A new temporary file opened for writing, and its path."""
        path = self._partial / f"{uuid.uuid4().hex}.part"
        return open(path, "wb", buffering=256 * 1024), path  # noqa: SIM115 - closed by the caller

    def commit(self, temp: Path, relative: str) -> None:
        """Move a finished temporary file into its final place (atomic replace)."""
        final = self.root / relative
        parent = str(final.parent)
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        os.replace(temp, final)
        if self.durable:
            _fsync_dir(final.parent)

    def discard(self, temp: Path) -> None:
        """Remove a temporary file that will not be kept."""
        try:
            temp.unlink()
        except FileNotFoundError:
            pass

    def finish(self) -> None:
        """Remove the partial folder when the run ends."""
        shutil.rmtree(self._partial, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
