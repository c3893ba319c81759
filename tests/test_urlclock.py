"""The rules that learn from the CDN (core/urlclock.py) and the pacing that uses them (core/lookahead.py),
as tables with times the test sets: the CDN's clock wins over the URL's and over ours."""

from __future__ import annotations

import pytest

from downloader.core.lookahead import Lookahead
from downloader.core.urlclock import GROWTH, SKEW_MIN, TRUST_START, UrlClock, cdn_time

T = 1_800_000_000.0  # a URL signed at T that says it lives an hour
HOUR = T + 3600
S3_EXPIRED = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Request has '
              b"expired</Message><X-Amz-Expires>3600</X-Amz-Expires><Expires>2027-01-15T08:00:00Z</Expires>"
              b"<ServerTime>2027-01-15T08:00:09Z</ServerTime><RequestId>R</RequestId><HostId>H</HostId></Error>")


def test_the_cdn_time_is_s3s_servertime_else_the_date_header_mid_second():
    server = cdn_time(S3_EXPIRED, "Fri, 15 Jan 2027 09:00:00 GMT")  # the body's ServerTime wins
    assert server == pytest.approx(1_800_000_009.5)  # 2027-01-15T08:00:09Z, the middle of that second
    assert cdn_time(b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                    "Fri, 15 Jan 2027 08:00:09 GMT") == server  # COS: no time in the body, the Date header
    assert cdn_time(b"", None) is None and cdn_time(None, "not a date") is None
    assert cdn_time(b"<ServerTime>garbage</ServerTime>", None) is None


@pytest.mark.parametrize(("server_ahead", "skew"), [
    (3598.0, 3598.0),  # the CDN's clock is an hour ahead: learned
    (-120.0, -120.0),  # behind: learned too
    (SKEW_MIN / 2, 0.0),  # within the whole second ServerTime and Date carry: noise, no skew
])
def test_a_refusal_teaches_the_skew(server_ahead, skew):
    clock = UrlClock()
    now = T + 2
    clock.refused(signed_at=T, stated=HOUR, now=now, server_time=now + server_ahead)
    assert clock.skew == pytest.approx(skew) and clock.refusals == 1


def test_a_skewed_cdn_moves_every_expiry_and_is_no_short_lifetime():
    """Refused 2 s after signing, by a CDN whose clock says the hour has passed: a skew, not a short life."""
    clock = UrlClock()
    clock.refused(signed_at=T, stated=HOUR, now=T + 2, server_time=HOUR + 0.5)
    assert clock.lifetime is None and clock.skew == pytest.approx(3598.5)
    assert clock.expires_at(T + 10, HOUR + 10) == pytest.approx(T + 10 + 1.5)  # ours: 1.5 s after its signing
    assert clock.believable(3600.0) <= 3600 - 3598.5


def test_a_refusal_before_the_urls_own_end_on_the_cdns_clock_teaches_the_lifetime():
    """The smallest age at such a refusal is what the CDN honours; later URLs end there, whatever they say."""
    clock = UrlClock()
    clock.refused(signed_at=T, stated=HOUR, now=T + 7, server_time=None)
    clock.refused(signed_at=T + 10, stated=HOUR + 10, now=T + 12.5, server_time=None)
    clock.refused(signed_at=T + 20, stated=HOUR + 20, now=T + 29, server_time=None)  # waited longer: teaches nothing
    assert clock.lifetime == pytest.approx(2.5)
    assert clock.expires_at(T + 100, HOUR + 100) == pytest.approx(T + 102.5)
    assert clock.expires_at(None, HOUR) == HOUR  # no signing time: only the skew could move it


def test_an_honest_expiry_teaches_no_lifetime():
    clock = UrlClock()
    clock.refused(signed_at=T, stated=T + 2, now=T + 2.4, server_time=T + 2.5)
    assert clock.lifetime is None and clock.skew == 0.0


def test_an_image_served_older_than_the_learned_lifetime_lifts_it():
    """A key revoked once and replaced: URLs of the new key live longer than the refusal showed."""
    clock = UrlClock()
    clock.refused(signed_at=T, stated=HOUR, now=T + 3, server_time=None)
    clock.served(signed_at=T + 100, started=T + 140, now=T + 140.1, server_time=None)
    assert clock.lifetime == pytest.approx(40.0) and clock.proven == pytest.approx(40.0)


def test_served_images_prove_life_and_their_date_header_the_skew():
    clock = UrlClock()
    clock.served(signed_at=T, started=T + 0.8, now=T + 0.9, server_time=T + 0.9 + 3598)
    assert clock.skew == pytest.approx(3598.0) and clock.proven == pytest.approx(0.8)
    assert clock.wants_date(T) and not clock.wants_date(T + 1) and clock.wants_date(T + 10)


@pytest.mark.parametrize(("proven", "age", "believed"), [
    (0.0, 0.0, TRUST_START),  # nothing proven yet: a second
    (0.0, 0.5, TRUST_START - 0.5),
    (30.0, 0.0, GROWTH * 30.0),  # twice what downloads proved
    (5000.0, 0.0, 3600.0),  # never more than the URL says
])
def test_pacing_believes_a_stated_life_only_as_far_as_downloads_proved(proven, age, believed):
    clock = UrlClock(proven=proven)
    assert clock.believable(3600.0, age) == pytest.approx(believed)


def test_a_refusal_shrinks_the_lookahead_at_once_not_at_the_next_answer():
    """20 images/s, URLs that say an hour: after downloads proved a minute, a full batch; one refusal at
    2 s and the same lookahead allows only what can be fetched in 1.5 s."""
    clock = UrlClock(proven=60.0)
    look = Lookahead(100, 1, seconds_per_image=0.05, clock=clock)
    look.answered(0, 0, life=3600.0, margin=120.0, age=0.0)
    assert look.allowed() == 100
    clock.refused(signed_at=T, stated=HOUR, now=T + 2, server_time=T + 2)
    assert look.window == pytest.approx(1.5) and look.allowed() == 30


def test_a_skew_learned_from_a_date_header_shrinks_the_lookahead_too():
    clock = UrlClock(proven=60.0)
    look = Lookahead(100, 1, seconds_per_image=0.05, clock=clock)
    look.answered(0, 0, life=3600.0, margin=120.0, age=0.0)
    clock.served(signed_at=T, started=T + 0.1, now=T + 0.2, server_time=T + 0.2 + 3598)
    assert look.window == pytest.approx(1.5) and look.allowed() == 30
