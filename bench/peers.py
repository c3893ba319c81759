"""The peers: how to ask each one to download a URL list into a folder, and where its files land.

Every peer gets plain `http://127.0.0.1:PORT/{name}` URLs of the same images and writes into
a fresh folder; verification compares each file's SHA-256 with the corpus.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from corpus import Image

BENCH = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Job:
    """One peer run: these images from `base` into `out`, with `concurrency` in flight."""

    base: str
    images: list[Image]
    out: Path
    lists: Path
    concurrency: int

    def url(self, img: Image) -> str:
        return f"{self.base}/{img.name}"


Outputs = Iterable[tuple[Path, Image]]


@dataclass(frozen=True)
class Peer:
    """A downloader to compare with: its command, its output files, how many images it gets."""

    name: str
    command: Callable[[Job], list[str]]
    outputs: Callable[[Job], Outputs]
    note: str = ""
    sequential: bool = False

    def share(self, images: list[Image], latency_ms: int, budget_s: float) -> list[Image]:
        """All images, except for a sequential peer under latency: what fits in `budget_s`."""
        if not self.sequential or not latency_ms:
            return images
        return images[: max(50, int(budget_s * 1000 / latency_ms))]


def by_name(job: Job) -> Outputs:
    return ((job.out / img.name, img) for img in job.images)


def aria2c_command(job: Job) -> list[str]:
    listing = job.lists / "aria2c.txt"
    listing.write_text("".join(f"{job.url(img)}\n  out={img.name}\n" for img in job.images))
    return ["aria2c", "--no-conf", "-i", str(listing), "-j", str(job.concurrency), "-x1",
            "--auto-file-renaming=false", "--allow-overwrite=true", "--file-allocation=none",
            "--summary-interval=0", "--console-log-level=warn", "--download-result=hide",
            "-q", "-d", str(job.out)]


def curl_command(job: Job) -> list[str]:
    config = job.lists / "curl.cfg"
    config.write_text("".join(f'url = "{job.url(img)}"\noutput = "{job.out / img.name}"\n' for img in job.images))
    return ["curl", "--parallel", "--parallel-max", str(job.concurrency), "-K", str(config), "-sS"]


def wget_command(job: Job) -> list[str]:
    listing = job.lists / "wget.txt"
    listing.write_text("".join(f"{job.url(img)}\n" for img in job.images))
    return ["wget", "--no-config", "-q", "-i", str(listing), "-P", str(job.out)]


def bare_command(job: Job, uvloop: bool = False) -> list[str]:
    listing = job.lists / "bare.tsv"
    listing.write_text("".join(f"{job.url(img)}\t{img.name}\n" for img in job.images))
    return [sys.executable, str(BENCH / "bare_aiohttp.py"), str(listing), str(job.out),
            "--concurrency", str(job.concurrency), *(["--uvloop"] if uvloop else [])]


def bare_uvloop_command(job: Job) -> list[str]:
    return bare_command(job, uvloop=True)


def img2dataset_peer(exe: Path) -> Peer:
    """img2dataset as a plain downloader: files output, no resize, no re-encoding, one process."""

    def command(job: Job) -> list[str]:
        listing = job.lists / "img2dataset.txt"
        listing.write_text("".join(f"{job.url(img)}\n" for img in job.images))
        return [str(exe), "--url_list", str(listing), "--input_format", "txt", "--output_folder", str(job.out),
                "--output_format", "files", "--resize_mode", "no", "--disable_all_reencoding", "True",
                "--thread_count", str(job.concurrency), "--processes_count", "1", "--timeout", "30",
                "--retries", "0", "--enable_wandb", "False", "--compute_hash", "None",
                "--number_sample_per_shard", "10000"]

    return Peer("img2dataset", command, img2dataset_outputs,
                note="threads, one process; files output, --resize_mode no --disable_all_reencoding True")


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".tif", ".tiff", ".bmp")


def img2dataset_outputs(job: Job) -> Outputs:
    """img2dataset names files by index; each has a .json sidecar with its URL."""
    images = {job.url(img): img for img in job.images}
    for meta in job.out.glob("*/*.json"):
        url = json.loads(meta.read_text()).get("url")
        img = images.get(url)
        if img is None:
            continue
        # Probe the few image extensions: a glob per file lists the whole shard folder each time,
        # which made verifying 20,000 outputs take many minutes.
        found = next((p for p in map(meta.with_suffix, _IMAGE_SUFFIXES) if p.exists()), None)
        if found is not None:
            yield found, img


BARE = "bare aiohttp"
BARE_UVLOOP = "bare aiohttp + uvloop"


def peers(img2dataset: Path | None, uvloop: bool) -> list[Peer]:
    """The peers in the order they run (the bare aiohttp loops are floors to compare the tool's CPU with)."""
    found = [
        Peer(BARE, bare_command, by_name, note="bench/bare_aiohttp.py: the floor of aiohttp"),
        *([Peer(BARE_UVLOOP, bare_uvloop_command, by_name, note="the same on uvloop's event loop")] if uvloop else []),
        Peer("aria2c", aria2c_command, by_name),
        Peer("curl", curl_command, by_name, note="--parallel"),
        Peer("wget", wget_command, by_name, note="sequential by nature", sequential=True),
    ]
    if img2dataset is not None:
        found.append(img2dataset_peer(img2dataset))
    return found
