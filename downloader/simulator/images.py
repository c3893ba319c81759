"""Real, valid image bytes: patent drawing sheets for the CDN, and a vast fake PNG for the size cap.

A drawing sheet is three strips stacked: a header line as on a patent's drawing sheets
("U.S. Patent   Dec. 21, 2021   Sheet 1 of 3   US11205304B2"), the figure itself, and its
"FIG. n" caption. Most are encoded as patent offices serve them, 1-bit PNG (black line art, one
bit a pixel, deflated); `jpg` ones as baseline greyscale JPEG. Nothing is padded, nothing is noise.

Speed. Drawing a figure and packing it to bits costs several milliseconds, too slow for the
demo and the benchmarks' corpus if paid per image. So figures come from a pool of `POOL`
variants per width, each drawn once and kept deflated; an image is its own header (which makes
it unique to its patent and drawing) plus a pool figure plus a caption, whose deflate streams
are joined: about half a millisecond. The pool (under a second of drawing) is also kept on disk
between processes, in `cache_dir()`; a damaged or foreign file there is simply drawn again.

Sizes follow from the figure, 5–200 KB: a figure too sparse to reach `MIN_SIZE` is drawn again
denser (or the next one of the pool is taken), and a JPEG over `MAX_SIZE` is saved again at a
lower quality.
"""

from __future__ import annotations

import functools
import io
import os
import random
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import PIL
from PIL import Image

from downloader.simulator.figures import draw_band, draw_body

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
MIN_SIZE = 5_000
MAX_SIZE = 200_000
POOL = 40  # figure variants per width
WIDTHS = (960, 1120, 1280)
VERSION = 2  # of the drawings: bump when the bytes for a given key change (caches key on it)
_MONTHS = ("Jan.", "Feb.", "Mar.", "Apr.", "May", "Jun.", "Jul.", "Aug.", "Sep.", "Oct.", "Nov.", "Dec.")
_OFFICES = {"US": "U.S. Patent", "EP": "European Patent", "CN": "CN Patent", "JP": "JP Patent",
            "KR": "KR Patent", "WO": "PCT Application"}


@dataclass(frozen=True, slots=True)
class Strip:
    """Scanlines of a 1-bit PNG (a filter byte 0 before each packed row), deflated on their own.

    `deflated` is raw deflate ending in a full flush (or the final block, when `last`): strips
    compressed this way can be concatenated into one valid deflate stream, so a pool figure is
    compressed once, not once per image. `adler` and `size` are of the uncompressed rows.
    """

    width: int
    height: int
    deflated: bytes
    adler: int
    size: int

    @classmethod
    def of(cls, image: Image.Image, last: bool = False) -> Strip:
        """The strip of a mode "1" image."""
        width, height = image.size
        packed = image.tobytes()  # ceil(width / 8) bytes a row, most significant bit first, 1 = white
        stride = (width + 7) // 8
        rows = b"".join(b"\x00" + packed[i : i + stride] for i in range(0, stride * height, stride))
        deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
        data = deflate.compress(rows) + deflate.flush(zlib.Z_FINISH if last else zlib.Z_FULL_FLUSH)
        return cls(width, height, data, zlib.adler32(rows), len(rows))

    def rows(self) -> bytes:
        """The uncompressed scanlines."""
        return zlib.decompressobj(-15).decompress(self.deflated)


def make_drawing(rng: random.Random, ext: str, pn: str = "", fig: int = 1) -> bytes:
    """The drawing sheet of patent `pn`, figure `fig`, as PNG (`ext` "png") or JPEG ("jpg"), chosen by `rng`."""
    width = rng.choice(WIDTHS)
    variant = rng.randrange(POOL)
    sheets = fig + rng.randrange(4)
    date = f"{_MONTHS[rng.randrange(12)]} {rng.randint(1, 28)}, {rng.randint(2005, 2024)}"
    header = Strip.of(draw_band(width, round(70 * width / 1000), _OFFICES.get(pn[:2], "Patent"), date,
                                f"Sheet {fig} of {sheets}    {pn}"))
    if ext == "jpg":
        return _jpeg((header, figure(width, variant), caption(width, fig)), rng.randint(75, 92))
    for step in range(POOL):  # the rare sheet under MIN_SIZE takes the next figure of the pool instead
        data = encode_png((header, figure(width, (variant + step) % POOL), caption(width, fig)))
        if len(data) >= MIN_SIZE:
            break
    return data


@functools.lru_cache(maxsize=POOL * len(WIDTHS))
def figure(width: int, variant: int) -> Strip:
    """Figure `variant` of the pool at `width`: from the disk cache, else drawn (and cached there)."""
    path = None if (folder := cache_dir()) is None else folder / f"{width}-{variant}.strip"
    strip = _load(path, width) if path else None
    if strip is None:
        strip = _draw_figure(width, variant)
        if path:
            _save(path, strip)
    return strip


def _draw_figure(width: int, variant: int) -> Strip:
    """Drawn again, denser, while it would be under MIN_SIZE."""
    rng = random.Random(f"figure\x1f{width}\x1f{variant}")
    while True:
        strip = Strip.of(draw_body(rng, width, round(width * rng.uniform(0.7, 1.2))))
        if len(strip.deflated) >= MIN_SIZE - 1_500:  # header and caption add the rest
            return strip


def cache_dir() -> Path | None:
    """Where drawn figures are kept between processes, or None when `PATENT_IMAGES_CACHE=off`.

    `$PATENT_IMAGES_CACHE`, else `$XDG_CACHE_HOME/patent-images` (~/.cache/patent-images). The
    folder's name holds everything the bytes depend on (drawing version, Pillow, zlib), so another
    version never reads them.
    """
    root = os.environ.get("PATENT_IMAGES_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "patent-images")
    if root.lower() in ("off", "0", "none"):
        return None
    return Path(root) / f"figures-v{VERSION}-pillow{PIL.__version__}-zlib{zlib.ZLIB_RUNTIME_VERSION}"


_HEAD = struct.Struct(">IIII")  # width, height, adler32 and size of the rows


def _load(path: Path, width: int) -> Strip | None:
    """A cached figure, checked whole (its rows inflate to their recorded size and checksum), else None."""
    try:
        data = path.read_bytes()
        stored_width, height, adler, size = _HEAD.unpack_from(data)
        strip = Strip(stored_width, height, data[_HEAD.size:], adler, size)
        rows = strip.rows()
    except (OSError, struct.error, zlib.error):
        return None
    ok = stored_width == width and len(rows) == size == height * ((width + 7) // 8 + 1) and zlib.adler32(rows) == adler
    return strip if ok else None


def _save(path: Path, strip: Strip) -> None:
    """Keep a figure for the next process (best effort: a read-only home just means drawing again)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.write_bytes(_HEAD.pack(strip.width, strip.height, strip.adler, strip.size) + strip.deflated)
        os.replace(temp, path)
    except OSError:
        temp.unlink(missing_ok=True)


@functools.lru_cache(maxsize=64)
def caption(width: int, fig: int) -> Strip:
    """The "FIG. n" strip (it ends every sheet, so it holds the final deflate block)."""
    return Strip.of(draw_band(width, round(110 * width / 1000), centre=f"FIG. {fig}", big=True), last=True)


def encode_png(strips: tuple[Strip, ...]) -> bytes:
    """A 1-bit greyscale PNG of strips stacked top to bottom (the last one `last`): one IDAT."""
    adler, zdata = 1, [b"\x78\x01"]  # zlib header: deflate, 32 KB window, fastest
    for strip in strips:
        adler = _adler32_combine(adler, strip.adler, strip.size)
        zdata.append(strip.deflated)
    zdata.append(struct.pack(">I", adler))
    ihdr = struct.pack(">IIBBBBB", strips[0].width, sum(s.height for s in strips), 1, 0, 0, 0, 0)
    return PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(zdata)) + _png_chunk(
        b"IEND", b"")


def _adler32_combine(first: int, second: int, second_len: int) -> int:
    """The Adler-32 of two byte strings joined, from theirs (zlib's adler32_combine)."""
    base = 65521
    rem = second_len % base
    sum1 = first & 0xFFFF
    sum2 = rem * sum1 % base
    sum1 = (sum1 + (second & 0xFFFF) + base - 1) % base
    sum2 = (sum2 + (first >> 16) + (second >> 16) + base - rem) % base
    return sum1 | sum2 << 16


def warm_pool() -> None:
    """Draw every pool figure now (the demo does it in a thread while it reads inputs and asks the API)."""
    for width in WIDTHS:
        for variant in range(POOL):
            figure(width, variant)


def _jpeg(parts: tuple[Strip, ...], quality: int) -> bytes:
    """The sheet at half size, as greyscale JPEG: scanned drawings served as JPEG are small and soft-edged."""
    width = parts[0].width
    sheet = Image.new("L", (width, sum(p.height for p in parts)), 255)
    top = 0
    for part in parts:
        # Each row starts with its filter byte: read the rows from offset 1 with a stride one byte longer.
        image = Image.frombytes("1", (width, part.height), part.rows()[1:], "raw", "1", (width + 7) // 8 + 1)
        sheet.paste(image, (0, top))
        top += part.height
    sheet = sheet.reduce(2)
    while True:
        out = io.BytesIO()
        sheet.save(out, "JPEG", quality=quality)
        if out.tell() <= MAX_SIZE or quality <= 20:
            return out.getvalue()
        quality -= 15


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """PNG signature plus an IHDR chunk for an 8-bit grayscale image."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr)


def huge_png_chunks(total: int, chunk: int = 65_536) -> Iterator[bytes]:
    """`total` bytes: a PNG header claiming a vast image, then zero padding, made lazily."""
    head = png_header(50_000, 50_000)[:total]
    yield head
    left = total - len(head)
    zeros = bytes(chunk)
    while left > 0:
        piece = min(chunk, left)
        yield zeros if piece == chunk else bytes(piece)
        left -= piece
