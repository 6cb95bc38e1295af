"""Retry policy, pure: what is retried, Retry-After parsing, backoff with jitter, deadlines.

The client owns the loop and the sleeping; every decision is made here.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

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
    "parse_retry_after",
]

INITIAL_DELAY = 0.5
"""Seconds before the first retry of a server error, connection error or timeout."""
MAX_DELAY = 8.0
"""Cap on one backoff delay for those."""
RATE_LIMIT_INITIAL_DELAY = 1.0
"""Seconds before the first retry of a 429 that carries no Retry-After."""
RATE_LIMIT_MAX_DELAY = 30.0
"""Cap for 429 backoff: six retries then span about a minute, the window of per-minute limits."""
MAX_RETRY_AFTER = 60.0
"""The longest Retry-After honoured; a longer one is capped to this."""
MAX_VALIDATION_RETRIES = 2
"""How often a 200 reply that fails validation is asked for again before ResponseValidationError."""

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
"""Statuses retried. Any other 5xx is retried too; 400/401/403/404/413/422 never are."""


def is_retryable_status(status: int) -> bool:
    """True for statuses worth sending again."""
    return status in RETRYABLE_STATUSES or status >= 500


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, then ``Retry-After`` in seconds or as an HTTP date.

    Returns ``None`` when there is no usable header; negative waits become 0.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


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
