"""--io: images written from the event loop on local disks, in one thread hop per image where calls can block."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from downloader.sinks.filesystems import filesystem_type, io_mode, may_block
from downloader.sinks.local import LocalSink, LocalUpload, ThreadedUpload

from .support import check_downloads, leftovers, numbers, run, write_csv

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 27 0:50 / /data/nfs rw,relatime - nfs4 server:/export rw,vers=4.2
41 27 0:51 / /data/nfs/local rw,relatime - ext4 /dev/sdb1 rw
42 27 0:52 / /mnt/my\\040bucket rw,relatime - fuse.s3fs s3fs rw
43 27 0:53 / /mnt/smb rw,relatime - cifs //host/share rw
"""


@pytest.mark.parametrize(("folder", "kind", "mode"), [
    ("/home/me/out", "ext4", "direct"),
    ("/data/nfs/out", "nfs4", "threads"),
    ("/data/nfs/local/out", "ext4", "direct"),  # the deepest mount point wins
    ("/mnt/my bucket/x", "fuse.s3fs", "threads"),
    ("/mnt/smb", "cifs", "threads"),
])
def test_the_mount_that_holds_the_folder_decides(folder, kind, mode):
    assert filesystem_type(folder, MOUNTINFO) == kind
    assert io_mode(folder, "auto", MOUNTINFO) == mode
    assert io_mode(folder, "direct", MOUNTINFO) == "direct" and io_mode(folder, "threads", MOUNTINFO) == "threads"


def test_blocking_types():
    assert may_block("nfs") and may_block("fuse.gcsfuse") and may_block("fuse") and may_block("smb3")
    assert not may_block("ext4") and not may_block("tmpfs") and not may_block("xfs") and not may_block("")


@pytest.fixture
def tmpfs(tmp_path):
    mount = tmp_path / "mnt"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True,
                          check=False)
    if made.returncode != 0:
        pytest.skip("mounting a tmpfs is not allowed here (needs root or CAP_SYS_ADMIN)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_mount_is_recognised(tmpfs):
    assert filesystem_type(tmpfs / "out") == "tmpfs" and io_mode(tmpfs, "auto") == "direct"


async def test_threaded_uploads_commit_whole_files_and_discard_cleanly(tmp_path):
    sink = LocalSink(tmp_path, io="threads")
    await sink.prepare()
    assert sink.io == "threads"
    upload = sink.begin()
    assert isinstance(upload, ThreadedUpload)
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 100
    for i in range(0, len(data), 1000):
        upload.write(data[i:i + 1000])
    await upload.commit("images/ab/c/X_1.png", content_type="image/png", sha256=hashlib.sha256(data).hexdigest())
    assert (tmp_path / "images/ab/c/X_1.png").read_bytes() == data
    dropped = sink.begin()
    dropped.write(b"half")
    await dropped.discard()
    await sink.close()
    assert not leftovers(tmp_path)
    direct = LocalSink(tmp_path / "d", io="auto")
    await direct.prepare()
    assert isinstance(direct.begin(), LocalUpload)


@pytest.mark.slow
def test_a_whole_run_with_threaded_writes_is_correct(tmp_path, threaded_simulator):
    sim, out = threaded_simulator, tmp_path / "out"
    summary = run([write_csv(tmp_path / "in.csv", numbers(400))], out, sim, io="threads")
    assert summary["exit_code"] == 0
    assert check_downloads(out, sim) == summary["by_status"]["downloaded"] > 200
    assert not leftovers(out)
