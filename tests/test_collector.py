"""The garbage collector of a process that is the tool: its youngest generation collected less often
(machine.settle_collector); a caller that runs the CLI in its own process keeps its collector as it was."""

from __future__ import annotations

import gc
import subprocess
import sys

from downloader import machine
from downloader.cli.app import main


def test_settle_collector_raises_only_the_youngest_threshold():
    before = gc.get_threshold()
    try:
        machine.settle_collector()
        assert gc.get_threshold() == (machine.YOUNG_COLLECTION, before[1], before[2])
    finally:
        gc.set_threshold(*before)


def test_the_console_script_settles_it_and_a_callers_process_keeps_its_own():
    probe = ("import gc, sys\nfrom downloader.cli.app import main\nsys.argv = ['patent-images', 'status', '--help']\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\nprint(gc.get_threshold()[0], file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stderr.split()[-1] == str(machine.YOUNG_COLLECTION)
    before = gc.get_threshold()
    try:
        main(["status", "--help"])
    except SystemExit:
        pass
    assert gc.get_threshold() == before
