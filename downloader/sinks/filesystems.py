"""Which local folders can block the event loop: network and FUSE file systems.

On a local disk a write or rename is a page-cache operation of microseconds, so images are
written straight from the event loop. On NFS, SMB or a FUSE mount (s3fs, gcsfuse, sshfs) the
same call can wait milliseconds on the network and stall every download, so there each finished
image is written in a worker thread, one hop per file. The file-system type comes from the
kernel's mount table (the mount point that holds the folder), the same answer statfs gives.
"""

from __future__ import annotations

import os
from pathlib import Path

# Types (as /proc/self/mountinfo names them) whose calls may go over a network or to a user-space daemon.
BLOCKING_TYPES = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "afs", "davfs")


def filesystem_type(folder: Path, mountinfo: str | None = None) -> str:
    """The file-system type of the mount that holds `folder` ("" when unknown)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
    target = os.path.realpath(folder)
    best, kind = "", ""
    for line in mountinfo.splitlines():
        fields = line.split(" - ", 1)
        if len(fields) != 2:
            continue
        mount_point = _unescape(fields[0].split()[4])
        fs_type = fields[1].split()[0]
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, fs_type
    return kind


def may_block(fs_type: str) -> bool:
    """Whether calls on this file-system type can block for a network round trip."""
    return fs_type in BLOCKING_TYPES or fs_type.startswith("fuse")


def io_mode(folder: Path, requested: str, mountinfo: str | None = None) -> str:
    """`direct` or `threads` for --io auto|direct|threads on `folder`."""
    if requested != "auto":
        return requested
    return "threads" if may_block(filesystem_type(folder, mountinfo)) else "direct"


def _unescape(path: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
