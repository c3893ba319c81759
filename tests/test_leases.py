"""The local half of lease fencing (core/leases.py): which claims a worker may still act on. Pure, no I/O."""

from __future__ import annotations

from downloader.core.leases import LeaseBook


def test_a_claim_is_held_for_three_quarters_of_its_lease_from_when_it_was_sent() -> None:
    book = LeaseBook()
    book.claimed(7, sent=100.0, lease=60.0)
    assert book.holds(7, 144.9) and not book.holds(7, 145.0)
    assert not book.holds(8, 100.0)  # never claimed


def test_a_renewal_extends_what_the_store_extended_and_drops_the_rest() -> None:
    book = LeaseBook()
    book.claimed(1, sent=0.0, lease=10.0)
    book.claimed(2, sent=0.0, lease=10.0)
    asked = book.live(5.0)
    book.renewed(asked, extended=[1], sent=5.0, lease=10.0)
    assert book.holds(1, 12.0) and not book.holds(2, 1.0)  # 2's keys were taken (or all settled)


def test_a_lapsed_claim_is_never_held_again_even_when_a_late_renewal_says_so() -> None:
    """A renewal sent while the claim was live but answered after it lapsed does not revive it: the worker
    may have dropped its work meanwhile, and its keys must come back to the pool."""
    book = LeaseBook()
    book.claimed(3, sent=0.0, lease=4.0)  # held until 3.0
    asked = book.live(2.0)  # the renewal leaves at 2.0 …
    assert not book.holds(3, 3.5)  # … the claim lapses while it waits: a download is dropped here
    book.renewed(asked, extended=[3], sent=2.0, lease=4.0)  # … and the store's answer comes at 3.6
    assert not book.holds(3, 3.6) and book.live(3.6) == []


def test_refused_results_drop_their_claim() -> None:
    book = LeaseBook()
    book.claimed(4, sent=0.0, lease=60.0)
    book.lost([4])
    assert not book.holds(4, 1.0)
