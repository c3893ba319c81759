"""Cost-aware pacing of the API stage: resolve no more URLs than the downloads can use before they expire.

Billing is per result, so a URL that expires before its download is paid for twice. A worker's
API stage may therefore only run so far ahead of its download stage. The download stage fetches
`download_concurrency / seconds_per_image` images a second (measured), and a fresh URL stays
usable for `window = life - margin` seconds after its answer (`life`: the shortest remaining life
among the last few answers; `margin`: the expiry margin, at most a quarter of the URL's lifetime).
So at most `rate × window` images may be waiting for a download, being downloaded or being asked
for. A batch takes the room that is left (in patents, by the measured share of patents that have
an image); when the room is small the batches shrink, and a smaller batch costs calls, not money.
With the usual hours-long URLs the room is far larger than a batch and nothing changes: ⌈n/100⌉.

A URL's life is what the CDN honours, not what the URL says (`core/urlclock.py`): the window
counts on the CDN's clock, on the lifetime its refusals showed, and on no more than downloads have
proven (twice the oldest age a URL was served at, a second at first), so URLs that claim an hour
but are refused after seconds cost a few URLs, not batches of them.

Before the first answer the URLs' life is unknown (unless URLs kept from an earlier run tell their
lifetime). A download stage that can take a whole batch in FIRST_ROUNDS rounds (the default
--download-concurrency 32) gets full batches at once; a narrow one (--download-concurrency 1)
gets a first batch of FIRST_ROUNDS images per download slot, and the next waits for its answer.

Pure: the pipeline reports what happens (`claimed`, `answered`, `started`, `finished`) and asks
`allowed()` before each claim. It is per worker: each worker paces its own download stage.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from downloader.core.expiry import MARGIN_FRACTION
from downloader.core.urlclock import UrlClock

FIRST_ROUNDS = 8  # images per download slot in a first batch of unknown URL life
PRIOR_SECONDS = 0.1  # assumed time per image (per download slot) until one is measured
_LIVES = 8  # answers whose remaining URL life is remembered (the shortest counts)
_SMOOTH = 0.3  # weight of a new measurement in the running averages


@dataclass
class Lookahead:
    """How many patents the API stage of one worker may claim now (0: wait for the downloads)."""

    batch_size: int
    download_concurrency: int
    seconds_per_image: float | None = None
    images_per_patent: float = 1.0
    images_per_answer: float | None = None  # URLs an API answer brings (running average; None before any)
    margin: float = 0.0
    asking: int = 0  # patents claimed for the API and not answered yet
    queued: int = 0  # images whose URL is known and whose download has not started
    active: int = 0  # downloads in progress
    # (remaining life as the URL states it, its age since signing) at each of the last answers
    lives: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=_LIVES))
    clock: UrlClock = field(default_factory=UrlClock)  # what the CDN has shown (shared with the fetcher)

    @property
    def window(self) -> float | None:
        """Seconds a fresh URL stays usable after its answer (None before any answer had one)."""
        if not self.lives:
            return None
        # The margin is relative to a URL's whole life, as the fetcher keeps it (`expiry.margin`).
        return min(life - min(self.margin, MARGIN_FRACTION * (life + age)) for life, age in self._believed())

    def _believed(self) -> list[tuple[float, float]]:
        return [(self.clock.believable(left, age), age) for left, age in self.lives]

    @property
    def capacity(self) -> float:
        """Images the download stage can start within one window."""
        window = self.window
        if window is None:
            return math.inf
        per_second = self.download_concurrency / (self.seconds_per_image or PRIOR_SECONDS)
        return max(0.0, window) * per_second

    def allowed(self) -> int:
        """Patents that may be claimed for the API now: a full batch, a smaller one, or 0 (wait)."""
        ahead = self.queued + self.active + self.asking * self.images_per_patent
        if not self.lives:
            first = self.download_concurrency * FIRST_ROUNDS
            if first >= self.batch_size:
                return self.batch_size
            return 0 if self.asking else first
        capacity = self.capacity
        room = capacity - ahead
        if room >= self.batch_size * self.images_per_patent:
            return self.batch_size
        if ahead == 0:
            return max(1, min(self.batch_size, math.floor(room / self.images_per_patent)))  # never stall
        if room < max(1.0, capacity / 2):
            return 0
        return max(1, min(self.batch_size, math.floor(room / self.images_per_patent)))

    def claimed(self, patents: int) -> None:
        """A batch of `patents` was claimed for the API."""
        self.asking += patents

    def dropped(self, patents: int) -> None:
        """Claimed patents that will not be asked (budget spent, stopping)."""
        self.asking = max(0, self.asking - patents)

    def reused(self, images: int) -> None:
        """Images with still-valid URLs were claimed from the store for download."""
        self.queued += images

    def lifetime_seen(self, lifetime: float, margin: float) -> None:
        """A URL kept from earlier (claimed for download) was signed for `lifetime` seconds: a fresh
        one will live about as long."""
        self.lives.append((lifetime, 0.0))
        self.margin = margin

    def answered(self, asked: int, images: int, life: float | None, margin: float | None, age: float = 0.0) -> None:
        """An API answer for `asked` patents gave `images` URLs; `life` is the shortest remaining
        life among them at the answer, as the URL states it, `age` how long ago that one was signed,
        `margin` the expiry margin of such a URL."""
        self.asking = max(0, self.asking - asked)
        self.queued += images
        if asked:
            self.images_per_patent = max(0.05, (1 - _SMOOTH) * self.images_per_patent + _SMOOTH * images / asked)
            per = self.images_per_answer
            self.images_per_answer = images if per is None else (1 - _SMOOTH) * per + _SMOOTH * images
        if life is not None and margin is not None:
            self.lives.append((life, age))
            self.margin = margin

    def started(self) -> None:
        """A download began (or was skipped: its URL was too close to expiry)."""
        self.queued = max(0, self.queued - 1)
        self.active += 1

    def finished(self, seconds: float | None) -> None:
        """A download ended; `seconds` is how long a successful one took (None: not a measure)."""
        self.active = max(0, self.active - 1)
        if seconds is not None:
            previous = self.seconds_per_image
            self.seconds_per_image = seconds if previous is None else (1 - _SMOOTH) * previous + _SMOOTH * seconds
