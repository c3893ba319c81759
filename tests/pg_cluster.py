"""A throwaway PostgreSQL cluster that a test may restart or stop (never the machine's shared server).

initdb/pg_ctl of PostgreSQL 15 (PATENT_IMAGES_PG_BIN, default /usr/lib/postgresql/15/bin), run as
the `postgres` user when the test runs as root (initdb refuses root), in a temporary folder, on a
free loopback port, trust authentication. `cluster()` skips the test with one reason when that is
not possible, and stops the server (by its data folder's pid) whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(os.environ.get("PATENT_IMAGES_PG_BIN", "/usr/lib/postgresql/15/bin"))


class Cluster:
    """One initialised data folder and its server on 127.0.0.1:`port`."""

    def __init__(self, root: Path, user: str | None) -> None:
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self._user = user

    @property
    def url(self) -> str:
        """A state URL for database `postgres`, schema `job`."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?schema=job"

    def init(self) -> None:
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        """Start (or start again after `stop`), waiting until it accepts connections."""
        self._ctl("start", "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off")

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every connection is dropped, the server is back a moment later."""
        self._ctl("restart", "-m", "fast", "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                                                 "-c fsync=off")

    def stop(self) -> None:
        """A fast shutdown (committed work is kept); the server stays down until `start`."""
        self._ctl("stop", "-m", "fast")

    def _ctl(self, action: str, *args: str) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", action, *args)

    def _pg(self, program: str, *args: str) -> None:
        command = [str(BIN / program), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unusable() -> str | None:
    if not (BIN / "initdb").exists():
        return f"no PostgreSQL binaries at {BIN} (set PATENT_IMAGES_PG_BIN) for a throwaway cluster"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a `postgres` user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root without runuser to start PostgreSQL as the `postgres` user"
    return None


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """A started throwaway cluster, stopped and removed afterwards (skips the test when impossible)."""
    if (reason := _unusable()) is not None:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="pi-pg-"))
    user = "postgres" if os.geteuid() == 0 else None
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    server = Cluster(root, user)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            server._ctl("stop", "-m", "immediate")
        shutil.rmtree(root, ignore_errors=True)
