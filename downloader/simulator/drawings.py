"""The draughtsman's pen for patent figures: a 1-bit `Sheet` with lines, arrows, hatching and numerals.

Patent drawings are black line art on white: outlines of even weight, section hatching at 45°,
dot screens, dashed and centre lines, and reference numerals in the margins joined to their
parts by thin, slightly bent leader lines. Margins are laid out as slots sorted by the height of
what they point at, so leader lines do not cross. Hatching and dots are cut from masks built a
row at a time (one C call per row), and text is pasted from cached glyphs, because per-line
drawing calls and FreeType rendering per string would dominate the cost of a figure.

Everything random comes from the `random.Random` a caller passes in, nothing from the clock or
the machine, so the same seed draws the same figure. There is no noise.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Sequence

from PIL import Image, ImageChops, ImageDraw, ImageFont

Point = tuple[float, float]
Box = tuple[float, float, float, float]
BLACK, WHITE = 0, 1

@functools.cache
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at `size` px (the same on every machine: no system fonts)."""
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=2048)
def _glyph(size: int, char: str) -> tuple[Image.Image, int, float]:
    """One character as a 1-bit mask (the font's full line height), its ascent and its advance.

    Rendering text through FreeType costs most of a millisecond a call; pasting cached glyphs
    costs microseconds, and these drawings need no kerning.
    """
    face = font(size)
    ascent, descent = face.getmetrics()  # type: ignore[union-attr]
    advance = face.getlength(char)
    mask = Image.new("1", (max(1, math.ceil(advance) + 2), ascent + descent), 0)
    ImageDraw.Draw(mask).text((0, ascent), char, fill=1, font=face, anchor="ls")
    return mask, ascent, advance


def write(image: Image.Image, at: tuple[float, float], words: str, size: int, anchor: str = "mm") -> None:
    """Black text on `image`: `anchor` is l/m/r horizontally, then m (middle) or s (baseline)."""
    glyphs = [_glyph(size, c) for c in words]
    if not glyphs:
        return
    total = sum(g[2] for g in glyphs)
    x = at[0] - {"l": 0.0, "m": total / 2, "r": total}[anchor[0]]
    mask, ascent, _ = glyphs[0]
    top = at[1] - ascent if anchor[1] == "s" else at[1] - mask.height / 2
    for mask, _, advance in glyphs:
        image.paste(BLACK, (round(x), round(top)), mask)
        x += advance


class Sheet:
    """A 1-bit canvas with the pen of a patent draughtsman: line weights scale with the page."""

    def __init__(self, width: int, height: int, rng: random.Random) -> None:
        self.image = Image.new("1", (width, height), WHITE)
        self.draw = ImageDraw.Draw(self.image)
        self.rng = rng
        self.unit = width / 1000  # one "point" of the figure; lines and text scale with it
        self.lw = max(2, round(2.6 * self.unit))
        self.thin = max(1, round(1.4 * self.unit))
        self.font = max(12, round(30 * self.unit))
        self.small = max(10, round(21 * self.unit))
        self.leaders: list[tuple[str, Point]] = []  # (numeral, target) placed by `place_leaders`

    def line(self, path: Sequence[Point], width: int | None = None) -> None:
        """A polyline with round joints."""
        self.draw.line(points(path), fill=BLACK, width=width or self.lw, joint="curve")

    def rect(self, box: Box, width: int | None = None) -> None:
        """An open rectangle."""
        self.draw.rectangle(box_ints(box), outline=BLACK, width=width or self.lw)

    def circle(self, centre: Point, radius: float, width: int | None = None, fill: bool = False) -> None:
        """A circle, outlined or solid."""
        x, y = centre
        self.draw.ellipse(box_ints((x - radius, y - radius, x + radius, y + radius)), outline=BLACK,
                          width=width or self.lw, fill=BLACK if fill else None)

    def arrow(self, start: Point, end: Point, head: float | None = None) -> None:
        """A line ending in a solid arrowhead at `end`."""
        head = head or 16 * self.unit
        angle = math.atan2(end[1] - start[1], end[0] - start[0])
        base = (end[0] - head * math.cos(angle), end[1] - head * math.sin(angle))
        self.line([start, base])
        wing = head * 0.45
        left = (base[0] + wing * math.sin(angle), base[1] - wing * math.cos(angle))
        right = (base[0] - wing * math.sin(angle), base[1] + wing * math.cos(angle))
        self.draw.polygon(points((end, left, right)), fill=BLACK)

    def dashed(self, start: Point, end: Point, dash: float = 14, gap: float = 8, dot: bool = False) -> None:
        """A dashed line (dash-dot for centre lines when `dot`)."""
        length = math.dist(start, end)
        dash, gap = dash * self.unit, gap * self.unit
        ux, uy = (end[0] - start[0]) / max(length, 1e-9), (end[1] - start[1]) / max(length, 1e-9)
        pos = 0.0
        while pos < length:
            stop = min(pos + dash, length)
            self.line([(start[0] + ux * pos, start[1] + uy * pos), (start[0] + ux * stop, start[1] + uy * stop)],
                      self.thin)
            pos = stop + gap
            if dot and pos < length:
                self.line([(start[0] + ux * pos, start[1] + uy * pos)] * 2, self.thin)
                pos += gap

    def text(self, at: Point, words: str, small: bool = False, anchor: str = "mm") -> None:
        """Text centred (by default) on `at`."""
        write(self.image, at, words, self.small if small else self.font, anchor)

    def hatchbox_ints(self, box: Box, spacing: float, angle: int = 45) -> None:
        """Parallel section lines at ±45° across `box`."""
        self.fill(box, lambda b: _lines(b, self._step(spacing), self.thin + 1, 1 if angle == 45 else -1))

    def cross_hatch(self, box: Box, spacing: float) -> None:
        """Section lines both ways across `box`."""
        step = self._step(spacing)
        width = self.thin + 1
        self.fill(box, lambda b: ImageChops.lighter(_lines(b, step, width, 1), _lines(b, step, width, -1)))

    def stipple(self, box: Box, spacing: float) -> None:
        """A regular dot screen (concrete, resin or a doped region in patent drawings)."""
        self.fill(box, lambda b: _dots(b, self._step(spacing), self.thin + 1))

    def hatch_ring(self, centre: Point, outer: float, inner: float, spacing: float) -> None:
        """Section lines at 45° across the ring between two circles around `centre`."""
        x, y = centre
        box = box_ints((x - outer, y - outer, x + outer, y + outer))
        ring = Image.new("L", (box[2] - box[0], box[3] - box[1]), 0)
        shape = ImageDraw.Draw(ring)
        shape.ellipse((0, 0, ring.width - 1, ring.height - 1), fill=255)
        shape.ellipse(box_ints((outer - inner, outer - inner, outer + inner, outer + inner)), fill=0)
        lines = _lines(box, self._step(spacing), self.thin + 1, 1)
        self.image.paste(BLACK, box, ImageChops.darker(lines, ring))

    def fill(self, box: Box, mask: Callable[[tuple[int, int, int, int]], Image.Image]) -> None:
        """Ink `box` through a pattern mask made for it (one C call per row of the pattern, no per-line calls)."""
        cut = box_ints(box)
        self.image.paste(BLACK, cut, mask(cut))

    def _step(self, spacing: float) -> int:
        return max(5, round(spacing * self.unit))

    def name(self, numeral: str, target: Point) -> None:
        """Give the part at `target` a reference numeral in the margin (drawn by `place_leaders`)."""
        self.leaders.append((numeral, target))

    def place_leaders(self, area: Box) -> None:
        """Numerals in the margins left and right of `area`, each joined to its part by a bent leader."""
        left = sorted((t for t in self.leaders if t[1][0] < (area[0] + area[2]) / 2), key=lambda t: t[1][1])
        right = sorted((t for t in self.leaders if t[1][0] >= (area[0] + area[2]) / 2), key=lambda t: t[1][1])
        for side, items in ((-1, left), (1, right)):
            x = area[0] - 46 * self.unit if side < 0 else area[2] + 46 * self.unit
            for (numeral, target), y in zip(items, _slots(items, area, 46 * self.unit), strict=True):
                self.text((x, y), numeral)
                start = (x - side * 30 * self.unit, y)
                bend = ((start[0] + target[0]) / 2, (start[1] + target[1]) / 2 + self.rng.uniform(-18, 18) * self.unit)
                self.line(bezier(start, bend, target), self.thin)


def box_ints(box: Box) -> tuple[int, int, int, int]:
    """A box in whole pixels."""
    return round(box[0]), round(box[1]), round(box[2]), round(box[3])


def points(path: Sequence[Point]) -> list[tuple[int, int]]:
    """A path in whole pixels."""
    return [(round(x), round(y)) for x, y in path]


def _lines(box: tuple[int, int, int, int], step: int, width: int, direction: int) -> Image.Image:
    """An "L" mask of 45° lines over `box` (255 = ink), phased on page coordinates so boxes line up.

    Row y of a 45° pattern is row 0 shifted by y, so each row is a slice of one periodic byte string.
    """
    x0, y0, x1, y1 = box
    w, h = max(x1 - x0, 1), max(y1 - y0, 1)
    row = (b"\xff" * width + bytes(step - width)) * (w // step + 2)
    rows = [row[(x0 + direction * (y0 + y)) % step:][:w] for y in range(h)]
    return Image.frombytes("L", (w, h), b"".join(rows))


def _dots(box: tuple[int, int, int, int], step: int, size: int) -> Image.Image:
    """An "L" mask of a staggered dot screen over `box`."""
    x0, y0, x1, y1 = box
    w, h = max(x1 - x0, 1), max(y1 - y0, 1)
    dotted = (b"\xff" * size + bytes(step - size)) * (w // step + 2)
    blank = bytes(w)
    rows = []
    for y in range(y0, y0 + h):
        band, line = divmod(y, step)
        shift = (x0 + (step // 2 if band % 2 else 0)) % step
        rows.append(dotted[shift:][:w] if line < size else blank)
    return Image.frombytes("L", (w, h), b"".join(rows))


def bezier(p0: Point, p1: Point, p2: Point, steps: int = 10) -> list[Point]:
    """A quadratic Bézier curve from `p0` to `p2`, pulled towards `p1`, as `steps` segments."""
    return [((1 - t) ** 2 * p0[0] + 2 * (1 - t) * t * p1[0] + t * t * p2[0],
             (1 - t) ** 2 * p0[1] + 2 * (1 - t) * t * p1[1] + t * t * p2[1])
            for t in (i / steps for i in range(steps + 1))]


def _slots(items: Sequence[tuple[str, Point]], area: Box, gap: float) -> list[float]:
    """Label heights: near each target's own height, pushed apart to at least `gap`."""
    if not items:
        return []
    gap = min(gap, (area[3] - area[1]) / len(items))
    ys = [t[1][1] for t in items]
    for i in range(1, len(ys)):
        ys[i] = max(ys[i], ys[i - 1] + gap)
    overflow = ys[-1] - area[3]
    if overflow > 0:
        ys = [y - overflow for y in ys]
        for i in range(len(ys) - 2, -1, -1):
            ys[i] = min(ys[i], ys[i + 1] - gap)
    return ys
