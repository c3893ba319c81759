"""Bring in what the benchmark needs: Debian tools by apt-get, img2dataset into its own venv.

img2dataset goes into `bench/work/img2dataset-venv`, not the project's venv: it pins many
packages (pandas, pyarrow, opencv, albumentations) that must not change the project's test set-up.
"""

from __future__ import annotations

import compileall
import os
import shutil
import subprocess
import sys
from pathlib import Path

# command → Debian package that provides it
DEBIAN_TOOLS = {
    "nginx": "nginx",
    "aria2c": "aria2",
    "curl": "curl",
    "wget": "wget",
    "/usr/bin/time": "time",
    "tcpdump": "tcpdump",  # the api mode's count on the wire (bench/wire.py)
}
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
ECHO_PACKAGE = "libnginx-mod-http-echo"


def _have(command: str) -> bool:
    return Path(command).exists() if command.startswith("/") else shutil.which(command) is not None


def ensure_debian_tools(with_echo_module: bool = True) -> None:
    """apt-get install the missing tools (and nginx's echo module, used for the latency modes)."""
    missing = sorted({pkg for cmd, pkg in DEBIAN_TOOLS.items() if not _have(cmd)})
    if with_echo_module and not ECHO_MODULE.exists():
        missing.append(ECHO_PACKAGE)
    if not missing:
        return
    print(f"installing Debian packages: {' '.join(missing)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env, stdout=subprocess.DEVNULL)


def ensure_img2dataset(work: Path) -> tuple[Path | None, str]:
    """The img2dataset executable (installed on first use), or None and the reason it is skipped."""
    venv = work / "img2dataset-venv"
    exe = venv / "bin" / "img2dataset"
    if exe.exists():
        return exe, ""
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        print("installing img2dataset into bench/work/img2dataset-venv (one time) ...", flush=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "img2dataset"], check=True,
                       capture_output=True, timeout=1200)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
        detail = getattr(err, "stderr", b"") or b""
        reason = f"img2dataset did not install: {err}; {detail.decode(errors='replace')[-300:]}"
        print(f"skipping img2dataset: {reason}", flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        return None, reason
    return (exe, "") if exe.exists() else (None, "img2dataset installed no executable")


def compile_package(tree: Path) -> None:
    """Write the bytecode of `tree`'s `downloader/` package, as a regular install does.

    An editable install writes it on first import, unless PYTHONDONTWRITEBYTECODE is set (it is in some
    shells and CI images): then every run of the tool compiles its ~80 modules again, ~0.1 s of CPU
    that a user's install never pays and the peers (one script, installed libraries) do not either.
    compileall writes it whatever that variable says.
    """
    compileall.compile_dir(str(tree / "downloader"), quiet=1)
