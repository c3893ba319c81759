"""When another worker process helps: the first one's event loop wants a whole core. Pure.

A helper process costs start-up time and CPU; it only pays when the first process cannot keep up,
which shows as its event-loop thread wanting the CPU all the time: running, or runnable and waiting
for a core (Linux counts both, per thread, in /proc/thread-self/schedstat). Latency-bound work
leaves the loop waiting for the network most of the time, and a helper would only add its
start-up and its share of the same downloads. So the first process starts alone and adds a helper
when its loop's demand over the last BUSY_SECONDS (read every SAMPLE_SECONDS, the first reading as the
run starts) was BUSY_SHARE or more; then it gives the helper SETTLE_SECONDS to take its share before it
judges again.

Measured on 2 cores (20,000 images from a local nginx, readings 0.1 s apart): the loop's demand was
0.85–0.97 writing to tmpfs, where a second process gave up to 1.15–1.20× the images/s, and 0.45–0.8
with 30 ms of latency, where it gave 0.92× (it only split the same downloads); over 0.4 s the two
stay apart (tmpfs ≥ 0.85, 30 ms ≤ 0.7), and BUSY_SHARE sits between. A run of 20,000 images takes
4–11 s, so the helper has to come early to pay: two readings 0.25 s apart, the first 0.25 s in, had it
start 1.1–1.3 s into a run at `--rate 200`; this window has it 0.76–0.83 s in (what that gains in images/s
was below the noise of 3- and 5-round A/Bs, bench/ab.py).

Busy is not enough: a helper shares the account's API rate, which caps the job at `--rate` × the
images an API call brings. When one process already runs near that cap, a helper only adds its
start-up (20,000 images on tmpfs at `--rate 50`: one process 3,817 images/s, the default with a
helper 3,644, two from the start 3,704; at `--rate 200` the helper paid: 4,195 against 3,799). So a
busy reading starts a helper only when it pays (`helper_pays`): by the estimate, the work left ends at
least PAYS_SECONDS sooner with one more process, each as fast as this one, up to that cap.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

BUSY_SHARE = 0.8  # of the wall time the loop thread ran or waited to run, over BUSY_SECONDS
BUSY_SECONDS = 0.4
SAMPLE_SECONDS = 0.1
SETTLE_SECONDS = 5.0
# A helper is at work about half a second after it is started, and the estimate has it as fast as this process
# at once: it must promise more than that to pay.
PAYS_SECONDS = 1.0
_EPSILON = 1e-9  # readings SAMPLE_SECONDS apart span BUSY_SECONDS give or take float rounding


@dataclass(slots=True)
class BusyWatch:
    """Feed it readings of the loop thread's demand; it says when the loop was busy long enough for a helper."""

    readings: deque[tuple[float, float, int]] = field(default_factory=deque)  # (wall, demand, images done)
    quiet_until: float = 0.0
    rate: float = 0.0  # images/s of this process over the busy window (when `sample` said True)

    def sample(self, wall: float, demand: float, done: int = 0) -> bool:
        """A reading at `wall` of the loop thread's cumulative demand (CPU seconds + seconds runnable but
        waiting for a CPU) and of the images this process has done. True: over the last BUSY_SECONDS the loop
        was busy (`rate` says how fast it went); judge whether a helper pays, then `settle()`."""
        if wall < self.quiet_until:
            return False
        self.readings.append((wall, demand, done))
        while len(self.readings) > 2 and wall - self.readings[1][0] >= BUSY_SECONDS - _EPSILON:
            self.readings.popleft()  # the oldest reading that still spans the window is the window's start
        began, demand_then, done_then = self.readings[0]
        span = wall - began
        if span < BUSY_SECONDS - _EPSILON or (demand - demand_then) / span < BUSY_SHARE:
            return False
        self.rate = (done - done_then) / span
        return True

    def settle(self, wall: float) -> None:
        """A helper was started, or would not pay: judge again on fresh readings after SETTLE_SECONDS."""
        self.readings.clear()
        self.quiet_until = wall + SETTLE_SECONDS


def helper_pays(rate: float, processes: int, ceiling: float | None, images_left: float) -> bool:
    """Whether one more process would end the work left at least PAYS_SECONDS sooner. `rate`: images/s of
    this process (each of the `processes` is taken to be as fast); `ceiling`: images/s the account's API rate
    allows (None: not known yet, and busy alone decides); `images_left`: images still to download."""
    if ceiling is None:
        return True
    if rate <= 0:
        return False
    now = min(rate * processes, ceiling)
    more = min(rate * (processes + 1), ceiling)
    return more > now and images_left / now - images_left / more >= PAYS_SECONDS
