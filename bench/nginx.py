"""nginx on 127.0.0.1 serving the corpus: one plain server, plus one per added latency.

The added latency comes from the echo module (`echo_sleep`, a timer in nginx's event loop,
costing no CPU) before an internal redirect to the static file; see `latency.py` for why.
Started in the foreground (`daemon off`) so the benchmark owns its pid and stops exactly it.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from install import ECHO_MODULE

_CONF = """\
{load_module}
daemon off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    types {{ image/png png; image/jpeg jpg; }}
    default_type application/octet-stream;
    client_body_temp_path {work}/tmp;
    proxy_temp_path {work}/tmp;
    fastcgi_temp_path {work}/tmp;
    uwsgi_temp_path {work}/tmp;
    scgi_temp_path {work}/tmp;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
    }}
{delayed}}}
"""
_DELAYED = """\
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        location / {{ echo_sleep {seconds}; echo_exec @file; }}
        location @file {{ }}
    }}
"""


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Nginx:
    """One nginx master (and its single worker); `delayed_ports[ms]` serve with that latency."""

    work: Path
    root: Path
    delays_ms: tuple[int, ...] = ()
    port: int = 0
    delayed_ports: dict[int, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def base_url(self, delay_ms: int = 0) -> str:
        port = self.delayed_ports[delay_ms] if delay_ms else self.port
        return f"http://127.0.0.1:{port}"

    def start(self) -> None:
        self.work, self.root = self.work.resolve(), self.root.resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "tmp").mkdir(exist_ok=True)
        self.port = free_port()
        self.delayed_ports = {ms: free_port() for ms in self.delays_ms}
        conf = self.work / "nginx.conf"
        conf.write_text(self._config())
        cmd = ["nginx", "-c", str(conf), "-p", str(self.work), "-e", str(self.work / "error.log")]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        for port in (self.port, *self.delayed_ports.values()):
            _wait_listening(port, self.proc)

    def _config(self) -> str:
        delayed = "".join(_DELAYED.format(port=port, root=self.root, seconds=ms / 1000)
                          for ms, port in self.delayed_ports.items())
        load = f"load_module {ECHO_MODULE};" if self.delays_ms else ""
        return _CONF.format(load_module=load, work=self.work, port=self.port, root=self.root, delayed=delayed)

    def errors(self) -> int:
        """Lines of its error log at level error or worse (each run checks this did not grow)."""
        log = self.work / "error.log"
        if not log.exists():
            return 0
        levels = ("[error]", "[crit]", "[alert]", "[emerg]")
        return sum(1 for line in log.read_text(errors="replace").splitlines() if any(x in line for x in levels))

    def worker_pids(self) -> list[int]:
        """The worker processes (children of our master)."""
        if self.proc is None:
            return []
        return children_of(self.proc.pid)

    def stop(self) -> None:
        """Fast stop (SIGTERM) of our master by its pid; it stops its worker."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def version(self) -> str:
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
        return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")


def children_of(pid: int) -> list[int]:
    """Direct children of a process, from /proc."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}; see its error.log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nginx is not listening on {port} after {timeout} s")
