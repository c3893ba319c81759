"""Telling a host that moved from one that is down, when a signed URL's host refuses connections; pure.

A URL paid for earlier can point at a server that is gone for good while the API answers with
URLs elsewhere: the demo's simulator listened on another port in the run that was stopped, and a
CDN may change hosts between two nightly runs. Waiting for such a URL until it expires stalls the
run and then stops it as an outage; asking the API again costs one more charged result (counted
in `recharged`) and continues at once. But a host that refuses because it is *down* would turn
every key into a recharge, and the fresh URLs would point at the same dead host.

A host that served a download in this run and then refuses is down (restarted, overloaded), not
moved: no key is asked again for it. Otherwise the first refusal by a host sends that one key back
to the API as a probe, and the fresh URL the API gives for it decides:
- a different host: the old one moved; every later refusal there is asked again at once;
- the same host: it is down; its refusals are transport failures like any other (deferred,
  and the run stops as an outage when they persist).
Until the probe is answered, the host's other refusals wait a moment (deferred for a second, not
retried: they keep their URL and are decided once the probe's answer is in). A probe that brings
no URL back within `patience` seconds (the patent had no image, or its answer is slow) is followed
by another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

K = TypeVar("K")
Verdict = Literal["ask", "wait", "down"]  # ask the API again now · wait for the probe · a transport failure


@dataclass
class MovedHosts(Generic[K]):
    """What is known of the hosts that refused a connection in this run (`K`: the key type)."""

    patience: float
    moved: set[str] = field(default_factory=set)
    down: set[str] = field(default_factory=set)  # hosts that served this run, or that the API still names
    _probed_at: dict[str, float] = field(default_factory=dict)  # host → when its last probe was sent
    _probes: dict[K, str] = field(default_factory=dict)  # key sent back as a probe → the host it probes

    def refused(self, host: str, key: K, now: float) -> Verdict:
        """`host` refused the connection for `key`'s URL: what to do with `key`."""
        if host in self.moved:
            return "ask"
        if host in self.down:
            return "down"
        sent = self._probed_at.get(host)
        if sent is not None and now - sent < self.patience:
            return "wait"
        self._probed_at[host] = now
        self._probes[key] = host
        return "ask"

    def served(self, host: str) -> None:
        """A download from `host` succeeded: should it refuse later, it is down, not moved."""
        if host not in self.moved:
            self.down.add(host)

    @property
    def probing(self) -> bool:
        """True while a probe is out (only then need `arrived` hear of downloads)."""
        return bool(self._probes)

    def arrived(self, host: str, key: K) -> None:
        """A download of `key` is about to start at `host`: if `key` was a probe, its fresh URL decides."""
        probed = self._probes.pop(key, None)
        if probed is None:
            return
        (self.down if host == probed else self.moved).add(probed)
        self._probed_at.pop(probed, None)
        for other in [k for k, h in self._probes.items() if h == probed]:
            del self._probes[other]
