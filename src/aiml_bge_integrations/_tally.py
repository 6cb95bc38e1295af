"""What one logical call did, for its OpenTelemetry span: no I/O.

A client opens a ``Tally`` per call (``embed_documents``, ``embed_query``, a stream) only when
telemetry is on; the engine adds each request, retry, split and reply to it, from whichever
threads or tasks the call's batches run on, and the client ends it with the call.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import TracebackType

from ._telemetry import AttemptSpan, CallFigures, CallSpan
from ._usage import UsageCounter

__all__ = ["NO_ATTEMPT", "Tally", "collect_calls", "collecting"]

NO_ATTEMPT = AttemptSpan()
"""The attempt of a call without telemetry: does nothing."""


_COLLECTED: ContextVar[list[Tally] | None] = ContextVar("aiml_bge_calls", default=None)


@contextlib.contextmanager
def collect_calls() -> Iterator[list[Tally]]:
    """The tallies of the calls a client makes in this context meanwhile, telemetry or not.

    For an adapter that reports each call's own figures to its framework (LlamaIndex's
    events): a client's ``usage`` is shared by every call running on it.
    """
    calls: list[Tally] = []
    token = _COLLECTED.set(calls)
    try:
        yield calls
    finally:
        _COLLECTED.reset(token)


def collecting() -> list[Tally] | None:
    """Where this context's calls are collected (None: nowhere)."""
    return _COLLECTED.get()


class Tally:
    """One call's span and its figures; a context manager that ends the span with the call.

    ``current``: whether the span is the current one inside the ``with`` block (not for a
    stream, whose block is left at every item it yields to the caller).
    """

    def __init__(
        self, span: CallSpan, concurrency_limit: Callable[[], int], current: bool = True
    ) -> None:
        self.span = span
        self._limit = concurrency_limit
        self._current = current
        self.usage = UsageCounter()
        self.causes: list[str] = []
        """The cause of each retry, in order."""
        self.model: str | None = None
        """The model the replies named."""
        self.dimension: int | None = None
        self.cache_hits: int | None = None
        self.cache_misses: int | None = None
        self._lock = threading.Lock()
        self._attempts = 0

    def attempt(self, texts: int, wait: float | None, cause: str | None) -> AttemptSpan:
        """The span of the call's next HTTP attempt (numbered from 1), not yet entered."""
        with self._lock:
            self._attempts += 1
            number = self._attempts
        return self.span.attempt(number=number, texts=texts, wait=wait, retry_cause=cause)

    def retry(self, cause: str) -> None:
        """One retry, for ``cause``."""
        self.usage.count_retry(cause)
        with self._lock:
            self.causes.append(cause)

    def reply(self, model: str | None, vectors: list[list[float]]) -> None:
        """What an accepted reply says of the model and the dimension."""
        if model:
            self.model = model
        if vectors:
            self.dimension = len(vectors[0])

    def finish(self, error: BaseException | None = None) -> None:
        """End the span with the call's figures, and ``error`` if it failed (idempotent)."""
        u = self.usage.snapshot(0, 0)
        figures = CallFigures(
            requests=u.requests,
            retries=u.retries,
            retry_causes=tuple(self.causes),
            splits=u.splits,
            credits=u.credits or None,
            concurrency_limit=self._limit(),
            cache_hits=self.cache_hits,
            cache_misses=self.cache_misses,
        )
        self.span.finish(
            response_model=self.model,
            input_tokens=u.prompt_tokens if u.texts else None,
            dimension=self.dimension,
            figures=figures,
            error=error,
        )

    def __enter__(self) -> Tally:
        if self._current:
            self.span.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A stream the caller closed early ended well.
        self.finish(None if isinstance(exc, GeneratorExit) else exc)
        if self._current:
            self.span.__exit__(exc_type, exc, tb)
