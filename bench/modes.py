"""The image modes: where files go, the latency added, downloads in flight; the API rates."""

from __future__ import annotations

from dataclasses import dataclass

API_RATE = 50.0  # requests/s in the image and meta modes: a bound of 5,000 patents/s
SCALE_RATE = 1000.0
IMAGE_MODES = ("disk", "tmpfs", "lat30", "lat200")


@dataclass(frozen=True)
class Mode:
    """An image mode: where files are written, the added latency, how many downloads in flight."""

    name: str
    latency_ms: int = 0
    concurrency: int = 64
    tmpfs: bool = False
    api_rate: float = API_RATE  # the tool's --rate

    @property
    def bound(self) -> float:
        """images/s that `concurrency` requests in flight allow at this latency."""
        return self.concurrency / (self.latency_ms / 1000) if self.latency_ms else float("inf")


MODES = {
    "disk": Mode("disk"),
    "tmpfs": Mode("tmpfs", tmpfs=True),
    # tmpfs under latency too: this VM's disk at times costs ~1 ms of CPU per file created, which would
    # hide what the latency modes measure (does the client keep its downloads in flight?).
    "lat30": Mode("lat30", latency_ms=30, tmpfs=True),
    "lat200": Mode("lat200", latency_ms=200, concurrency=256, tmpfs=True),
    # tmpfs with the API rate far off (200 calls/s: 20,000 patents/s): at --rate 50 one process of the tool comes
    # near the 5,000 patents/s the rate allows on this machine, and a second one has little room to add.
    "tmpfs200": Mode("tmpfs200", tmpfs=True, api_rate=200.0),
}
