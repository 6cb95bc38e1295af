"""What a client has sent and what it cost (``Usage``), and its client-side pace (``RateLimiter``).

No I/O: counters behind a lock, and a pace that says how long to wait without waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .errors import ConfigurationError

__all__ = ["RateLimiter", "Usage", "UsageCounter"]


@dataclass
class Usage:
    """Running totals of what a client sent and what the server said it cost."""

    requests: int = 0
    """HTTP requests sent, retries included."""
    retries: int = 0
    """Requests that were repeats of a failed one."""
    retries_by_cause: dict[str, int] = field(default_factory=dict)
    """Retries per cause: a status code ("429", "503"), "connection", "decoding", "timeout" or "validation"."""
    splits: int = 0
    """Requests the server refused as too large (their texts were cut and sent again)."""
    texts: int = 0
    """Vectors returned to the caller."""
    prompt_tokens: int = 0
    """Tokens billed, from ``usage.prompt_tokens``."""
    total_tokens: int = 0
    """From ``usage.total_tokens``."""
    credits: float = 0.0
    """AI/ML API credits, from ``meta.usage.credits_used`` or the ``x-aimlapi-credits-used`` header."""
    usd: float = 0.0
    """US dollars, from the ``x-aimlapi-usd-spent`` header when the server sends it."""
    concurrency_limit: int = 0
    """The client's limit of requests in flight now (the level it found the server sustains),
    not a count of requests seen in flight."""
    peak_concurrency_limit: int = 0
    """The highest ``concurrency_limit`` since the client was made."""
    cache_hits: int = 0
    """Texts answered from the embedding cache (``cache`` setting): no request, no credit."""
    cache_misses: int = 0
    """Texts the cache did not hold (sent, once per distinct text in a call)."""

    def __add__(self, other: Usage) -> Usage:
        causes = dict(self.retries_by_cause)
        for k, v in other.retries_by_cause.items():
            causes[k] = causes.get(k, 0) + v
        return Usage(
            requests=self.requests + other.requests,
            retries=self.retries + other.retries,
            retries_by_cause=causes,
            splits=self.splits + other.splits,
            texts=self.texts + other.texts,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            credits=self.credits + other.credits,
            usd=self.usd + other.usd,
            concurrency_limit=max(self.concurrency_limit, other.concurrency_limit),
            peak_concurrency_limit=max(self.peak_concurrency_limit, other.peak_concurrency_limit),
            cache_hits=self.cache_hits + other.cache_hits,
            cache_misses=self.cache_misses + other.cache_misses,
        )

    @property
    def concurrency(self) -> int:
        """``concurrency_limit`` under its earlier name."""
        return self.concurrency_limit

    @property
    def peak_concurrency(self) -> int:
        """``peak_concurrency_limit`` under its earlier name."""
        return self.peak_concurrency_limit


class RateLimiter:
    """A client-side pace for requests and tokens per minute, shared by every call that holds it.

    Thread-safe and usable from sync and async code alike: ``reserve`` books the next slot and
    returns how long the caller must wait for it. Requests are spaced evenly (no bursts), which
    keeps a per-minute server limit from ever being hit by this process.
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (
            ("requests_per_minute", requests_per_minute),
            ("tokens_per_minute", tokens_per_minute),
        ):
            if value is not None and value <= 0:
                raise ConfigurationError(f"{name} must be positive, not {value!r}")
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._next_request = 0.0
        self._next_tokens = 0.0

    @property
    def counts_tokens(self) -> bool:
        """Whether callers must say how many tokens a request carries."""
        return self.tokens_per_minute is not None

    def reserve(self, tokens: int = 0) -> float:
        """Book one request of ``tokens`` tokens; returns the seconds to wait before sending it."""
        with self._lock:
            now = self._clock()
            start = now
            if self.requests_per_minute:
                start = max(start, self._next_request)
            if self.tokens_per_minute:
                start = max(start, self._next_tokens)
            if self.requests_per_minute:
                self._next_request = start + 60.0 / self.requests_per_minute
            if self.tokens_per_minute:
                self._next_tokens = start + 60.0 * tokens / self.tokens_per_minute
            return start - now

    def __repr__(self) -> str:
        return f"RateLimiter(requests_per_minute={self.requests_per_minute}, tokens_per_minute={self.tokens_per_minute})"


class UsageCounter:
    """A client's running ``Usage`` behind a lock (calls on many threads add to it)."""

    def __init__(self) -> None:
        self._usage = Usage()
        self._lock = threading.Lock()

    def count(self, **deltas: int | float) -> None:
        """Add ``deltas`` (field name -> amount) to the totals."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self._usage, name, getattr(self._usage, name) + delta)

    def count_retry(self, cause: str) -> None:
        """One retry, for ``cause``."""
        with self._lock:
            self._usage.retries += 1
            causes = self._usage.retries_by_cause
            causes[cause] = causes.get(cause, 0) + 1

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (another thread of the parent may have held it)."""
        self._lock = threading.Lock()

    def snapshot(self, concurrency: int, peak: int, *, reset: bool = False) -> Usage:
        """A copy of the totals with the concurrency figures given; ``reset`` starts from zero."""
        with self._lock:
            usage = self._usage
            if reset:
                self._usage = Usage()
            return replace(
                usage,
                retries_by_cause=dict(usage.retries_by_cause),
                concurrency_limit=concurrency,
                peak_concurrency_limit=peak,
            )
