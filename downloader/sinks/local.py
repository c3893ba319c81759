"""Where image files are written: the local disk (the first implementation of the file sink).

Bytes go to a temporary file under `DIR/.partial/` (same file system, so the final rename is
atomic), then are renamed to their place under `images/`. A kill at any instant leaves either
no final file or a complete one; leftovers in `.partial/` are removed by the next run.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path
from typing import BinaryIO

PARTIAL_DIR = ".partial"


class LocalStore:
    """Temp files, atomic commit into `images/`, cleanup of what a killed run left."""

    def __init__(self, root: Path, *, durable: bool = False) -> None:
        self.root = root
        self.durable = durable
        # Plain strings and os functions below: pathlib's object churn showed up per image.
        self._root = str(root)
        self._partial = os.path.join(self._root, PARTIAL_DIR)
        self._made: set[str] = set()
        self._names = itertools.count()

    def prepare(self) -> None:
        """Create the folders and remove partial files from an earlier, interrupted run."""
        shutil.rmtree(self._partial, ignore_errors=True)
        os.makedirs(self._partial, exist_ok=True)

    def open_temp(self) -> tuple[BinaryIO, str]:
        """A new temporary file opened for writing, and its path."""
        # Unique within the run: one run per DIR (the lock) and `.partial/` starts empty.
        path = os.path.join(self._partial, f"{next(self._names)}.part")
        return open(path, "wb"), path  # noqa: SIM115 - closed by the caller

    def commit(self, temp: str, relative: str) -> None:
        """Move a finished temporary file into its final place (atomic replace)."""
        final = os.path.join(self._root, relative)
        parent = os.path.dirname(final)
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        os.replace(temp, final)
        if self.durable:
            _fsync_dir(parent)

    def discard(self, temp: str) -> None:
        """Remove a temporary file that will not be kept."""
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass

    def finish(self) -> None:
        """Remove the partial folder when the run ends."""
        shutil.rmtree(self._partial, ignore_errors=True)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
