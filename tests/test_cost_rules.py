"""The pure rules behind issue 8, as tables with a clock the test sets: the expiry margin relative to a
URL's lifetime, the lookahead that paces the API stage, the gate's throttle state machine and credential
hold, the outage detector, the shared token record, and the per-kind problem lines."""

from __future__ import annotations

import io

import pytest

from downloader.cli.progress import LogLines
from downloader.core import credentials, gate
from downloader.core.errors import ApiError, FatalApiError, OutageError
from downloader.core.events import Notice, Problem
from downloader.core.expiry import margin, parse_url_signed_at, url_window
from downloader.core.lookahead import FIRST_ROUNDS, Lookahead
from downloader.core.outage import SPAN, STREAK, OutageDetector, origin, reason_of
from downloader.core.problems import Problems, kind_of
from downloader.core.sealing import TokenSeal

COS = ("https://cdn.test/a.png?sign=q-sign-algorithm%3Dsha1%26q-sign-time%3D1700000000%3B1700000002"
       "%26q-key-time%3D1700000000%3B1700000002%26q-signature%3Dab")
SIGV4 = "https://cdn.test/a.png?X-Amz-Date=20231114T221320Z&X-Amz-Expires=10800&X-Amz-Signature=s"
GCS = "https://storage.test/a.png?X-Goog-Date=20231114T221320Z&X-Goog-Expires=600&X-Goog-Signature=s"
SIGV2 = "https://cdn.test/a.png?Expires=1700003600&Signature=s"


# --- expiry margin ------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "signed", "expires"), [
    (COS, 1700000000.0, 1700000002.0),
    (SIGV4, 1700000000.0, 1700010800.0),
    (GCS, 1700000000.0, 1700000600.0),
    (SIGV2, 1600000000.0, 1700003600.0),  # no signing time in the URL: the answer's time stands in
    ("https://cdn.test/a.png", 1600000000.0, 1600000000.0 + 9 * 3600),  # nothing: 9 hours from the answer
])
def test_the_signing_time_is_read_from_the_url_else_the_answer(url, signed, expires):
    assert url_window(url, answered_at=1600000000.0) == (signed, expires)


def test_signing_time_is_none_when_the_form_has_none():
    assert parse_url_signed_at(SIGV2) is None and parse_url_signed_at(COS) == 1700000000.0


@pytest.mark.parametrize(("lifetime", "limit", "expected"), [
    (2.0, 120.0, 0.5),  # a 2 s URL keeps a quarter of its life, not 120 s: it can be used
    (9 * 3600.0, 120.0, 120.0),  # hours-long URLs keep the configured margin
    (400.0, 120.0, 100.0),
    (2.0, 0.3, 0.3),  # a smaller configured margin wins
])
def test_the_margin_is_never_more_than_a_quarter_of_the_lifetime(lifetime, limit, expected):
    assert margin(1000.0 + lifetime, 1000.0, 1000.0, limit) == expected


def test_without_a_signing_time_the_margin_is_relative_to_the_life_left():
    assert margin(1010.0, None, 1000.0, 120.0) == 2.5


# --- lookahead ----------------------------------------------------------------------------------


def test_hours_long_urls_never_shrink_a_batch():
    look = Lookahead(100, 32)
    assert look.allowed() == 100
    look.claimed(100)
    look.answered(100, 90, life=9 * 3600.0, margin=120.0)
    look.finished(0.05)
    look.claimed(300)
    assert look.allowed() == 100  # capacity is millions of images


def test_a_narrow_download_stage_starts_with_a_small_batch_and_waits_for_its_answer():
    look = Lookahead(100, 1)
    assert look.allowed() == FIRST_ROUNDS
    look.claimed(FIRST_ROUNDS)
    assert look.allowed() == 0  # URL life unknown until the first answer


def test_short_urls_shrink_batches_to_what_the_downloads_can_use_in_time():
    look = Lookahead(100, 1, seconds_per_image=0.05)  # 20 images/s
    look.clock.proven = 60.0  # downloads have shown URLs live a minute: their stated life is believed
    look.answered(0, 0, life=1.5, margin=0.5, age=0.5)  # a 2 s URL, usable for 1 s more: 20 images
    assert look.capacity == pytest.approx(20.0)
    assert look.allowed() == 20
    look.claimed(20)
    look.answered(20, 17, life=1.5, margin=0.5, age=0.5)
    assert look.allowed() == 0  # 17 queued: less than half the window is free
    for _ in range(10):
        look.started()
        look.finished(0.05)
    assert 0 < look.allowed() <= 20 - 7  # room for what was downloaded, in patents


def test_an_unusable_lifetime_still_asks_one_at_a_time_rather_than_stall():
    look = Lookahead(100, 1, seconds_per_image=1.0)
    look.answered(0, 0, life=0.1, margin=0.5, age=1.9)  # a 2 s URL with 0.1 s left
    assert look.capacity == 0 and look.allowed() == 1


# --- the gate: pacing and throttling ---------------------------------------------------------------


def _throttle(record, now, slot, retry_after=None, patience=60.0):
    return gate.throttled(record, now, run=1, rate=5.0, slot=slot, what="PatSnap error 67200002", code=67200002,
                          status=None, retry_after=retry_after, patience=patience)


def test_slots_are_spaced_and_never_reserved_far_ahead():
    record, first = gate.acquire(None, 100.0, run=1, rate=5.0)
    record, second = gate.acquire(record, 100.0, run=1, rate=5.0)
    assert first.slot == 100.0 and second.slot is None and 0 < second.wait <= 0.2  # ask again, nothing reserved
    record, third = gate.acquire(record, 100.19, run=1, rate=5.0)
    assert third.slot == pytest.approx(100.2)


def test_a_quota_that_never_lifts_gets_four_probes_then_a_verdict_within_a_minute():
    """Probes 1, 2, 8 and 30 s apart, each throttled: 4 requests after the first throttling answer, stop at 41 s."""
    record, grant = gate.acquire(None, 0.0, run=1, rate=5.0)
    record, verdict = _throttle(record, 0.0, grant.slot)
    now, probes = 0.0, []
    while verdict.fatal is None:
        record, waiting = gate.acquire(record, now, run=1, rate=5.0)
        assert waiting.slot is None  # nobody sends before the probe's time
        now += verdict.pause
        record, probe = gate.acquire(record, now, run=1, rate=5.0)
        assert probe.probe and probe.slot == now
        record, blocked = gate.acquire(record, now, run=1, rate=5.0)
        assert blocked.slot is None  # one probe at a time, fleet-wide
        probes.append(now)
        record, verdict = _throttle(record, now, probe.slot)
    assert probes == [1.0, 3.0, 11.0, 41.0] and now < 60
    assert "67200002" in verdict.fatal["message"] and "quota or daily limit" in verdict.fatal["message"]
    assert gate.acquire(record, now, run=1, rate=5.0)[1].fatal == verdict.fatal  # every worker stops
    assert gate.acquire(record, now, run=2, rate=5.0)[1].fatal is None  # a later run starts afresh


def test_a_shorter_patience_means_fewer_probes():
    record, grant = gate.acquire(None, 0.0, run=1, rate=5.0)
    record, verdict = _throttle(record, 0.0, grant.slot, patience=5.0)
    record, probe = gate.acquire(record, 1.0, run=1, rate=5.0)
    record, verdict = _throttle(record, 1.0, probe.slot, patience=5.0)
    record, probe = gate.acquire(record, 3.0, run=1, rate=5.0)
    record, verdict = _throttle(record, 3.0, probe.slot, patience=5.0)
    assert verdict.fatal is not None  # the next pause (8 s) would end after 5 s


def test_a_retry_after_longer_than_the_patience_is_a_spent_quota_at_once():
    record, grant = gate.acquire(None, 0.0, run=1, rate=5.0)
    record, verdict = _throttle(record, 0.0, grant.slot, retry_after=3600.0)
    assert verdict.fatal is not None and "asks to wait 3600 s" in verdict.fatal["message"]


def test_a_qps_limit_that_lifts_ends_the_episode_at_the_first_good_probe():
    record, grant = gate.acquire(None, 0.0, run=1, rate=5.0)
    record, verdict = _throttle(record, 0.0, grant.slot)
    record, probe = gate.acquire(record, 1.0, run=1, rate=5.0)
    record, _ = gate.succeeded(record, 1.1, run=1, rate=5.0, slot=probe.slot)
    state = gate.load(record, 1, 5.0)
    assert state.episode is None and state.interval == 0.4 and state.verdict is None
    record, after = gate.acquire(record, 1.5, run=1, rate=5.0)
    assert after.slot == 1.5 and not after.probe and after.report  # back to pacing, still recovering


def test_stragglers_neither_escalate_nor_end_an_episode():
    record, a = gate.acquire(None, 0.0, run=1, rate=1000.0)
    record, b = gate.acquire(record, 0.001, run=1, rate=1000.0)
    record, _ = _throttle(record, 0.01, a.slot)
    record, late = _throttle(record, 0.02, b.slot)
    record, _ = gate.succeeded(record, 0.03, run=1, rate=1000.0, slot=b.slot)
    state = gate.load(record, 1, 1000.0)
    assert late.ignored and state.episode is not None and state.episode.stage == 0


def test_a_probe_without_an_answer_is_offered_again():
    record, grant = gate.acquire(None, 0.0, run=1, rate=5.0)
    record, _ = _throttle(record, 0.0, grant.slot)
    record, probe = gate.acquire(record, 1.0, run=1, rate=5.0)
    record, _ = gate.unanswered(record, 1.5, run=1, rate=5.0, slot=probe.slot)
    record, again = gate.acquire(record, 1.5, run=1, rate=5.0)
    assert again.probe and gate.load(record, 1, 5.0).episode.stage == 0


# --- the gate: credential hold --------------------------------------------------------------------


def test_one_checker_holds_the_gate_and_its_verdict_stops_everyone():
    record, first = gate.hold(None, 0.0, run=1, rate=5.0, owner="w1/a")
    record, second = gate.hold(record, 0.1, run=1, rate=5.0, owner="w2/b")
    assert first is True and second is False
    record, others = gate.acquire(record, 0.2, run=1, rate=5.0, owner=None)
    record, mine = gate.acquire(record, 0.2, run=1, rate=5.0, owner="w1/a")
    assert others.slot is None and mine.slot is not None and mine.report
    record, _ = gate.conclude(record, 0.3, run=1, rate=5.0, verdict={"message": "refused", "hint": "h"})
    assert gate.checking(record, 0.4, run=1, rate=5.0, owner="w2/b")[1] == {"message": "refused", "hint": "h"}
    assert gate.acquire(record, 0.4, run=1, rate=5.0)[1].fatal is not None


def test_a_checkers_success_opens_the_gate_and_a_dead_checker_lapses():
    record, _ = gate.hold(None, 0.0, run=1, rate=5.0, owner="w1/a")
    record, mine = gate.acquire(record, 0.0, run=1, rate=5.0, owner="w1/a")
    record, _ = gate.succeeded(record, 0.1, run=1, rate=5.0, slot=mine.slot, owner="w1/a")
    assert gate.checking(record, 0.1, run=1, rate=5.0, owner="w2/b")[1] is False
    record, _ = gate.hold(record, 1.0, run=1, rate=5.0, owner="w3/c")
    assert gate.acquire(record, 1.0 + gate.HOLD_SECONDS + 1, run=1, rate=5.0)[1].slot is not None


# --- credentials ------------------------------------------------------------------------------------


SEAL = TokenSeal("https://api.test", "cid", "secret")


def test_the_fleet_shares_one_token_fetch():
    record, first = credentials.token_step(None, 0.0, me="w1", stale=None, waited_on=None, seal=SEAL)
    record, second = credentials.token_step(record, 0.1, me="w2", stale=None, waited_on=None, seal=SEAL)
    assert isinstance(first, credentials.Fetch) and isinstance(second, credentials.Wait)
    record, renew_in = credentials.token_fetched(record, 0.5, attempt=first.attempt, token="T1", lifetime=1799,
                                                 started=0.0, seal=SEAL)
    record, use = credentials.token_step(record, 0.6, me="w2", stale=None, waited_on=second.attempt, seal=SEAL)
    assert use == credentials.Use("T1", pytest.approx(1739 - 0.6)) and renew_in == pytest.approx(1738.5)
    record, again = credentials.token_step(record, 0.7, me="w2", stale="T1", waited_on=None, seal=SEAL)
    assert isinstance(again, credentials.Fetch)  # T1 was refused: one new fetch


def test_waiters_on_a_refused_fetch_stop_but_a_later_fetch_is_free_to_try():
    record, fetch = credentials.token_step(None, 0.0, me="w1", stale=None, waited_on=None, seal=SEAL)
    record, wait = credentials.token_step(record, 0.1, me="w2", stale=None, waited_on=None, seal=SEAL)
    refused = FatalApiError("the token endpoint refused the client credentials (HTTP 401)", hint="check", status=401)
    record, _ = credentials.token_failed(record, 0.2, attempt=fetch.attempt, error=refused)
    record, step = credentials.token_step(record, 0.3, me="w2", stale=None, waited_on=wait.attempt, seal=SEAL)
    assert isinstance(step, credentials.Refused) and step.status == 401
    assert isinstance(credentials.token_step(record, 99.0, me="w9", stale=None, waited_on=None, seal=SEAL)[1],
                      credentials.Fetch)


def test_the_shared_token_is_sealed_and_bound_to_the_credentials_that_fetched_it():
    """The record holds no token in clear; another secret, client id or API base finds another record and
    cannot open this one's blob; a blob moved to another record does not open either."""
    record, fetch = credentials.token_step(None, 0.0, me="w1", stale=None, waited_on=None, seal=SEAL)
    record, _ = credentials.token_fetched(record, 0.5, attempt=fetch.attempt, token="Tok-plain-123", lifetime=1799,
                                          started=0.0, seal=SEAL)
    assert "Tok-plain-123" not in repr(record) and "secret" not in repr(record) + SEAL.record + repr(SEAL)
    assert SEAL.open(record["sealed"]) == "Tok-plain-123" and record["sealed"] != SEAL.seal("Tok-plain-123")
    others = [TokenSeal("https://api.test", "cid", "WRONG"), TokenSeal("https://api.test", "cid2", "secret"),
              TokenSeal("https://other.test", "cid", "secret")]
    for other in others:
        assert other.record != SEAL.record and other.open(record["sealed"]) is None
        assert isinstance(credentials.token_step(record, 1.0, me="w2", stale=None, waited_on=None, seal=other)[1],
                          credentials.Fetch)  # never a Use of the token another secret fetched
    assert SEAL.open("not base64!") is None and SEAL.open(None) is None
    assert TokenSeal("https://api.test/", "cid", "secret").open(record["sealed"]) == "Tok-plain-123"


def test_a_legacy_plain_token_is_emptied():
    assert credentials.without_plain_token({"token": "T", "renew_at": 5.0}, 0.0) == ({"renew_at": 5.0}, None)
    assert credentials.legacy_record_name("https://api.test", "cid") != SEAL.record


@pytest.mark.parametrize(("static", "code", "status", "apikey_is_client_id", "suspect"), [
    ("--token", None, 401, False, "static token (--token"),
    ("--api-key", 67200003, None, False, "API key (--api-key"),
    (None, None, 401, False, "apikey (--api-key"),
    (None, 67200003, None, False, "client id and secret"),
    (None, None, 401, True, "client id and secret"),
])
def test_a_refusal_after_the_refresh_names_the_suspect_never_its_value(static, code, status, apikey_is_client_id,
                                                                       suspect):
    err = credentials.refused_error(ApiError("x", code=code, status=status), static=static,
                                    apikey_is_client_id=apikey_is_client_id)
    assert suspect in err.hint and (str(code) if code else f"HTTP {status}") in str(err)


# --- outages -----------------------------------------------------------------------------------------


def test_an_outage_needs_five_failures_in_a_row_and_thirty_seconds():
    detector = OutageDetector("the API")
    for i in range(STREAK):
        detector.failed(float(i), "API request failed: connection refused (ClientConnectorError)",
                        "http://127.0.0.1:9")
    assert detector.error(SPAN - 1) is None  # five in a row, but not for long enough
    error = detector.error(SPAN + 1)
    assert isinstance(error, OutageError)
    assert str(error) == "cannot reach the API at http://127.0.0.1:9: connection refused (5 tries over 31 s)"
    assert error.hint == "run the same command when it is back"
    detector.succeeded()
    assert detector.error(100.0) is None


def test_a_success_between_failures_is_no_outage():
    detector = OutageDetector("the CDN")
    for i in range(20):
        detector.failed(i * 5.0, "HTTP 502 from the CDN", "https://cdn.test")
        if i % 4 == 3:
            detector.succeeded()
    assert detector.error(100.0) is None


def test_an_http_outage_says_the_host_failed_every_call():
    detector = OutageDetector("the CDN")
    answers = [detector.failed(i * 7.0, "TransientDownloadError: HTTP 502 from the CDN", "https://cdn.test:8443")
               for i in range(6)]
    assert answers[:5] == [None] * 5  # the fifth in a row, but 28 s after the first: not yet
    assert str(answers[5]) == str(detector.error(35.0)) == (
        "the CDN at https://cdn.test:8443 failed every call: HTTP 502 (6 tries over 35 s)")


@pytest.mark.parametrize(("text", "reason"), [
    ("HTTP 503 from the API", "HTTP 503"),
    ("API request failed: DNS lookup failed (ClientConnectorDNSError)", "DNS lookup failed"),
    ("image download timed out", "timed out"),
    ("API request failed: TLS failed (ClientConnectorCertificateError)", "TLS failed"),
])
def test_reasons_are_a_few_words(text, reason):
    assert reason_of(text) == reason


def test_an_origin_never_shows_credentials_paths_or_signatures():
    assert origin("https://user:pw@api.test:8443/path?apikey=SECRET") == "https://api.test:8443"


# --- problem lines -------------------------------------------------------------------------------------


def test_problems_are_one_line_per_kind_counting_patents_not_events():
    problems = Problems()
    for i in range(37):
        problems.add(f"K{i}", "deferred", "TransientDownloadError: HTTP 502 from the CDN")
        problems.add(f"K{i}", "deferred", "TransientDownloadError: HTTP 502 from the CDN")  # deferred twice
    problems.add("X1", "failed", "BadImageError: image is 62914560 bytes, over the 52428800-byte cap")
    problems.add("X2", "failed", "BadImageError: image is 70000000 bytes, over the 52428800-byte cap")
    problems.add("K0", "deferred", "TransientDownloadError: HTTP 502 from the CDN")
    problems.settled("K0")
    assert problems.lines() == [
        "36 patents: HTTP 502 from the CDN (left pending; the next run retries them)",
        "2 patents: image is N bytes, over the N-byte cap (failed)"]


def test_a_kind_drops_the_class_and_the_library_note():
    assert kind_of("TransientApiError: API request failed: connection refused (ClientConnectorError)") == (
        "API request failed: connection refused")


@pytest.mark.parametrize("verbose", [False, True])
def test_each_patents_problem_reaches_stderr_only_with_verbose(verbose):
    out = io.StringIO()
    lines = LogLines(out, interval=3600, verbose=verbose)
    lines(Problem("US1B2", "deferred", "TransientDownloadError: HTTP 502 from the CDN"))
    lines(Notice("problems", "1 patent: HTTP 502 from the CDN (left pending; the next run retries them)"))
    assert ("US1B2: TransientDownloadError: HTTP 502 from the CDN" in out.getvalue()) is verbose
    assert "1 patent: HTTP 502 from the CDN" in out.getvalue()
