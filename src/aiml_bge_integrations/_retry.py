"""Retry policy, pure: what is retried, Retry-After parsing, backoff with jitter, deadlines.

The client owns the loop and the sleeping; every decision is made here.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._constants import (
    INITIAL_DELAY,
    MAX_DELAY,
    MAX_RETRY_AFTER,
    MAX_VALIDATION_RETRIES,
    RATE_LIMIT_INITIAL_DELAY,
    RATE_LIMIT_MAX_DELAY,
    RETRYABLE_STATUSES,
)
from .errors import APIError, APITimeoutError

if TYPE_CHECKING:
    from ._outcome import Outcome

__all__ = [
    "INITIAL_DELAY",
    "MAX_DELAY",
    "MAX_RETRY_AFTER",
    "MAX_VALIDATION_RETRIES",
    "RATE_LIMIT_INITIAL_DELAY",
    "RATE_LIMIT_MAX_DELAY",
    "RETRYABLE_STATUSES",
    "Deadline",
    "RetryPolicy",
    "Tries",
    "is_retryable_status",
    "next_delay",
    "parse_retry_after",
]


def is_retryable_status(status: int) -> bool:
    """True for statuses worth sending again."""
    return status in RETRYABLE_STATUSES or status >= 500


def _seconds(raw: str, scale: float = 1.0) -> float | None:
    try:
        value = float(raw) * scale
    except ValueError:
        return None
    # A negative, infinite or NaN wait is nonsense: the normal backoff applies instead.
    return value if math.isfinite(value) and value >= 0 else None


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, then ``Retry-After`` in seconds or as an HTTP date.

    Returns ``None`` when there is no usable header: absent, unreadable, negative, infinite,
    NaN, or a date that has passed (the normal backoff applies then).
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        from_ms = _seconds(raw_ms.strip(), 1 / 1000.0)
        if from_ms is not None:
            return from_ms
    raw = (headers.get("retry-after") or "").strip()
    if not raw:
        return None
    if raw[:1].isdigit() or raw[:1] in "+-.":
        return _seconds(raw)
    if raw.lower() in ("nan", "inf", "infinity"):
        return None
    try:
        when = email.utils.parsedate_to_datetime(raw)
        left = when.timestamp() - (time.time() if now is None else now)
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
    return left if left > 0 else None


@dataclass
class RetryPolicy:
    """How many retries and how long to wait before each."""

    max_retries: int = 6
    initial_delay: float = INITIAL_DELAY
    max_delay: float = MAX_DELAY
    rate_limit_initial_delay: float = RATE_LIMIT_INITIAL_DELAY
    rate_limit_max_delay: float = RATE_LIMIT_MAX_DELAY
    max_retry_after: float = MAX_RETRY_AFTER
    rng: Callable[[], float] = field(default=random.random, repr=False)
    sleep: Callable[[float], None] | None = field(default=None, repr=False)
    """The sync client's wait between attempts; None waits on the call's stop event (a call
    stopped meanwhile wakes at once). A test seam: record delays instead of sleeping."""
    asleep: Callable[[float], Awaitable[None]] | None = field(default=None, repr=False)
    """The async client's wait between attempts; None is ``asyncio.sleep``."""

    def delay(self, retry_number: int, *, status: int | None, retry_after: float | None) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based).

        A Retry-After from the server wins (capped at ``max_retry_after``). Otherwise exponential
        backoff with jitter: the delay is drawn from the upper three quarters of the step, so
        clients that failed together do not come back together.
        """
        if retry_after is not None:
            return float(min(retry_after, self.max_retry_after))
        if status == 429:
            base, cap = self.rate_limit_initial_delay, self.rate_limit_max_delay
        else:
            base, cap = self.initial_delay, self.max_delay
        step: float = min(cap, base * 2.0 ** (retry_number - 1))
        return step * (1.0 - 0.25 * self.rng())


class Deadline:
    """An overall time budget for one call, across retries. ``None`` seconds means no deadline."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = None if seconds is None else clock() + seconds

    def remaining(self) -> float | None:
        """Seconds left, never negative; ``None`` without a deadline."""
        if self._end is None:
            return None
        return max(0.0, self._end - self._clock())

    def expired(self) -> bool:
        """True once the budget is spent."""
        left = self.remaining()
        return left is not None and left <= 0.0

    def allows_wait(self, seconds: float) -> bool:
        """True if waiting ``seconds`` still leaves time for another attempt."""
        left = self.remaining()
        return left is None or seconds < left


@dataclass
class Tries:
    """What one request's attempts have used so far."""

    retries: int = 0
    validation_retries: int = 0
    after: int | None = None
    """Send the next attempt only after the gate has seen more successes than this."""


def next_delay(
    outcome: Outcome,
    tries: Tries,
    policy: RetryPolicy,
    deadline: Deadline,
    deadline_seconds: float | None,
) -> float:
    """Seconds to wait before the next attempt after a failed one; raises the error if there is none.

    Counts the retry in ``tries``. A refusal the concurrency limit explains waits for a slot
    (``tries.after``) rather than for a backoff; a wait the deadline cannot cover raises
    ``APITimeoutError``.
    """
    error = outcome.error
    assert error is not None
    if not outcome.retry:
        raise error
    if outcome.cause == "validation":
        if tries.validation_retries >= MAX_VALIDATION_RETRIES:
            raise error
        tries.validation_retries += 1
    else:
        if tries.retries >= policy.max_retries:
            if isinstance(error, APIError):
                error.message += f" (gave up after {tries.retries} retries)"
            raise error
        tries.retries += 1
    if outcome.absorbed is not None:
        tries.after, delay = outcome.absorbed, 0.0
    else:
        delay = policy.delay(
            tries.retries + tries.validation_retries,
            status=int(outcome.cause) if outcome.cause.isdigit() else None,
            retry_after=outcome.retry_after,
        )
    if not deadline.allows_wait(delay):
        raise APITimeoutError(
            f"deadline of {deadline_seconds}s for this call ran out; last error: {error}"
        ) from error
    return delay
