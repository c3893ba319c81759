"""Where an image lives under images/: a pure function of pn, drawing number and type.

Layout: `images/<h0h1>/<h2>/<PN>_<NUM>.<ext>`, where h is the SHA-1 of the safe file stem; with
`--drawings all`, `images/<h0h1>/<h2>/<PN>/<NUM>.<ext>`, h the SHA-1 of the safe pn (a patent's
drawings share one folder), NUM the drawing's image id: named by what the drawing is, not by its figure,
which a later listing may change (a file named by figure would then be the name of another drawing's).
4,096 leaf folders keep every folder under ~2,500 files even at ten million patents, and the
hash spreads patents of one office evenly. Names keep only `[A-Za-z0-9_-]`, so no answer from the
API (`../../x`, slashes, NUL, 10,000 characters) can escape `images/` or make an invalid name.
"""

from __future__ import annotations

import hashlib
import re

IMAGES_DIR = "images"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_PART = 60

# Magic bytes → extension. Order matters only for overlapping prefixes (none here).
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"\xff\xd8\xff", 0, "jpg"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"II*\x00", 0, "tif"),
    (b"MM\x00*", 0, "tif"),
    (b"WEBP", 8, "webp"),
    (b"BM", 0, "bmp"),
)
MAGIC_BYTES_NEEDED = 12
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif", "tif": "image/tiff",
                 "webp": "image/webp", "bmp": "image/bmp", "bin": "application/octet-stream"}


def sniff_image_type(head: bytes) -> str | None:
    """The extension for the image format these leading bytes announce, or None if not an image."""
    if head[8:12] == b"WEBP" and not head.startswith(b"RIFF"):
        return None
    for magic, offset, ext in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return ext
    return None


def safe_part(text: str, fallback: str = "x") -> str:
    """A file-name fragment of safe characters; long or altered input keeps a short hash suffix."""
    cleaned = _UNSAFE.sub("_", text).strip("_") or fallback
    if cleaned == text and len(cleaned) <= _MAX_PART:
        return cleaned
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{cleaned[:_MAX_PART - 11]}~{digest}".replace("~", "-")


def image_path(pn: str, num: str, ext: str) -> str:
    """The file's path relative to the output folder, always inside images/."""
    stem = f"{safe_part(pn)}_{safe_part(num, '0')}"
    shard = hashlib.sha1(stem.encode()).hexdigest()
    return f"{IMAGES_DIR}/{shard[:2]}/{shard[2]}/{stem}.{ext}"


def drawing_path(pn: str, num: str, ext: str) -> str:
    """The drawing of a patent whose image id is `num` (--drawings all), relative to the output folder,
    always inside images/."""
    stem = safe_part(pn)
    shard = hashlib.sha1(stem.encode()).hexdigest()
    return f"{IMAGES_DIR}/{shard[:2]}/{shard[2]}/{stem}/{safe_part(num, '0')}.{ext}"
