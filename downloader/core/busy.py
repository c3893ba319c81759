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

Busy is not enough: a helper shares the account's API rate, which caps the job at `--rate` × the
images an API call brings. When one process already runs near that cap, a helper only adds its
start-up (20,000 images on tmpfs at `--rate 50`: one process 3,817 images/s, the default with a
helper 3,644, two from the start 3,704; at `--rate 200` the helper paid: 4,195 against 3,799). So a
busy reading starts a helper only when it pays (`helper_pays`): by the estimate, the work left ends at
least PAYS_SECONDS sooner with one more process, each as fast as this one, up to that cap.
"""

from __future__ import annotations

from dataclasses import dataclass

BUSY_SHARE = 0.75  # of the wall time the loop thread ran or waited to run
BUSY_SECONDS = 0.5  # two readings in a row
SAMPLE_SECONDS = 0.25
SETTLE_SECONDS = 5.0
# A helper is at work about half a second after it is started, and the estimate has it as fast as this process
# at once: it must promise more than that to pay.
PAYS_SECONDS = 1.0


@dataclass(slots=True)
class BusyWatch:
    """Feed it readings of the loop thread's demand; it says when the loop was busy long enough for a helper."""

    busy_since: tuple[float, int] | None = None  # (wall clock, images done) where the busy stretch began
    quiet_until: float = 0.0
    last: tuple[float, float, int] | None = None  # (wall clock, cumulative demand, images done) of the last reading
    rate: float = 0.0  # images/s of this process over the last busy stretch (when `sample` said True)

    def sample(self, wall: float, demand: float, done: int = 0) -> bool:
        """A reading at `wall` of the loop thread's cumulative demand (CPU seconds + seconds runnable
        but waiting for a CPU) and of the images this process has done. True: the loop was busy for
        BUSY_SECONDS (`rate` says how fast it went); judge whether a helper pays, then `settle()`."""
        previous, self.last = self.last, (wall, demand, done)
        if previous is None or wall <= previous[0]:
            return False
        share = (demand - previous[1]) / (wall - previous[0])
        if wall < self.quiet_until or share < BUSY_SHARE:
            self.busy_since = None
            return False
        if self.busy_since is None:
            self.busy_since = (previous[0], previous[2]) if previous[0] >= self.quiet_until else (wall, done)
        began, done_then = self.busy_since
        if wall - began < BUSY_SECONDS:
            return False
        self.rate = (done - done_then) / (wall - began)
        return True

    def settle(self, wall: float) -> None:
        """A helper was started, or would not pay: judge again after SETTLE_SECONDS of fresh readings."""
        self.busy_since, self.quiet_until = None, wall + SETTLE_SECONDS


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
