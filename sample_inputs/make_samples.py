"""Regenerate the sample inputs (deterministic): `python sample_inputs/make_samples.py`.

patents.csv: ~1,000 publication numbers (CN, US, EP, JP, KR, WO with kind codes, ~5% US without),
a few duplicates (some differing only in case or spaces), blank lines and exactly one bad row.
patent_ids.csv: 20 PatSnap patent ids, starting with the API spec's samples.
"""

from __future__ import annotations

import csv
import random
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC_NUMBERS = ["CN104169186A", "CN303649457S", "CN3307359D", "US11205304B2"]
SPEC_IDS = ["077f4978-092c-4522-bc98-e8257a5c99f9", "6e5c550d-28d6-4cf1-a265-b5488996b641",
            "52ee4f52-3edc-4e41-854e-c76dd8b7d14f", "718ead9c-4f3c-4674-8f5a-24e126827269"]
ADJECTIVES = ["Adjustable", "Foldable", "Wireless", "Modular", "Portable", "Self-cleaning", "Low-power",
              "Water-cooled", "Compact", "Smart", "Reinforced", "Transparent"]
NOUNS = ["lamp", "battery pack", "charging dock", "bottle cap", "gear assembly", "display panel",
         "vacuum cleaner", "sensor housing", "bicycle frame", "heat exchanger", "door hinge", "drone arm"]
SUFFIXES = ["", " and method for manufacturing the same", ", system and method", " for vehicles",
            " with detachable cover", ", device and storage medium"]


def number(rng: random.Random) -> str:
    """One realistic publication number with its kind code."""
    office = rng.choices(["CN", "US", "EP", "JP", "KR", "WO"], weights=[35, 25, 10, 12, 8, 10])[0]
    r = rng.randint
    return {
        "CN": lambda: rng.choice([f"CN1{r(0, 17):02d}{r(0, 999999):06d}{rng.choice('AB')}",
                                  f"CN2{r(0, 17):02d}{r(0, 999999):06d}U", f"CN30{r(0, 9999999):07d}S",
                                  f"CN3{r(0, 999999):06d}D"]),
        "US": lambda: rng.choice([f"US{r(10000000, 11999999)}{rng.choice(['B1', 'B2'])}",
                                  f"US{r(2015, 2023)}0{r(0, 999999):06d}A1", f"USD{r(800000, 999999)}S"]),
        "EP": lambda: f"EP{r(2500000, 4199999)}{rng.choice(['A1', 'A2', 'B1'])}",
        "JP": lambda: rng.choice([f"JP{r(2015, 2022)}{r(0, 250000):06d}A", f"JP{r(6000000, 7399999)}B2"]),
        "KR": lambda: rng.choice([f"KR10{r(1000000, 2699999)}B1", f"KR{r(2015, 2023)}{r(0, 199999):07d}A"]),
        "WO": lambda: f"WO{r(2015, 2023)}{r(0, 299999):06d}A1",
    }[office]()


def title(rng: random.Random) -> str:
    """A plausible invention title (some with commas, so the CSV quotes them)."""
    return f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}{rng.choice(SUFFIXES)}"


def patents(rng: random.Random, count: int = 1000) -> list[list[str]]:
    """Rows of (number, title): unique numbers, ~5% US without kind code, then the messes."""
    numbers = list(SPEC_NUMBERS)
    while len(numbers) < count:
        candidate = f"US{rng.randint(9000000, 11999999)}" if rng.random() < 0.05 else number(rng)
        if candidate not in numbers:
            numbers.append(candidate)
    rows = [[n, title(rng)] for n in numbers]
    dupes = [[n, t] for n, t in rng.sample(rows[4:], 3)]
    dupes += [[n.lower(), t] for n, t in rng.sample(rows[4:], 2)] + [[f"  {rows[3][0]} ", rows[3][1]]]
    for row in [*dupes, ["not-a-patent", "Row with a typo in the number column"], [], [], []]:
        rows.insert(rng.randint(5, len(rows)), row)
    return rows


def write(name: str, header: list[str], rows: list[list[str]]) -> None:
    with open(HERE / name, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def main() -> None:
    """Write both sample files next to this script."""
    rng = random.Random(20240611)
    write("patents.csv", ["patent_number", "title"], patents(rng))
    ids = SPEC_IDS + [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(16)]
    write("patent_ids.csv", ["patent_id"], [[i] for i in ids])


if __name__ == "__main__":
    main()
