"""When another worker process helps: the first one's event loop wants a whole core. Pure.

A helper process costs start-up time and CPU; it only pays when the first process cannot keep up,
which shows as its event-loop thread wanting the CPU all the time: running, or runnable and waiting
for a core (Linux counts both, per thread, in /proc/thread-self/schedstat). Latency-bound work
leaves the loop waiting for the network most of the time, and a helper would only add its
start-up and its share of the same downloads. So the first process starts alone and adds a helper
when its loop's demand stayed at BUSY_SHARE or more for BUSY_SECONDS; then it gives the helper
SETTLE_SECONDS to take its share before it judges again.

Measured on 2 cores (20,000 images from a local nginx): the loop's demand was 0.82–0.93 writing to tmpfs
(readings 0.5 s apart; 0.88–0.90 at 0.25 s), where a second process gave 1.15–1.20× the images/s, and
0.59–0.65 with 30 ms of latency (at most 0.67 at 0.25 s), where it gave 0.92× (it only split the same
downloads). BUSY_SHARE sits between the two. A whole run of 20,000 images takes 6–11 s, so the helper
has to come within a second to pay: with readings 0.25 s apart it came 0.5–0.75 s into a run on tmpfs,
and a run at `--rate 200` went from 3,510 (readings 0.5 s apart, 1 s busy) to 3,785 images/s (two
processes from the start: 3,935).
"""

from __future__ import annotations

from dataclasses import dataclass

BUSY_SHARE = 0.75  # of the wall time the loop thread ran or waited to run
BUSY_SECONDS = 0.5  # two readings in a row
SAMPLE_SECONDS = 0.25
SETTLE_SECONDS = 5.0


@dataclass(slots=True)
class BusyWatch:
    """Feed it readings of the loop thread's demand; it says when to start a helper."""

    busy_since: float | None = None
    quiet_until: float = 0.0
    last: tuple[float, float] | None = None  # (wall clock, cumulative demand) of the previous reading

    def sample(self, wall: float, demand: float) -> bool:
        """A reading at `wall` of the loop thread's cumulative demand (CPU seconds + seconds runnable
        but waiting for a CPU). True: the loop was busy for BUSY_SECONDS, start a helper now."""
        previous, self.last = self.last, (wall, demand)
        if previous is None or wall <= previous[0]:
            return False
        share = (demand - previous[1]) / (wall - previous[0])
        if wall < self.quiet_until or share < BUSY_SHARE:
            self.busy_since = None
            return False
        if self.busy_since is None:
            self.busy_since = max(previous[0], self.quiet_until)
        if wall - self.busy_since < BUSY_SECONDS:
            return False
        self.busy_since, self.quiet_until = None, wall + SETTLE_SECONDS
        return True
