"""The image corpus nginx serves, and the long patent lists of the scale and metadata modes.

Everything comes from the project's simulator universe (seed 0, the simulator's default), so
the tool's whole pipeline can run against it: the simulator answers the API and hands out URLs
`{cdn_base}/{pn}_{num}.{ext}?<signature>` (see `Simulator.image_url`), and nginx serves the
file `files/{pn}_{num}.{ext}` of the corpus, ignoring the query string.

`generate_numbers(n)` yields a stable prefix for any larger n, so the corpus only grows: the
first N entries of a bigger corpus are exactly the corpus of N. Cached in bench/work/corpus/, per
version of the simulator's drawings (a new version writes a new files-vN/ and index-vN.csv).
"""

from __future__ import annotations

import csv
import hashlib
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from downloader.simulator import Universe, generate_numbers
from downloader.simulator.images import VERSION as DRAWINGS

SEED = 0
_INDEX_FIELDS = ("number", "pn", "num", "name", "size", "sha256")
_CHUNK = 200_000


@dataclass(frozen=True, slots=True)
class Image:
    """One corpus file: the input number that leads to it and what it must hash to."""

    number: str
    pn: str
    num: str
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Corpus:
    """The first N images of the cached corpus; `files` is the folder nginx serves."""

    files: Path
    images: list[Image]

    @property
    def total_bytes(self) -> int:
        return sum(img.size for img in self.images)

    def by_name(self) -> dict[str, Image]:
        return {img.name: img for img in self.images}

    def by_stem(self) -> dict[str, Image]:
        """Images keyed by `{pn}_{num}` (what the tool's manifest gives)."""
        return {f"{img.pn}_{img.num}": img for img in self.images}


def build_corpus(work: Path, n: int) -> Corpus:
    """N images with a drawing, written once under work/corpus/files-vN (grown when N is larger)."""
    root = work / "corpus"
    files = root / f"files-v{DRAWINGS}"
    files.mkdir(parents=True, exist_ok=True)
    index = root / f"index-v{DRAWINGS}.csv"
    images = _read_index(index)
    if len(images) < n:
        print(f"corpus: generating {n - len(images)} more images into {files} ...", flush=True)
        images = _generate(files, n)
        _write_index(index, images)
    return Corpus(files, images[:n])


def _generate(files: Path, n: int) -> list[Image]:
    universe = Universe(SEED)
    images: list[Image] = []
    wanted = math.ceil(n / 0.8)  # ~85% of numbers have a drawing
    while len(images) < n:
        images = []
        for number in generate_numbers(wanted, SEED):
            record = universe.lookup_number(number)
            if record is None or record.num is None:
                continue
            images.append(_write_image(files, universe, number, record.pn, record.num, record.ext))
            if len(images) == n:
                break
        wanted *= 2
    return images


def _write_image(files: Path, universe: Universe, number: str, pn: str, num: str, ext: str) -> Image:
    name = f"{pn}_{num}.{ext}"
    data = universe.image_bytes(pn, num)
    path = files / name
    if not path.exists() or path.stat().st_size != len(data):
        path.write_bytes(data)
    return Image(number, pn, num, name, len(data), hashlib.sha256(data).hexdigest())


def _read_index(index: Path) -> list[Image]:
    if not index.exists():
        return []
    with index.open(newline="") as fh:
        return [Image(r["number"], r["pn"], r["num"], r["name"], int(r["size"]), r["sha256"])
                for r in csv.DictReader(fh)]


def _write_index(index: Path, images: list[Image]) -> None:
    temp = index.with_suffix(".tmp")
    with temp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(_INDEX_FIELDS)
        writer.writerows((i.number, i.pn, i.num, i.name, i.size, i.sha256) for i in images)
    temp.replace(index)


# --- patents without a drawing (metadata and scale modes) -------------------------------------


def no_image_numbers(work: Path, count: int) -> list[str]:
    """`count` distinct numbers the universe knows without a drawing, or does not know at all.

    The simulator has no knob for "almost nothing has an image", so these are picked from
    generated numbers (~15% qualify: 8% no drawing, 7% unknown). Cached; the list only grows.
    """
    cache = work / "corpus" / "no-image-numbers.txt"
    numbers = cache.read_text().split() if cache.exists() else []
    if len(numbers) >= count:
        return numbers[:count]
    print(f"corpus: picking {count} numbers without an image (one time, ~{count // 9000 + 1} s) ...", flush=True)
    seen = set(numbers)
    chunk_seed = 1  # always from the first chunk: the cached prefix is skipped, so order is stable
    with ProcessPoolExecutor(max_workers=2) as pool:
        while len(numbers) < count:
            seeds = [chunk_seed, chunk_seed + 1]
            chunk_seed += 2
            for picked in pool.map(_no_image_chunk, seeds):
                for number in picked:
                    if number not in seen:
                        seen.add(number)
                        numbers.append(number)
    cache.write_text("\n".join(numbers) + "\n")
    return numbers[:count]


def _no_image_chunk(seed: int) -> list[str]:
    universe = Universe(SEED)
    out = []
    for number in generate_numbers(_CHUNK, 1000 + seed):
        record = universe.lookup_number(number)
        if record is None or record.num is None:
            out.append(number)
    return out


def mixed_list(corpus: Corpus, no_image: list[str], total: int, image_share: float) -> tuple[list[str], int]:
    """`total` numbers: ~image_share of them (at most the corpus) with images, spread evenly."""
    with_images = min(len(corpus.images), round(total * image_share))
    every = total // with_images if with_images else total + 1
    images = iter(corpus.images[:with_images])
    others = iter(no_image[: total - with_images])
    numbers = []
    for i in range(total):
        img = next(images, None) if i % every == 0 else None
        numbers.append(img.number if img else next(others))
    return numbers, with_images


def write_csv(path: Path, numbers: list[str]) -> Path:
    """A one-column CSV with the `patent_number` header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        fh.write("patent_number\n")
        fh.writelines(f"{n}\n" for n in numbers)
    return path
