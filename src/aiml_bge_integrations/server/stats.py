"""The local server's counters: thread-safe, readable in-process and over ``GET /_stats``.

Keys of ``ServerStats.snapshot()``:

==================  ====================================================================
``requests``        every ``POST /v1/embeddings`` that reached the server
``items``           inputs in requests that passed auth, limits and validation
``tokens``          BGE tokens billed for those requests
``credits``         credits billed (AI/ML dialect formula, see ``app.credits_for``)
``ok``              healthy 200 replies (no fault injected)
``by_status``       complete replies of ``/v1/embeddings`` by status, ``{"200": n, ...}``
``faults``          injected faults by kind, ``{"503": n, "drop": n, ...}``
``rate_limited``    429s from the server's own limits (concurrency, requests per minute)
``in_flight``       requests being handled now (admitted, latency included)
``peak_in_flight``  the most ``in_flight`` seen since the last reset
``serving``         requests past the worker queue (``in_flight`` less those waiting in it)
``peak_serving``    the most ``serving`` seen since the last reset (at most ``workers``)
==================  ====================================================================
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

__all__ = ["ServerStats"]


class ServerStats:
    """Counters of one server; every method is safe to call from any thread.

    ``stats["requests"]`` and ``stats.requests`` read one counter; ``snapshot()`` reads all
    at once, consistently.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._serving = 0
        self._clear()

    def _clear(self) -> None:
        self._requests = 0
        self._items = 0
        self._tokens = 0
        self._credits = 0
        self._ok = 0
        self._by_status: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._rate_limited = 0
        # In-flight requests survive a reset; the peak restarts from them.
        self._peak = self._in_flight
        self._peak_serving = self._serving

    def reset(self) -> None:
        """Zero every counter (requests still in flight stay counted in ``in_flight``)."""
        with self._lock:
            self._clear()

    # ---- recording (called by the app)

    def count_request(self) -> None:
        """One more ``POST /v1/embeddings``."""
        with self._lock:
            self._requests += 1

    def try_admit(self, limit: int | None) -> bool:
        """Enter the in-flight set unless ``limit`` requests are already in it."""
        with self._lock:
            if limit is not None and self._in_flight >= limit:
                return False
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            return True

    def release(self) -> None:
        """Leave the in-flight set."""
        with self._lock:
            self._in_flight -= 1

    def start_serving(self) -> None:
        """A request got past the worker queue (at once when there is none)."""
        with self._lock:
            self._serving += 1
            self._peak_serving = max(self._peak_serving, self._serving)

    def stop_serving(self) -> None:
        """A request that got past the worker queue is done."""
        with self._lock:
            self._serving -= 1

    def count_accepted(self, items: int, tokens: int, credits: int) -> None:
        """A request passed every check and will be answered (healthy or faulted)."""
        with self._lock:
            self._items += items
            self._tokens += tokens
            self._credits += credits

    def count_reply(self, status: int, healthy: bool) -> None:
        """A complete reply was sent; ``healthy`` means a 200 without a fault."""
        with self._lock:
            self._by_status[str(status)] += 1
            if healthy:
                self._ok += 1

    def count_fault(self, kind: str) -> None:
        """A fault of ``kind`` was injected."""
        with self._lock:
            self._faults[kind] += 1

    def count_rate_limited(self) -> None:
        """A 429 from the concurrency or per-minute limit."""
        with self._lock:
            self._rate_limited += 1

    # ---- reading

    def snapshot(self) -> dict[str, Any]:
        """Every counter, as plain JSON-ready values."""
        with self._lock:
            return {
                "requests": self._requests,
                "items": self._items,
                "tokens": self._tokens,
                "credits": self._credits,
                "ok": self._ok,
                "by_status": dict(self._by_status),
                "faults": dict(self._faults),
                "rate_limited": self._rate_limited,
                "in_flight": self._in_flight,
                "peak_in_flight": self._peak,
                "serving": self._serving,
                "peak_serving": self._peak_serving,
            }

    def __getitem__(self, key: str) -> Any:
        return self.snapshot()[key]

    def __repr__(self) -> str:
        return f"ServerStats({self.snapshot()!r})"

    @property
    def requests(self) -> int:
        """Every ``POST /v1/embeddings`` received."""
        with self._lock:
            return self._requests

    @property
    def items(self) -> int:
        """Inputs in accepted requests."""
        with self._lock:
            return self._items

    @property
    def ok(self) -> int:
        """Healthy 200 replies."""
        with self._lock:
            return self._ok

    @property
    def in_flight(self) -> int:
        """Requests being handled now."""
        with self._lock:
            return self._in_flight

    @property
    def peak_in_flight(self) -> int:
        """The most requests handled at once since the last reset."""
        with self._lock:
            return self._peak

    @property
    def rate_limited(self) -> int:
        """429s from the server's own limits."""
        with self._lock:
            return self._rate_limited

    @property
    def by_status(self) -> dict[str, int]:
        """Complete replies by status code (as a string)."""
        with self._lock:
            return dict(self._by_status)

    @property
    def faults(self) -> dict[str, int]:
        """Injected faults by kind."""
        with self._lock:
            return dict(self._faults)
