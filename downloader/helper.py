"""`python -m downloader.helper`: one helper worker of `--workers N`, started by `workers.helpers`.

It reads its job from stdin (the settings, credentials included, never travel on a command line),
works on the parent's run until nothing is left or the parent is gone, and exits 0, 3 (a fatal
condition, already written to the halt record for the other workers) or 1.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from downloader.core.errors import DownloaderError, FatalError
from downloader.core.settings import Settings
from downloader.execution import run_helper
from downloader.machine import settle_collector


def main() -> int:
    """A helper worker: read the job from stdin, work until nothing is left, exit."""
    job: dict[str, Any] = json.loads(sys.stdin.buffer.read())
    settings = Settings(**job["settings"])
    settle_collector()
    try:
        run_helper(job["out"], settings, int(job["run_id"]), parent=os.getppid(), use_uvloop=job["use_uvloop"])
    except FatalError:
        return 3
    except (DownloaderError, KeyboardInterrupt):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
