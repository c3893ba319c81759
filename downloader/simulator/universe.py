"""A deterministic universe of patents, derived from a seed (pure: no I/O, no aiohttp).

Every fact about a patent (does it exist, has it a drawing, which number, PNG or JPEG,
its bytes) is a stable hash of (seed, key), so two runs with one seed agree exactly.

Patent ids handed out for publication numbers are reversible: the pn is packed into the
122 free bits of a version-5-shaped UUID through a seeded Feistel permutation, so asking
by that `patent_id` later returns the very same record. Any other valid UUID is a
synthetic Chinese patent (`CN` + 9 digits + `A`).
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from dataclasses import dataclass

from downloader.simulator import images

UNKNOWN_SHARE = 0.07
NO_DRAWING_SHARE = 0.08
JPEG_SHARE = 0.15
# Drawings of a patent (P042): none when it has no abstract drawing; a few have over 100 (paging).
MANY_DRAWINGS_SHARE = 0.01
MAX_FEW_DRAWINGS = 30
DEFAULT_KIND = {"US": "B2", "CN": "A", "EP": "B1", "JP": "A", "KR": "B1", "WO": "A1"}

_KIND_RE = re.compile(r"^(.*\d)([A-Z]\d?)$")
_NUMBER_RE = re.compile(r"^[A-Z]{2}[A-Z]{0,2}\d{3,}(?:[A-Z]\d?)?$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_HALF_BITS = 61
_HALF_MASK = (1 << _HALF_BITS) - 1
_MAX_PACKED_LEN = 23  # 37**23 < 2**122


@dataclass(frozen=True, slots=True)
class Record:
    """One patent as the API knows it; `num` None means it has no abstract drawing."""

    pn: str
    patent_id: str
    num: str | None
    ext: str


def _hash_int(*parts: object) -> int:
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _unit(*parts: object) -> float:
    """A stable uniform number in [0, 1) for the given parts."""
    return _hash_int(*parts) / 2.0**64


def normalize_number(number: str) -> str | None:
    """The full publication number (kind code added if missing), or None if not one."""
    text = number.strip().upper()
    if not _NUMBER_RE.match(text) or len(text) > 20:
        return None
    if _KIND_RE.match(text):
        return text
    return text + DEFAULT_KIND.get(text[:2], "A")


class Universe:
    """The patents of one seed: lookups by number or id, and their image bytes."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def lookup_number(self, number: str) -> Record | None:
        """The record for a publication number, or None if the API would not know it."""
        pn = normalize_number(number)
        if pn is None:
            return None
        return self._record(pn, self.patent_id_for(pn), pn)

    def lookup_id(self, patent_id: str) -> Record | None:
        """The record for a patent id (a UUID, any case), or None if unknown or invalid."""
        key = patent_id.strip().lower()
        if not _UUID_RE.match(key):
            return None
        pn = self._unpack_pn(key)
        if pn is not None:
            return self.lookup_number(pn)
        synthetic = f"CN{100_000_000 + _hash_int(self.seed, 'cn', key) % 900_000_000}A"
        return self._record(synthetic, key, key)

    def ext_for(self, pn: str) -> str:
        """The image type of a patent's drawing: "png" (~85%) or "jpg"."""
        return "jpg" if _unit(self.seed, "ext", pn) < JPEG_SHARE else "png"

    def image_bytes(self, pn: str, num: str) -> bytes:
        """The drawing's bytes: a valid PNG or JPEG (per `ext_for`), cached."""
        return _image_bytes(self.seed, pn, num, self.ext_for(pn))

    def figures(self, record: Record) -> int:
        """How many drawings P042 lists for a patent: 0 without an abstract drawing, else mostly 1..30
        (about 8 on average, as the front pages of real filings), and about 1% with 101..160."""
        if record.num is None:
            return 0
        roll = _unit(self.seed, "figures", record.pn)
        if roll < MANY_DRAWINGS_SHARE:
            return 101 + _hash_int(self.seed, "many", record.pn) % 60
        return 1 + int(MAX_FEW_DRAWINGS * _unit(self.seed, "few", record.pn) ** 2.2)

    def image_id(self, pn: str, figure: int) -> str:
        """The stable name of a drawing (as P042's `HDA…` file names): a per-patent stem and the figure."""
        return f"HDA{_hash_int(self.seed, 'hda', pn) % 10**15:015d}{figure:04d}"

    def patent_id_for(self, pn: str) -> str:
        """The reversible, deterministic UUID for a full publication number."""
        value = 0
        for char in reversed(pn[:_MAX_PACKED_LEN]):
            value = value * 37 + _ALPHABET.index(char) + 1
        left, right = value >> _HALF_BITS, value & _HALF_MASK
        for rnd in range(4):
            left, right = right, left ^ self._round(rnd, right)
        mixed = (left << _HALF_BITS) | right
        as_int = (mixed >> 74) << 80 | 0x5 << 76 | ((mixed >> 62) & 0xFFF) << 64
        as_int |= 0b10 << 62 | mixed & ((1 << 62) - 1)
        text = f"{as_int:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

    def _unpack_pn(self, key: str) -> str | None:
        as_int = int(key.replace("-", ""), 16)
        if (as_int >> 76) & 0xF != 5 or (as_int >> 62) & 0b11 != 0b10:
            return None
        mixed = (as_int >> 80) << 74 | ((as_int >> 64) & 0xFFF) << 62 | as_int & ((1 << 62) - 1)
        left, right = mixed >> _HALF_BITS, mixed & _HALF_MASK
        for rnd in reversed(range(4)):
            left, right = right ^ self._round(rnd, left), left
        value = (left << _HALF_BITS) | right
        chars = []
        while value:
            value, digit = divmod(value, 37)
            if digit == 0:
                return None
            chars.append(_ALPHABET[digit - 1])
        pn = "".join(chars)
        return pn if normalize_number(pn) == pn else None

    def _round(self, rnd: int, half: int) -> int:
        return _hash_int(self.seed, "feistel", rnd, half) & _HALF_MASK

    def _record(self, pn: str, patent_id: str, key: str) -> Record | None:
        fate = _unit(self.seed, "fate", key)
        if fate < UNKNOWN_SHARE:
            return None
        ext = self.ext_for(pn)
        if fate < UNKNOWN_SHARE + NO_DRAWING_SHARE:
            return Record(pn, patent_id, None, ext)
        num = "0002" if _unit(self.seed, "num", key) < 0.03 else "0001"
        return Record(pn, patent_id, num, ext)


@functools.lru_cache(maxsize=4096)
def _image_bytes(seed: int, pn: str, num: str, ext: str) -> bytes:
    rng = random.Random(f"{seed}\x1f{pn}\x1f{num}")
    return images.make_drawing(rng, ext, pn, int(num) if num.isdigit() else 1)


def _cn(rng: random.Random) -> str:
    kind = rng.choices(["1{:08d}A", "1{:08d}B", "2{:08d}U", "3{:08d}S"], [50, 20, 20, 10])[0]
    return "CN" + kind.format(rng.randrange(10**8))


def _us(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.25:
        return f"US{rng.randrange(10_000_000, 12_000_000)}"  # granted, kind code omitted
    if roll < 0.65:
        return f"US{rng.randrange(10_000_000, 12_000_000)}{rng.choice(['B1', 'B2'])}"
    if roll < 0.9:
        return f"US{rng.randrange(2015, 2024)}{rng.randrange(10**7):07d}A1"
    return f"USD{rng.randrange(800_000, 1_000_000)}S"


_OFFICES = {
    "CN": _cn,
    "US": _us,
    "EP": lambda r: f"EP{r.randrange(1_000_000, 4_000_000)}{r.choice(['A1', 'B1'])}",
    "JP": lambda r: f"JP{r.randrange(2005, 2024)}{r.randrange(10**6):06d}A",
    "KR": lambda r: f"KR10{r.randrange(10**7):07d}B1",
    "WO": lambda r: f"WO{r.randrange(2005, 2024)}{r.randrange(10**6):06d}A1",
}
_OFFICE_WEIGHTS = [35, 38, 8, 8, 6, 5]  # US is ~38%, a quarter of it without kind code


def generate_numbers(n: int, seed: int = 0) -> list[str]:
    """`n` distinct realistic publication numbers across CN, US, EP, JP, KR and WO."""
    rng = random.Random(f"numbers\x1f{seed}")
    makers = list(_OFFICES.values())
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen[rng.choices(makers, _OFFICE_WEIGHTS)[0](rng)] = None
    return list(seen)
