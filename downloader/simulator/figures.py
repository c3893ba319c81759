"""Six kinds of patent figure, drawn with the `drawings` pen from a seed (pure: no I/O).

A figure is one of the kinds that fill most front pages — a block diagram, a flow chart, a
layered cross-section, a mechanical part in section, a device in oblique projection, a graph —
with its parts named by reference numerals. `draw_body` picks the kind and draws it; `draw_band`
draws the text strips above and below it (a sheet's header, the "FIG. n" caption).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from PIL import Image

from downloader.simulator.drawings import BLACK, WHITE, Box, Sheet, bezier, box_ints, points, write

_WORDS = ("PROCESSOR", "MEMORY", "SENSOR", "CONTROLLER", "DISPLAY", "STORAGE", "POWER SUPPLY", "TRANSCEIVER",
          "CAMERA", "USER INPUT", "BATTERY", "MOTOR DRIVER", "ENCODER", "DECODER", "CLOCK", "ANTENNA",
          "I/O INTERFACE", "COMPARATOR", "AMPLIFIER", "FILTER", "CACHE", "SERVER", "DATABASE", "NETWORK")
_STEPS = ("RECEIVE REQUEST", "READ SENSOR DATA", "DETECT EDGES", "COMPUTE FEATURES", "UPDATE MODEL",
          "SEND RESPONSE", "STORE RESULT", "COMPARE THRESHOLD", "ADJUST OUTPUT", "ENCODE FRAME",
          "VERIFY SIGNATURE", "SELECT CHANNEL", "MEASURE VOLTAGE", "DISPLAY RESULT", "CALIBRATE")
_AXES = (("TIME (s)", "VOLTAGE (V)"), ("TEMPERATURE (°C)", "YIELD (%)"), ("FREQUENCY (Hz)", "GAIN (dB)"),
         ("LOAD (N)", "STRAIN"), ("WAVELENGTH (nm)", "INTENSITY"), ("CYCLES", "CAPACITY (mAh)"))


class Numerals:
    """Reference numerals as a patent uses them: 10, 12, 14 … or 100, 102, 104 …, in order."""

    def __init__(self, rng: random.Random, fig: int) -> None:
        self._next = rng.choice((10, 20, 100 * fig, 100 * fig + 10))
        self._step = 2 if rng.random() < 0.8 else 1

    def __call__(self) -> str:
        value = self._next
        self._next += self._step
        return str(value)


# --- the six kinds of figure: each draws inside `area` and names its parts --------------------------


def block_diagram(s: Sheet, area: Box, n: Numerals) -> None:
    """Boxes with words, joined by arrows and a bus, inside a dashed system outline."""
    rng = s.rng
    cols, rows = rng.choice(((2, 2), (2, 3), (3, 2), (3, 3), (2, 4)))
    x0, y0, x1, y1 = area
    pad = 40 * s.unit
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        s.dashed(a, b)
    s.name(n(), (x1, y0 + pad * 0.4))
    cw, ch = (x1 - x0 - pad * (cols + 1)) / cols, (y1 - y0 - pad * (rows + 1)) / rows
    words = rng.sample(_WORDS, cols * rows)
    boxes = []
    for r in range(rows):
        for c in range(cols):
            bx, by = x0 + pad + c * (cw + pad), y0 + pad + r * (ch + pad)
            box = (bx, by + ch * 0.18, bx + cw, by + ch * 0.82)
            boxes.append(box)
            s.rect(box)
            s.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), words[r * cols + c], small=True)
            if c in (0, cols - 1):
                s.name(n(), (box[0] if c == 0 else box[2], box[1] + (box[3] - box[1]) * 0.3))
            else:  # a middle box: its numeral sits inside, under the words
                s.text(((box[0] + box[2]) / 2, box[3] - 18 * s.unit), n(), small=True)
    for i, box in enumerate(boxes):
        if i % cols < cols - 1:  # to the right neighbour
            nxt = boxes[i + 1]
            y = (box[1] + box[3]) / 2
            s.arrow((box[2], y), (nxt[0], y))
        if i + cols < len(boxes) and rng.random() < 0.6:  # down
            nxt = boxes[i + cols]
            x = (box[0] + box[2]) / 2
            s.arrow((x, box[3]), (x, nxt[1]))
            s.arrow((x + 14 * s.unit, nxt[1]), (x + 14 * s.unit, box[3]))


def flow_chart(s: Sheet, area: Box, n: Numerals) -> None:
    """START, steps with step numbers, a decision diamond looping back, END."""
    rng = s.rng
    x0, y0, x1, y1 = area
    steps = rng.sample(_STEPS, rng.randint(3, 5))
    items = ["START", *steps, "?", "END"]
    cx = (x0 + x1) / 2 - 30 * s.unit
    w, gap = (x1 - x0) * 0.55, (y1 - y0) / len(items)
    h = gap * 0.58
    prefix, first = rng.choice((("S", 101), ("S", 1), ("", 200), ("", 300)))
    boxes: list[Box] = []
    for i, label in enumerate(items):
        top = y0 + i * gap
        box = (cx - w / 2, top, cx + w / 2, top + h)
        boxes.append(box)
        if label in ("START", "END"):
            s.draw.rounded_rectangle(box_ints(box), radius=round(h / 2), outline=BLACK, width=s.lw)
            s.text((cx, top + h / 2), label, small=True)
        elif label == "?":
            s.draw.polygon(points(((cx, top), (cx + w / 2, top + h / 2), (cx, top + h), (cx - w / 2, top + h / 2))),
                           outline=BLACK, width=s.lw)
            s.text((cx, top + h / 2), "DONE?", small=True)
            s.text((cx + 14 * s.unit, top + h + 16 * s.unit), "YES", small=True, anchor="lm")
            s.text((cx + w / 2 + 40 * s.unit, top + h / 2 - 18 * s.unit), "NO", small=True)
            back = boxes[1]
            right = cx + w / 2 + 70 * s.unit
            s.line([(cx + w / 2, top + h / 2), (right, top + h / 2), (right, (back[1] + back[3]) / 2)])
            s.arrow((right, (back[1] + back[3]) / 2), (back[2], (back[1] + back[3]) / 2))
        else:
            s.rect(box)
            s.text((cx, top + h / 2), label, small=True)
            s.text((box[2] + 20 * s.unit, top - 6 * s.unit), f"{prefix}{first + i - 1}", small=True, anchor="ls")
        if i:
            s.arrow((cx, boxes[i - 1][3]), (cx, top))
    s.name(n(), (boxes[0][0], (boxes[0][1] + boxes[0][3]) / 2))


def cross_section(s: Sheet, area: Box, n: Numerals) -> None:
    """Stacked layers, each with its own hatching, a bump on top; every layer named."""
    rng = s.rng
    x0, y0, x1, y1 = area
    layers = rng.randint(3, 6)
    weights = [rng.uniform(0.6, 1.6) for _ in range(layers)]
    top = y0 + (y1 - y0) * 0.28
    unit_h = (y1 - top) / sum(weights)
    fills: list[Callable[[Box], None]] = [
        lambda b: s.hatchbox_ints(b, 18, 45), lambda b: s.hatchbox_ints(b, 14, -45), lambda b: s.stipple(b, 16),
        lambda b: None, lambda b: s.cross_hatch(b, 22)]
    y = top
    for i in range(layers):
        box = (x0, y, x1, y + weights[i] * unit_h)
        fills[(i + rng.randrange(5)) % len(fills)](box)
        s.rect(box)
        s.name(n(), (x0 + (x1 - x0) * rng.uniform(0.05, 0.3) if i % 2 else x1 - (x1 - x0) * rng.uniform(0.05, 0.3),
                     (box[1] + box[3]) / 2))
        y = box[3]
    bw = (x1 - x0) * rng.uniform(0.2, 0.4)
    bx = x0 + (x1 - x0 - bw) * rng.uniform(0.3, 0.7)
    bump = ((bx, top), (bx + bw * 0.15, top - (top - y0) * 0.7), (bx + bw * 0.85, top - (top - y0) * 0.7),
            (bx + bw, top))
    s.line(bump)
    s.hatchbox_ints((bx + bw * 0.2, top - (top - y0) * 0.6, bx + bw * 0.8, top), 12, 45)
    s.name(n(), ((bx + bx + bw) / 2, top - (top - y0) * 0.7))


def mechanical(s: Sheet, area: Box, n: Numerals) -> None:
    """A flange in section: hatched ring, shaft with keyway, bolt circle, centre lines."""
    rng = s.rng
    x0, y0, x1, y1 = area
    c = ((x0 + x1) / 2, (y0 + y1) / 2)
    outer = min(x1 - x0, y1 - y0) * 0.45
    ring_in = outer * rng.uniform(0.55, 0.7)
    shaft = ring_in * rng.uniform(0.45, 0.65)
    s.circle(c, outer)
    s.circle(c, ring_in)
    s.hatch_ring(c, outer, ring_in, 16)
    s.circle(c, shaft)
    key = shaft * 0.22
    s.rect((c[0] - key, c[1] - shaft - key * 0.2, c[0] + key, c[1] - shaft + key * 1.2))
    bolts = rng.choice((4, 6, 8))
    pitch = (outer + ring_in) / 2
    for k in range(bolts):
        a = 2 * math.pi * k / bolts + math.pi / bolts
        s.circle((c[0] + pitch * math.cos(a), c[1] + pitch * math.sin(a)), outer * 0.06, fill=k % 2 == 0)
    reach = outer * 1.12
    s.dashed((c[0] - reach, c[1]), (c[0] + reach, c[1]), dash=26, gap=6, dot=True)
    s.dashed((c[0], c[1] - reach), (c[0], c[1] + reach), dash=26, gap=6, dot=True)
    s.name(n(), (c[0] + outer * 0.7, c[1] - outer * 0.71))
    s.name(n(), (c[0] - (outer + ring_in) / 2 * 0.7, c[1] + (outer + ring_in) / 2 * 0.7))
    s.name(n(), (c[0] + shaft * 0.6, c[1] + shaft * 0.8))
    s.name(n(), (c[0] + pitch * math.cos(math.pi / bolts), c[1] + pitch * math.sin(math.pi / bolts)))
    s.name(n(), (c[0] - key, c[1] - shaft))


def device(s: Sheet, area: Box, n: Numerals) -> None:
    """A housing in oblique projection: screen, buttons, vents, a cable to a plug."""
    rng = s.rng
    x0, y0, x1, y1 = area
    w, h = (x1 - x0) * 0.62, (y1 - y0) * 0.5
    dx, dy = w * 0.28, -h * 0.3
    fx, fy = x0 + (x1 - x0) * 0.08, y0 + (y1 - y0) * 0.32
    front = ((fx, fy), (fx + w, fy), (fx + w, fy + h), (fx, fy + h))
    s.line([*front, front[0]])
    s.line([front[0], (fx + dx, fy + dy), (fx + w + dx, fy + dy), (fx + w, fy)])
    s.line([(fx + w + dx, fy + dy), (fx + w + dx, fy + h + dy), (fx + w, fy + h)])
    screen = (fx + w * 0.08, fy + h * 0.1, fx + w * 0.62, fy + h * 0.8)
    s.rect(screen)
    s.rect((screen[0] + 8 * s.unit, screen[1] + 8 * s.unit, screen[2] - 8 * s.unit, screen[3] - 8 * s.unit), s.thin)
    for k in range(rng.randint(2, 4)):
        s.circle((fx + w * 0.8, fy + h * (0.2 + 0.18 * k)), h * 0.06)
    for k in range(6):  # vents on the top face
        t = 0.3 + k * 0.07
        s.line([(fx + w * t + dx * 0.3, fy + dy * 0.3), (fx + w * t + dx * 0.75, fy + dy * 0.75)], s.thin)
    plug = (x1 - (x1 - x0) * 0.06, y1 - (y1 - y0) * 0.08)
    cable = bezier((fx + w + dx * 0.5, fy + h * 0.8 + dy * 0.5), (x1, fy + h * 0.4), plug, 24)
    s.line(cable)
    s.rect((plug[0] - 30 * s.unit, plug[1] - 18 * s.unit, plug[0] + 10 * s.unit, plug[1] + 18 * s.unit))
    s.name(n(), (fx, fy + h * 0.6))
    s.name(n(), (screen[0] + 10 * s.unit, screen[1] + 20 * s.unit))
    s.name(n(), (fx + w * 0.8, fy + h * 0.2))
    s.name(n(), (fx + w * 0.5 + dx * 0.5, fy + dy * 0.5))
    s.name(n(), cable[len(cable) // 2])
    s.name(n(), plug)


def graph(s: Sheet, area: Box, n: Numerals) -> None:
    """Axes with ticks and labels, two or three curves in different line styles."""
    rng = s.rng
    x0, y0, x1, y1 = area
    ox, oy = x0 + 70 * s.unit, y1 - 60 * s.unit
    s.arrow((ox, oy), (x1, oy))
    s.arrow((ox, oy), (ox, y0))
    xlabel, ylabel = rng.choice(_AXES)
    s.text(((ox + x1) / 2, oy + 42 * s.unit), xlabel, small=True)
    s.text((ox + 12 * s.unit, y0 - 4 * s.unit), ylabel, small=True, anchor="ls")
    for k in range(1, 6):
        tx = ox + (x1 - ox) * k / 6
        ty = oy - (oy - y0) * k / 6
        s.line([(tx, oy), (tx, oy + 10 * s.unit)], s.thin)
        s.line([(ox - 10 * s.unit, ty), (ox, ty)], s.thin)
    for curve in range(rng.randint(2, 3)):
        a, b, phase = rng.uniform(0.3, 0.8), rng.uniform(1.5, 4), rng.uniform(0, 3)
        pts = [(ox + (x1 - ox) * 0.95 * t, oy - (oy - y0) * 0.85 * (a * (1 - math.exp(-b * t)) + 0.12 * math.sin(
            6 * t + phase) * (1 - t) + 0.1 * curve)) for t in (i / 60 for i in range(61))]
        if curve == 1:
            for p, q in zip(pts[::2], pts[1::2], strict=False):
                s.line([p, q])
        else:
            s.line(pts, s.lw if curve == 0 else s.thin)
        s.name(n(), pts[int(45 + curve * 5)])


KINDS: tuple[Callable[[Sheet, Box, Numerals], None], ...] = (
    block_diagram, flow_chart, cross_section, mechanical, device, graph)
_KIND_WEIGHTS = (24, 16, 18, 18, 16, 8)


def draw_body(rng: random.Random, width: int, height: int) -> Image.Image:
    """One patent figure without its caption, `width` × `height` (1-bit), kind and parts chosen by `rng`."""
    sheet = Sheet(width, height, rng)
    margin_x = 150 * sheet.unit
    area = (margin_x, 40 * sheet.unit, width - margin_x, height - 30 * sheet.unit)
    kind = rng.choices(KINDS, _KIND_WEIGHTS)[0]
    kind(sheet, area, Numerals(rng, 1))
    sheet.place_leaders(area)
    return sheet.image


def draw_band(width: int, height: int, left: str = "", centre: str = "", right: str = "",
              big: bool = False) -> Image.Image:
    """A strip of text: a drawing sheet's header line, or the "FIG. n" caption (`big`, centred)."""
    image = Image.new("1", (width, height), WHITE)
    unit = width / 1000
    size = max(16, round(44 * unit)) if big else max(10, round(22 * unit))
    y = height / 2
    write(image, (60 * unit, y), left, size, "lm")
    write(image, (width / 2, y), centre, size, "mm")
    write(image, (width - 60 * unit, y), right, size, "rm")
    return image
