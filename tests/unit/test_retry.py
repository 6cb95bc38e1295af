"""Retry decisions, pure: what is retried, Retry-After parsing, backoff with jitter, deadlines."""

from __future__ import annotations

import email.utils

import pytest

from aiml_bge_integrations import RateLimiter
from aiml_bge_integrations._retry import (
    INITIAL_DELAY,
    MAX_DELAY,
    MAX_RETRY_AFTER,
    RATE_LIMIT_INITIAL_DELAY,
    RATE_LIMIT_MAX_DELAY,
    Deadline,
    RetryPolicy,
    is_retryable_status,
    parse_retry_after,
)
from aiml_bge_integrations.errors import ConfigurationError


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 520, 599])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413, 422])
def test_statuses_never_retried(status: int) -> None:
    assert not is_retryable_status(status)


# -- Retry-After ----------------------------------------------------------------------------


def test_retry_after_seconds() -> None:
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after": " 2.5 "}) == 2.5


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 12, usegmt=True)
    assert parse_retry_after({"retry-after": header}, now=now) == pytest.approx(12.0)


def test_retry_after_date_in_the_past_falls_back_to_backoff() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"retry-after": header}, now=now) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "-5"},
        {"retry-after": "nan"},
        {"retry-after": "NaN"},
        {"retry-after": "inf"},
        {"retry-after": "1e400"},
        {"retry-after-ms": "-1"},
        {"retry-after-ms": "nan"},
        {"retry-after": "Mon, 01 Jan 99999 00:00:00 GMT"},
    ],
)
def test_nonsensical_retry_after_falls_back_to_backoff(headers: dict[str, str]) -> None:
    # On the old code -5 and -1 gave 0 (a retry at once, no backoff) and nan gave nan.
    assert parse_retry_after(headers) is None


def test_retry_after_zero_still_means_now() -> None:
    assert parse_retry_after({"retry-after": "0"}) == 0.0


def test_retry_after_ms_wins() -> None:
    headers = {"retry-after-ms": "1500", "retry-after": "9"}
    assert parse_retry_after(headers) == 1.5


def test_bad_retry_after_ms_falls_back_to_retry_after() -> None:
    assert parse_retry_after({"retry-after-ms": "soon", "retry-after": "4"}) == 4.0


@pytest.mark.parametrize("headers", [{}, {"retry-after": ""}, {"retry-after": "whenever"}])
def test_no_usable_retry_after(headers: dict[str, str]) -> None:
    assert parse_retry_after(headers) is None


# -- backoff --------------------------------------------------------------------------------


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(rng=lambda: 0.5)
    assert policy.delay(1, status=429, retry_after=3.0) == 3.0
    assert policy.delay(1, status=503, retry_after=0.0) == 0.0
    assert policy.delay(1, status=429, retry_after=10_000.0) == MAX_RETRY_AFTER


def test_backoff_without_jitter_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(rng=lambda: 0.0)
    server = [policy.delay(n, status=503, retry_after=None) for n in range(1, 9)]
    expected = [min(MAX_DELAY, INITIAL_DELAY * 2 ** (n - 1)) for n in range(1, 9)]
    assert server == expected
    assert max(server) == MAX_DELAY
    limited = [policy.delay(n, status=429, retry_after=None) for n in range(1, 9)]
    assert limited == [
        min(RATE_LIMIT_MAX_DELAY, RATE_LIMIT_INITIAL_DELAY * 2 ** (n - 1)) for n in range(1, 9)
    ]


@pytest.mark.parametrize("status", [None, 500, 429])
@pytest.mark.parametrize("n", [1, 2, 3, 6, 12])
def test_jitter_stays_in_the_upper_three_quarters_of_the_step(status: int | None, n: int) -> None:
    low = RetryPolicy(rng=lambda: 0.999999).delay(n, status=status, retry_after=None)
    high = RetryPolicy(rng=lambda: 0.0).delay(n, status=status, retry_after=None)
    assert high * 0.75 <= low < high
    policy = RetryPolicy()  # the real random source
    for _ in range(200):
        assert high * 0.75 <= policy.delay(n, status=status, retry_after=None) <= high


def test_connection_errors_use_the_server_error_schedule() -> None:
    policy = RetryPolicy(rng=lambda: 0.0)
    assert policy.delay(1, status=None, retry_after=None) == INITIAL_DELAY


# -- deadlines ------------------------------------------------------------------------------


def test_deadline_counts_down_with_the_clock() -> None:
    clock = FakeClock()
    deadline = Deadline(10.0, clock)
    assert deadline.remaining() == 10.0
    assert deadline.allows_wait(9.0)
    clock.now += 4
    assert deadline.remaining() == 6.0
    assert not deadline.allows_wait(6.0)
    assert not deadline.expired()
    clock.now += 7
    assert deadline.remaining() == 0.0
    assert deadline.expired()
    assert not deadline.allows_wait(0.0)


def test_no_deadline_never_expires() -> None:
    clock = FakeClock()
    deadline = Deadline(None, clock)
    clock.now += 1e9
    assert deadline.remaining() is None
    assert not deadline.expired()
    assert deadline.allows_wait(1e9)


# -- client-side rate limiter ---------------------------------------------------------------


def test_rate_limiter_spaces_requests_evenly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=120, clock=clock)
    waits = [limiter.reserve() for _ in range(5)]
    assert waits == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_rate_limiter_catches_up_after_idle_time_without_bursting() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, clock=clock)
    assert limiter.reserve() == 0.0
    clock.now += 100  # idle: no credit is banked for the gap
    assert limiter.reserve() == 0.0
    assert limiter.reserve() == 1.0


def test_rate_limiter_paces_tokens() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tokens_per_minute=6000, clock=clock)
    assert limiter.counts_tokens
    assert limiter.reserve(1000) == 0.0
    assert limiter.reserve(500) == pytest.approx(10.0)  # 1000 tokens at 100/s
    clock.now += 10
    assert limiter.reserve(10) == pytest.approx(5.0)  # 500 tokens at 100/s


def test_rate_limiter_honours_the_stricter_of_both_limits() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, tokens_per_minute=60_000, clock=clock)
    assert limiter.reserve(3000) == 0.0
    assert limiter.reserve(10) == pytest.approx(3.0)  # tokens bind (3 s), not requests (1 s)
    assert limiter.reserve(10) == pytest.approx(4.0)  # now requests bind


@pytest.mark.parametrize("kwargs", [{"requests_per_minute": 0}, {"tokens_per_minute": -5}])
def test_rate_limiter_rejects_non_positive_limits(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        RateLimiter(**kwargs)
