"""The request core: ``EmbeddingsClient`` and ``AsyncEmbeddingsClient`` over httpx.

This is the only module that does network I/O. Everything the two clients decide (how to
batch, what a reply means, whether and when to retry) lives in their common base class or in
the pure modules; the sync and async classes differ only where they send, sleep and fan out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import re
import ssl
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from types import EllipsisType, TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
import orjson

from . import _retry
from ._batching import (
    RequestPlan,
    apply_long_text_policy,
    check_texts,
    collect_texts,
    iter_checked_chunks,
)
from ._concurrency import ConcurrencyPolicy, Flight
from ._secrets import resolve_key
from ._settings import (
    API_KEY_ENV,
    BASE_URL_ENV,
    CLIENT_SETTINGS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    MODEL_ENV,
    SecretValue,
    check_settings,
    expected_dimension,
    is_bge_model,
    same_model,
)
from ._warnings import warn_user
from ._wire import (
    ErrorInfo,
    ParsedEmbeddings,
    WireError,
    batch_limit_in_message,
    build_request_body,
    item_index_in_message,
    parse_embeddings_response,
    parse_error_body,
    says_batch_too_large,
    says_input_too_long,
)
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    InsufficientCreditsError,
    ItemRejectedError,
    ModelMismatchWarning,
    ModelNotFoundError,
    ResponseValidationError,
    status_error_class,
)

__all__ = ["AsyncEmbeddingsClient", "EmbeddingsClient", "RateLimiter", "Usage"]

logger = logging.getLogger("aiml_bge_integrations")

_sleep: Callable[[float], None] | None = None
"""Replaces the sync wait between retries when set (tests record delays with it). Unset, a
worker waits on its call's cancellation event, so a call that has failed wakes it at once."""
_asleep: Callable[[float], Any] = asyncio.sleep
"""The async sleep between retries (tests patch it)."""

_T = TypeVar("_T")
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
_USER_AGENT = "aiml-bge-integrations/0.1"


@dataclass
class Usage:
    """Running totals of what a client sent and what the server said it cost."""

    requests: int = 0
    """HTTP requests sent, retries included."""
    retries: int = 0
    """Requests that were repeats of a failed one."""
    retries_by_cause: dict[str, int] = field(default_factory=dict)
    """Retries per cause: a status code ("429", "503"), "connection", "timeout" or "validation"."""
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
    concurrency: int = 0
    """Requests the client allows in flight now: the level it found the server sustains."""
    peak_concurrency: int = 0
    """The highest ``concurrency`` since the client was made."""

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
            concurrency=max(self.concurrency, other.concurrency),
            peak_concurrency=max(self.peak_concurrency, other.peak_concurrency),
        )


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


@dataclass
class _Outcome:
    """What one attempt came to."""

    parsed: ParsedEmbeddings | None = None
    error: APIError | ResponseValidationError | None = None
    retry: bool = False
    split: bool = False
    cause: str = ""
    retry_after: float | None = None
    absorbed: int | None = None
    """For a refusal the concurrency limit explains: the gate's success count at that moment
    (the retry goes, without backoff, once another request has succeeded)."""


@dataclass
class _Call:
    """State shared by the batches of one call."""

    deadline: _retry.Deadline
    deadline_seconds: float | None
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Tries:
    retries: int = 0
    validation_retries: int = 0
    after: int | None = None
    """Send the next attempt only after the gate has seen more successes than this."""


@dataclass
class _Ticket:
    """One request's place in a gate, from sending until its reply's headers arrive."""

    sent_at: float
    others: int
    """Requests in flight through the gate when this one was sent."""
    sent: int
    """This request's number among the gate's sends."""
    cuts: int
    """The limiter's cuts when this one was sent (see ``Flight.cuts``)."""
    changes: int
    """The limiter's changes of the limit when this one was sent (see ``Flight.changes``)."""
    others_refused: int = 0
    """Of ``others``, those refused since: the server was not holding them."""


class _Limiter:
    """The client's concurrency policy behind a lock, shared by all its gates; logs changes."""

    def __init__(self, max_concurrency: int, adaptive: bool) -> None:
        self._policy = ConcurrencyPolicy(max_concurrency, adaptive=adaptive)
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        """Requests allowed in flight now."""
        return self._policy.limit

    @property
    def peak(self) -> int:
        """The highest limit so far."""
        return self._policy.peak

    @property
    def cuts(self) -> int:
        """The policy's cuts on refusals so far."""
        return self._policy.cuts

    @property
    def changes(self) -> int:
        """The policy's changes of the limit so far."""
        return self._policy.changes

    def record(self, status: int | None, rtt: float, flight: Flight) -> bool:
        """Feed one reply (``None``: none came) to the policy; True for a refusal it explains."""
        if status is None:
            return False
        with self._lock:
            before = self._policy.limit
            if status in (429, 503):
                absorbed = self._policy.on_refusal(flight)
            else:
                absorbed = False
                self._policy.on_success(rtt, flight)
            after, reason = self._policy.limit, self._policy.reason
        if after != before:
            logger.debug("concurrency limit %d -> %d: %s", before, after, reason)
        return absorbed


class _Flights:
    """The requests in flight through one gate, against the shared limit (the gate locks)."""

    def __init__(self, limiter: _Limiter) -> None:
        self.limiter = limiter
        self.sent = 0
        self.successes = 0
        self.open: list[_Ticket] = []
        self._released = 0  # the success that last let a refused request go again

    @property
    def in_flight(self) -> int:
        return len(self.open)

    def take(self, after: int | None) -> _Ticket | None:
        if self.in_flight >= self.limiter.limit:
            return None
        if after is not None and self.in_flight > 0:
            # One refused request goes again per success: the server just made room for one.
            if self.successes <= max(after, self._released):
                return None
            self._released = self.successes
        self.sent += 1
        ticket = _Ticket(
            time.monotonic(), self.in_flight, self.sent, self.limiter.cuts, self.limiter.changes
        )
        self.open.append(ticket)
        return ticket

    def give_back(self, ticket: _Ticket, status: int | None) -> int | None:
        self.open.remove(ticket)
        flight = Flight(
            ticket.others,
            ticket.others + self.sent - ticket.sent,
            ticket.others_refused,
            self.in_flight,
            ticket.cuts,
            ticket.changes,
        )
        absorbed = self.limiter.record(status, time.monotonic() - ticket.sent_at, flight)
        if status in (429, 503):
            for later in self.open:
                if later.sent > ticket.sent:
                    later.others_refused += 1
        elif status is not None:
            self.successes += 1
        return self.successes if absorbed else None


class _SyncGate:
    """Slots for the sync client's threads: at most the current limit in flight."""

    def __init__(self, limiter: _Limiter) -> None:
        self._flights = _Flights(limiter)
        self._cond = threading.Condition()

    def acquire(self, after: int | None, stopped: threading.Event) -> _Ticket | None:
        """A slot, or None once ``stopped`` is set (the call was given up: nothing is sent)."""
        with self._cond:
            while not stopped.is_set():
                ticket = self._flights.take(after)
                if ticket is not None:
                    return ticket
                # Woken by every release; the short timeout also sees a call stopped meanwhile.
                self._cond.wait(0.05)
        return None

    def release(self, ticket: _Ticket, status: int | None) -> int | None:
        with self._cond:
            mark = self._flights.give_back(ticket, status)
            self._cond.notify_all()
        return mark


class _AsyncGate:
    """Slots for the requests of one event loop: at most the current limit in flight."""

    def __init__(self, limiter: _Limiter) -> None:
        self._flights = _Flights(limiter)
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, after: int | None = None) -> _Ticket:
        while True:
            ticket = self._flights.take(after)
            if ticket is not None:
                return ticket
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def release(self, ticket: _Ticket, status: int | None) -> int | None:
        mark = self._flights.give_back(ticket, status)
        # Everyone waiting looks again: the limit may have grown by more than one.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        return mark


class _BaseClient:
    """Settings, checks, reply interpretation and retry decisions shared by both clients."""

    def __init__(self, given: Mapping[str, Any], rate_limiter: RateLimiter | None) -> None:
        # Checks and defaults come from the one definition of every setting (_settings).
        values = check_settings(given)
        self._key = resolve_key(values["api_key"])
        self.base_url: str = values["base_url"]
        """Root of the OpenAI-compatible API; requests go to ``{base_url}/embeddings``."""
        self.model: str = values["model"]
        """Model name sent with every request."""
        self.batch_size: int = values["batch_size"]
        """Inputs per request (lowered automatically when a server states a smaller limit)."""
        self.max_concurrency: int = values["max_concurrency"]
        """The most requests awaiting their reply at once, across every call on this client (a
        request holds its slot from sending until its reply's headers arrive)."""
        self.adaptive_concurrency: bool = values["adaptive_concurrency"]
        """True: keep in flight what the server sustains, found from its refusals and round
        trips, up to ``max_concurrency``; False: always ``max_concurrency``."""
        self._limiter = _Limiter(self.max_concurrency, self.adaptive_concurrency)
        self.max_retries: int = values["max_retries"]
        self.timeout: float = values["timeout"]
        self.deadline: float | None = values["deadline"]
        """Seconds for one whole call across retries (None: no overall limit)."""
        self.query_instruction: str | None = values["query_instruction"]
        """Prefix for ``embed_query`` (BGE English models: the retrieval instruction)."""
        self.encoding_format: str | None = values["encoding_format"]
        self.long_text: str = values["long_text"]
        self.allow_insecure_http: bool = values["allow_insecure_http"]
        self.default_headers: dict[str, str] = values["default_headers"] or {}
        self._check_transport_security()
        rpm, tpm = values["requests_per_minute"], values["tokens_per_minute"]
        self.rate_limiter = rate_limiter or (RateLimiter(rpm, tpm) if rpm or tpm else None)
        self._retry_policy = _retry.RetryPolicy(max_retries=self.max_retries)
        self._expected_dim = expected_dimension(self.model)
        self._url = self.base_url + "/embeddings"
        self._learned_batch_limit: int | None = None
        self._model_checked = False
        self._live_calls: weakref.WeakSet[threading.Event] = weakref.WeakSet()
        self._usage = Usage()
        self._usage_lock = threading.Lock()
        self._injected_limiter = rate_limiter
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
            **self.default_headers,
        }
        if self._key.available:  # else the first call raises, before anything is sent
            self._headers["Authorization"] = f"Bearer {self._key.get()}"
        # What a copy is built from: the settings as resolved here, with the key object itself (a pickle writes only its fingerprint, see _secrets).
        self._init_kwargs: dict[str, Any] = {
            **{name: values[name] for name in CLIENT_SETTINGS},
            "api_key": self._key,
        }

    # -- identity -----------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r}, "
            f"batch_size={self.batch_size}, max_concurrency={self.max_concurrency}, "
            f"max_retries={self.max_retries}, api_key=SecretKey('**********'))"
        )

    # -- copies ----------------------------------------------------------------------------
    # A copy is a new client with the same settings and the same key: its own connection pool
    # (unless the caller gave one) and usage totals from zero. In memory (copy, deepcopy) it
    # shares the key object and what the caller passed in (http_client, rate_limiter); a
    # pickle carries the key's fingerprint only (see _secrets) and leaves those objects behind.

    def __copy__(self) -> Any:
        cls: Any = type(self)  # EmbeddingsClient or AsyncEmbeddingsClient, with http_client=
        return cls(
            http_client=getattr(self, "_injected_http", None),
            rate_limiter=self._injected_limiter,
            **self._init_kwargs,
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self.__copy__()

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self._init_kwargs))

    # -- usage --------------------------------------------------------------------------

    @property
    def usage(self) -> Usage:
        """A snapshot of the running totals since this client was made (or ``reset_usage``)."""
        with self._usage_lock:
            return self._with_limits(self._usage)

    def reset_usage(self) -> Usage:
        """Return the totals so far and start counting from zero (the limits are not totals: kept)."""
        with self._usage_lock:
            old, self._usage = self._usage, Usage()
            return self._with_limits(old)

    def _with_limits(self, usage: Usage) -> Usage:
        return replace(
            usage,
            retries_by_cause=dict(usage.retries_by_cause),
            concurrency=self._limiter.limit,
            peak_concurrency=self._limiter.peak,
        )

    def _count(self, **deltas: int | float) -> None:
        with self._usage_lock:
            for name, delta in deltas.items():
                setattr(self._usage, name, getattr(self._usage, name) + delta)

    def _count_retry(self, cause: str) -> None:
        with self._usage_lock:
            self._usage.retries += 1
            causes = self._usage.retries_by_cause
            causes[cause] = causes.get(cause, 0) + 1

    @property
    def effective_batch_size(self) -> int:
        """``batch_size``, or the smaller limit a server has stated."""
        limit = self._learned_batch_limit
        return min(self.batch_size, limit) if limit else self.batch_size

    # -- preparing texts ------------------------------------------------------------------

    def _check_transport_security(self) -> None:
        # The URL's shape is checked with base_url itself (_settings); this needs two settings.
        parts = urlsplit(self.base_url)
        host = (parts.hostname or "").lower()
        loopback = host in _LOOPBACK_HOSTS or _is_loopback_ip(host)
        if parts.scheme == "http" and not loopback and not self.allow_insecure_http:
            raise ConfigurationError(
                f"refusing to send the API key over plain http to {host}: use https, or set "
                "allow_insecure_http=True if this network is trusted"
            )

    def _prepare_documents(self, texts: object) -> list[str]:
        return apply_long_text_policy(collect_texts(texts), self.model, self.long_text)

    def _prepare_query(self, text: object) -> str:
        checked = check_texts([text])[0]
        query = (self.query_instruction or "") + checked
        return apply_long_text_policy([query], self.model, self.long_text)[0]

    def _new_call(self) -> _Call:
        self._key.get()  # an unpickled copy whose key was not found here says so, sending nothing
        call = _Call(_retry.Deadline(self.deadline), self.deadline)
        # close() stops every call still running, so no worker sends or sleeps on after it.
        self._live_calls.add(call.cancelled)
        return call

    def _batches(self, texts: list[str]) -> Iterator[tuple[int, list[str]]]:
        return self._chunk_batches(texts, max(1, len(texts)))

    def _chunk_batches(self, texts: list[str], chunk_size: int) -> Iterator[tuple[int, list[str]]]:
        # Requests never straddle a chunk: each chunk is cut as embed_documents would cut it.
        # The size is read for every batch, so batches not yet cut follow a limit the server
        # stated meanwhile.
        for start in range(0, len(texts), chunk_size):
            end = min(start + chunk_size, len(texts))
            first = start
            while first < end:
                stop = min(first + self.effective_batch_size, end)
                yield first, texts[first:stop]
                first = stop

    def _prepare_chunks(self, texts: object, chunk_size: object) -> list[str]:
        _check_int("chunk_size", chunk_size, 1)
        return self._prepare_documents(texts)

    def _stream_batches(self, texts: object) -> Iterator[tuple[int, list[str]]]:
        for offset, chunk in iter_checked_chunks(texts, self.effective_batch_size):
            yield offset, apply_long_text_policy(chunk, self.model, self.long_text, offset)

    def _tokens_for_limiter(self, texts: list[str]) -> int:
        if self.rate_limiter is None or not self.rate_limiter.counts_tokens:
            return 0
        if is_bge_model(self.model):
            from .tokens import count_tokens_batch

            return sum(count_tokens_batch(texts))
        return sum(len(t) // 4 + 1 for t in texts)

    def _request_headers(self) -> dict[str, str]:
        return {**self._headers, "X-Client-Request-Id": uuid.uuid4().hex}

    def _build_request(
        self, http: httpx.Client | httpx.AsyncClient, body: bytes, call: _Call
    ) -> httpx.Request:
        return http.build_request(
            "POST",
            self._url,
            content=body,
            headers=self._request_headers(),
            timeout=self._request_timeout(call),
        )

    def _request_timeout(self, call: _Call) -> float:
        left = call.deadline.remaining()
        return self.timeout if left is None else max(0.001, min(self.timeout, left))

    # -- reading replies ------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return _scrub_secret(text, self._key.get())

    def _scrub_bytes(self, content: bytes) -> bytes:
        key = self._key.get()
        if key not in content.decode("utf-8", "replace"):
            return content
        return _scrub_secret(content.decode("utf-8", "replace"), key).encode("utf-8")

    def _interpret(
        self, status: int, headers: Mapping[str, str], content: bytes, texts: list[str], offset: int
    ) -> _Outcome:
        if status == 200:
            try:
                parsed = parse_embeddings_response(
                    content, len(texts), expected_dim=self._expected_dim, headers=headers
                )
            except WireError as err:
                rid = headers.get("x-inference-id") or headers.get("x-request-id")
                message = f"invalid reply for texts {offset}..{offset + len(texts) - 1}: {err}"
                served = _reply_model(content)
                other_model = served is not None and not same_model(served, self.model)
                if other_model:
                    # A single-model server answers any name with its own vectors: asking
                    # again cannot help, and the fix is in the settings.
                    message += (
                        f". The server answered with model {served!r}, not {self.model!r}: "
                        f"set model={served!r} if that is the model you want"
                    )
                return _Outcome(
                    error=ResponseValidationError(message, request_id=rid),
                    retry=not other_model,
                    cause="validation",
                )
            return _Outcome(parsed=parsed)
        # Scrub the body itself, not only the message: it is kept on the error as ``.body``.
        content = self._scrub_bytes(content)
        info = parse_error_body(content, headers)
        message = self._scrub(info.message)
        body = self._error_body(content)
        if status in (400, 413, 422):
            # An input the server names is refused at once: splitting would only embed (and
            # bill) the rest of the batch before the same error.
            pos = info.item_index if info.item_index is not None else item_index_in_message(message)
            if pos is not None and pos < len(texts):
                return _Outcome(error=self._item_error(status, message, info, offset + pos, body))
            too_large = says_batch_too_large(status, message)
            if too_large or says_input_too_long(message):
                if len(texts) > 1:
                    limit = batch_limit_in_message(message) if too_large else None
                    if limit and 0 < limit < len(texts):
                        self._learn_batch_limit(limit)
                    return _Outcome(split=True, cause=str(status))
                return _Outcome(error=self._item_error(status, message, info, offset, body))
        error = self._status_error(status, message, info, body)
        return _Outcome(
            error=error,
            retry=_retry.is_retryable_status(status),
            cause=str(status),
            retry_after=_retry.parse_retry_after(headers),
        )

    def _learn_batch_limit(self, limit: int) -> None:
        if self._learned_batch_limit is None or limit < self._learned_batch_limit:
            logger.info(
                "server accepts at most %d inputs per request; batches shrink to fit", limit
            )
            self._learned_batch_limit = limit

    def _item_error(
        self, status: int, message: str, info: ErrorInfo, index: int, body: Any
    ) -> ItemRejectedError:
        err = ItemRejectedError(
            f"the server refused the text at index {index}: {_sentence(message)}",
            index=index,
            status_code=status,
            request_id=info.request_id,
            body=body,
        )
        err.status_code = status
        return err

    def _error_body(self, content: bytes) -> Any:
        """The error reply's body, parsed (JSON) or as a short excerpt; already scrubbed."""
        if not content:
            return None
        try:
            return orjson.loads(content)
        except ValueError:
            return content[:500].decode("utf-8", "replace")

    @property
    def _is_aiml_api(self) -> bool:
        host = (urlsplit(self.base_url).hostname or "").lower()
        return host == "aimlapi.com" or host.endswith(".aimlapi.com")

    def _status_error(
        self, status: int, message: str, info: ErrorInfo, body: Any
    ) -> APIStatusError:
        cls: type[APIStatusError] = status_error_class(status)
        lowered = message.lower()
        advice = ""
        if status == 404:
            if "model" in lowered or "deprecated" in lowered or "not supported" in lowered:
                cls = ModelNotFoundError
                if self._is_aiml_api:
                    advice = (
                        f"The AI/ML API does not serve {self.model!r}: it retired the BGE models "
                        f"from its list in 2026. Choose a model it serves with model=... (or "
                        f"{MODEL_ENV}), or point base_url (or {BASE_URL_ENV}) at an "
                        "OpenAI-compatible server that hosts BGE (docs: Self-hosting BGE)."
                    )
                else:
                    advice = (
                        f"The server at {self.base_url} does not serve {self.model!r}: ask for a "
                        f"model it serves with model=... (or {MODEL_ENV}; most servers list "
                        f"theirs at {self.base_url}/models), or point base_url (or "
                        f"{BASE_URL_ENV}) at a server that serves it."
                    )
            else:
                advice = (
                    f"Requests go to {self._url}, which this server does not have: check "
                    "base_url. The AI/ML API, OpenAI, vLLM and Ollama serve the API under a "
                    "root ending in /v1; infinity and TEI serve it at the root, without /v1."
                )
        elif status == 401:
            advice = f"Check the API key (api_key=... or {API_KEY_ENV})."
        elif status == 403 and any(
            w in lowered for w in ("credit", "balance", "quota", "billing", "payment")
        ):
            cls = InsufficientCreditsError
            advice = "The account is out of credits: top it up, then run again."
        text = f"{_sentence(message)} {advice}" if advice else message
        err = cls(text, status_code=status, request_id=info.request_id, body=body)
        err.status_code = status
        return err

    def _transport_outcome(self, err: Exception) -> _Outcome:
        if isinstance(err, httpx.TimeoutException):
            return _Outcome(
                error=APITimeoutError(
                    f"request timed out ({type(err).__name__}) after {self.timeout}s"
                ),
                retry=True,
                cause="timeout",
            )
        detail = self._scrub(str(err)) or type(err).__name__
        return _Outcome(
            error=APIConnectionError(f"connection to {self.base_url} failed: {detail}"),
            retry=True,
            cause="connection",
        )

    def _absorb(self, outcome: _Outcome, absorbed: int | None) -> _Outcome:
        # A refusal the limit explains is retried without backoff, unless the server asked
        # for a wait (Retry-After), which is honoured.
        if absorbed is not None and outcome.retry and outcome.retry_after is None:
            outcome.absorbed = absorbed
        return outcome

    def _accept(self, parsed: ParsedEmbeddings) -> list[list[float]]:
        if parsed.model and not self._model_checked:
            self._check_reply_model(parsed.model)
        u = parsed.usage
        self._count(
            texts=len(parsed.vectors),
            prompt_tokens=u.prompt_tokens,
            total_tokens=u.total_tokens,
            credits=u.credits,
            usd=u.usd,
        )
        return parsed.vectors

    def _check_reply_model(self, served: str) -> None:
        with self._usage_lock:
            if self._model_checked:
                return
            self._model_checked = True
        if same_model(served, self.model):
            return
        note = (
            f"the server at {self.base_url} answered with model {served!r}, not {self.model!r} "
            f"as asked: the vectors are {served!r}'s. Set model={served!r} to say so"
        )
        if self.query_instruction:
            note += (
                f" (queries also get the instruction meant for {self.model!r}; set "
                "query_instruction=None if the served model does not use one)"
            )
        logger.warning("%s", note)
        warn_user(note, ModelMismatchWarning)

    def _next_delay(self, outcome: _Outcome, tries: _Tries, call: _Call) -> float:
        """Seconds to wait before the next attempt, or raise the error if there is none."""
        error = outcome.error
        assert error is not None
        if not outcome.retry:
            raise error
        if outcome.cause == "validation":
            if tries.validation_retries >= _retry.MAX_VALIDATION_RETRIES:
                raise error
            tries.validation_retries += 1
        else:
            if tries.retries >= self.max_retries:
                if isinstance(error, APIError):
                    error.message += f" (gave up after {tries.retries} retries)"
                raise error
            tries.retries += 1
        if outcome.absorbed is not None:
            # The limit has been lowered to what the server holds; the retry waits for a
            # request to succeed rather than for a backoff.
            tries.after, delay = outcome.absorbed, 0.0
        else:
            delay = self._retry_policy.delay(
                tries.retries + tries.validation_retries,
                status=int(outcome.cause) if outcome.cause.isdigit() else None,
                retry_after=outcome.retry_after,
            )
        if call.cancelled.is_set():
            raise error
        if not call.deadline.allows_wait(delay):
            raise APITimeoutError(
                f"deadline of {call.deadline_seconds}s for this call ran out; last error: {error}"
            ) from error
        self._count_retry(outcome.cause)
        logger.debug("retrying after %s in %.2fs", outcome.cause, delay)
        return delay

    def _check_call(self, call: _Call) -> None:
        """Raise instead of sending when the call has been given up or its deadline has passed."""
        if call.cancelled.is_set():
            raise APIConnectionError(
                "not sent: this call was stopped (another of its requests failed, the caller "
                "stopped waiting, or the client was closed)"
            )
        if call.deadline.expired():
            raise self._deadline_error(call)

    def _deadline_error(self, call: _Call) -> APITimeoutError:
        return APITimeoutError(f"deadline of {call.deadline_seconds}s for this call ran out")


class _Exchange:
    """One request and its whole reply, in a task of its own that is never cancelled natively.

    httpcore protects its connection pool's bookkeeping from cancellation with anyio shields,
    which a plain ``Task.cancel()`` goes through: a request cancelled while its reply is being
    closed can leave a pool slot taken for good (encode/httpcore#1093). So the request runs in
    an inner task inside an anyio cancel scope. Cancelling the caller cancels that scope,
    which anyio delivers around httpcore's shields, and waits for the inner task to finish
    cleaning up. The request slot is held from sending until the reply's headers arrive.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        request: httpx.Request,
        slots: _AsyncGate,
        after: int | None,
        on_send: Callable[[], None],
    ) -> None:
        self._http, self._request, self._slots, self._on_send = http, request, slots, on_send
        self._after = after
        self._scope: Any = None
        self.absorbed: int | None = None
        """The gate's verdict on a refusal (see ``_Outcome.absorbed``)."""

    async def run(self) -> tuple[httpx.Response, bytes]:
        inner = asyncio.ensure_future(self._inner())
        try:
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            if self._scope is not None:
                self._scope.cancel()
            else:  # not started: nothing of httpcore's to protect
                inner.cancel()
            with contextlib.suppress(BaseException):
                await inner  # the cleanup; a second cancellation abandons it
            raise

    async def _inner(self) -> tuple[httpx.Response, bytes]:
        import anyio  # httpx's own dependency; imported only once a request is made

        with anyio.CancelScope() as scope:
            self._scope = scope
            ticket = await self._slots.acquire(self._after)
            status: int | None = None
            try:
                self._on_send()
                response = await self._http.send(self._request, stream=True)
                status = response.status_code
            finally:
                self.absorbed = self._slots.release(ticket, status)
            # The slot is free once the reply has begun: the server is done with the request,
            # and the next one goes out while this body is still arriving.
            try:
                content = b"".join([part async for part in response.aiter_bytes()])
            finally:
                await response.aclose()
                _release(response)
            return response, content
        raise asyncio.CancelledError  # the scope was cancelled: the caller is being cancelled


_Http = TypeVar("_Http", httpx.Client, httpx.AsyncClient)


def _own_pool(cls: type[_Http], max_concurrency: int, timeout: float, base_url: str) -> _Http:
    """The connection pool a client builds when given none.

    Twice ``max_concurrency`` connections, all kept alive: a reply's body is still being read
    after its slot is free and the next request has gone out. TLS is verified.
    """
    return cls(
        verify=_no_tls_context() if base_url[:5].lower() == "http:" else _ssl_context(),
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(
            max_connections=max_concurrency * 2, max_keepalive_connections=max_concurrency * 2
        ),
    )


def _release(response: httpx.Response) -> None:
    # An httpx response and its stream refer to each other, so a finished response (with its
    # request body) waits for the cycle collector; over a long streaming run that is most of
    # the client's memory. Its body has been read into a bytes object of our own (read()
    # would also keep it on the response), so the cycle is cut and reference counting frees
    # the response as soon as it is dropped.
    response.stream = httpx.ByteStream(b"")


def _is_loopback_ip(host: str) -> bool:
    # An address, not a prefix: "127.0.0.1.example.com" is a remote name like any other.
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    # httpx's default verifying context (certifi, or SSL_CERT_FILE/SSL_CERT_DIR), built once:
    # loading the CA bundle takes 0.1-0.3 s, which every client, and every event loop of an
    # async client, would otherwise pay again.
    return httpx.create_ssl_context()


@functools.lru_cache(maxsize=1)
def _no_tls_context() -> ssl.SSLContext:
    # For a plain-http base URL (the local server) no TLS is ever spoken, so the CA bundle is
    # not loaded. The context still verifies: with no trust anchors, an https connection made
    # through this pool would fail, never be trusted.
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _reply_model(content: bytes) -> str | None:
    """The ``model`` a 200 reply names, if it is JSON that names one (read only on failures)."""
    try:
        doc = orjson.loads(content)
    except ValueError:
        return None
    model = doc.get("model") if isinstance(doc, dict) else None
    return model if isinstance(model, str) else None


def _sentence(text: str) -> str:
    """``text`` ending in a full stop (servers' messages come with and without one)."""
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


_SHORT_SECRET = 8


def _scrub_secret(text: str, key: str) -> str:
    """``text`` with the API key replaced by ``***``.

    A key of fewer than eight characters (a test or local-server key) is replaced only where it
    stands as a token of its own, so that replacing it does not garble the words around it.
    """
    if not key or key not in text:
        return text
    if len(key) >= _SHORT_SECRET:
        return text.replace(key, "***")
    return re.sub(rf"(?<![\w-]){re.escape(key)}(?![\w-])", "***", text)


def _wait(seconds: float, call: _Call) -> None:
    """Wait between attempts; a call that is stopped meanwhile wakes its workers at once."""
    if seconds <= 0:
        return
    if _sleep is not None:
        _sleep(seconds)
    else:
        call.cancelled.wait(seconds)


def _given(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The settings among a constructor's arguments (its ``locals()``)."""
    return {name: arguments[name] for name in CLIENT_SETTINGS}


def _rebuild(cls: type[_T], kwargs: dict[str, Any]) -> _T:
    return cls(**kwargs)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, not {value!r}")


class EmbeddingsClient(_BaseClient):
    """Embeds texts with a synchronous httpx client; batches run on up to ``max_concurrency`` threads.

    Usage::

        with EmbeddingsClient() as client:               # key from AIMLAPI_API_KEY
            vectors = client.embed_documents(["first passage", "second passage"])
            query = client.embed_query("what is in the first passage?")
            print(client.usage)

    Settings are keyword-only, typed parameters, defined once in ``_settings.SETTINGS`` (the
    settings reference, docs/settings-notes.md, describes each); a bad value raises
    ``ConfigurationError`` naming it. ``http_client`` and ``rate_limiter`` are objects the
    caller shares. A copy (``copy``, ``deepcopy``, pickle) has the same settings and the same
    key. How many requests are in flight is found
    from the server's refusals and round trips (docs/concurrency.md). One client is safe to
    share between threads.
    """

    def __init__(
        self,
        *,
        api_key: str | SecretValue | None = None,
        base_url: str | None = None,
        model: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        adaptive_concurrency: bool = True,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout: float = DEFAULT_TIMEOUT,
        deadline: float | None = None,
        query_instruction: str | EllipsisType | None = ...,
        default_headers: Mapping[str, str] | None = None,
        encoding_format: Literal["float", "base64"] | None = None,
        long_text: Literal["truncate", "error", "none"] = "truncate",
        allow_insecure_http: bool = False,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        rate_limiter: RateLimiter | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        """Check every setting (see ``_settings.SETTINGS``); opens no connection yet."""
        super().__init__(_given(locals()), rate_limiter)
        self._injected_http = http_client
        self._owns_http = http_client is None
        self._http = http_client or _own_pool(
            httpx.Client, self.max_concurrency, self.timeout, self.base_url
        )
        self._slots = _SyncGate(self._limiter)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool (if the client made it) and the worker threads.

        Calls still running are stopped: their workers send nothing more and wake from any
        backoff at once; a request already on the wire is let finish.
        """
        for stop in list(self._live_calls):
            stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> EmbeddingsClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- public API -----------------------------------------------------------------------

    def embed_documents(
        self, texts: Iterable[str], *, progress: Callable[[int], None] | None = None
    ) -> list[list[float]]:
        """One vector per text, in the order given. Every text is checked before anything is sent.

        ``progress``, if given, is called with the number of texts finished after each batch
        completes (in order).
        """
        prepared = self._prepare_documents(texts)
        if not prepared:
            return []
        call = self._new_call()
        out: list[list[float]] = []
        # Closed on the way out, even when ``progress`` raises: batches not yet sent are dropped.
        with contextlib.closing(self._run(self._batches(prepared), call)) as results:
            for vectors in results:
                out.extend(vectors)
                if progress is not None:
                    progress(len(vectors))
        return out

    def embed_query(self, text: str) -> list[float]:
        """The vector of one search query, with ``query_instruction`` put in front of it."""
        query = self._prepare_query(text)
        return self._embed_batch([query], 0, self._new_call())[0]

    def iter_embeddings(self, texts: Iterable[str]) -> Iterator[list[float]]:
        """Stream vectors in input order, reading ``texts`` lazily with a bounded number of batches in flight.

        Memory stays bounded by ``2 * max_concurrency`` batches however long the input is. Each
        batch is checked just before it is sent, so a bad item late in the input raises when
        its batch is reached, after the vectors before it were yielded. The deadline, if set,
        applies to each batch.
        """
        with contextlib.closing(self._run(self._stream_batches(texts), None)) as results:
            for vectors in results:
                yield from vectors

    def iter_chunks(
        self, texts: Iterable[str], chunk_size: int
    ) -> Generator[list[list[float]], None, None]:
        """The vectors of each run of ``chunk_size`` texts, in order, while later runs are in flight.

        Like calling ``embed_documents`` on successive slices of ``texts`` (requests never
        straddle two slices), except that the requests of the next slices keep going while the
        caller works on the current one: no pause at slice boundaries. Every text is checked
        before anything is sent (an error names its index in ``texts``). The deadline, if set,
        applies to each request's batch, as in ``iter_embeddings``. Closing the iterator early
        stops the requests not yet sent.
        """
        prepared = self._prepare_chunks(texts, chunk_size)
        return self._iter_chunks(prepared, chunk_size)

    def _iter_chunks(
        self, texts: list[str], chunk_size: int
    ) -> Generator[list[list[float]], None, None]:
        results = self._run(self._chunk_batches(texts, chunk_size), None)
        with contextlib.closing(results):
            for start in range(0, len(texts), chunk_size):
                want = min(chunk_size, len(texts) - start)
                chunk: list[list[float]] = []
                while len(chunk) < want:
                    chunk.extend(next(results))
                yield chunk

    # -- machinery ------------------------------------------------------------------------

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                # Twice the slots: a worker reading and parsing a reply has already given up
                # its slot, so another can send meanwhile.
                self._pool = ThreadPoolExecutor(
                    max_workers=2 * self.max_concurrency, thread_name_prefix="aiml-bge"
                )
            return self._pool

    def _run(
        self, batches: Iterator[tuple[int, list[str]]], call: _Call | None
    ) -> Generator[list[list[float]], None, None]:
        """Embed batches concurrently, yielding each batch's vectors in order.

        ``call`` is shared by every batch (one deadline for the call); ``None`` gives each batch
        its own deadline (streaming). Either way, giving up stops the batches not yet sent.
        """
        shared = call or self._new_call()

        def call_for_batch() -> _Call:
            return call or _Call(_retry.Deadline(self.deadline), self.deadline, shared.cancelled)

        if self.max_concurrency == 1:
            for offset, batch in batches:
                yield self._embed_batch(batch, offset, call_for_batch())
            return
        pool = self._executor()
        pending: deque[Future[list[list[float]]]] = deque()
        # Results are yielded in order, but the call fails as soon as any batch fails: a
        # later batch's error is not kept waiting behind an earlier batch's retries.
        failed: Future[Future[list[list[float]]]] = Future()

        def watch(fut: Future[list[list[float]]]) -> None:
            if not fut.cancelled() and fut.exception() is not None:
                with contextlib.suppress(Exception):  # only the first failure is kept
                    failed.set_result(fut)

        def next_result() -> list[list[float]]:
            head = pending[0]  # stays pending (and is cancelled on the way out) until done
            either: list[Future[Any]] = [head, failed]
            wait(either, return_when=FIRST_COMPLETED)
            if not head.done():
                failed.result().result()  # raises the failure
            return pending.popleft().result()

        try:
            for offset, batch in batches:
                fut = pool.submit(self._embed_batch, batch, offset, call_for_batch())
                fut.add_done_callback(watch)
                pending.append(fut)
                # Twice the current limit submitted: the pool's threads follow the limit.
                while len(pending) >= 2 * self._limiter.limit:
                    yield next_result()
            while pending:
                yield next_result()
        finally:
            shared.cancelled.set()
            for fut in pending:
                fut.cancel()

    def _embed_batch(self, texts: list[str], offset: int, call: _Call) -> list[list[float]]:
        vectors: list[list[float]] = []
        plan = RequestPlan(texts, offset, lambda: self._learned_batch_limit)
        for part_offset, part in plan:
            got = self._attempt(part, part_offset, call)
            if got is None:
                plan.refused()
            else:
                vectors.extend(got)
        return vectors

    def _attempt(self, texts: list[str], offset: int, call: _Call) -> list[list[float]] | None:
        """One request's vectors, retried as the policy says; ``None`` if the server refused its size."""
        body = build_request_body(self.model, texts, self.encoding_format)
        tries = _Tries()
        while True:
            if self.rate_limiter is not None:
                _wait(self.rate_limiter.reserve(self._tokens_for_limiter(texts)), call)
            self._check_call(call)
            outcome = self._send(body, texts, offset, call, tries)
            if outcome.parsed is not None:
                return self._accept(outcome.parsed)
            if outcome.split:
                self._count(splits=1)
                return None
            delay = self._next_delay(outcome, tries, call)
            _wait(delay, call)  # none for a refusal the limit explains: that waits for a slot
            if call.cancelled.is_set():
                assert outcome.error is not None
                raise outcome.error

    def _send(
        self, body: bytes, texts: list[str], offset: int, call: _Call, tries: _Tries
    ) -> _Outcome:
        request = self._build_request(self._http, body, call)
        ticket = self._slots.acquire(tries.after, call.cancelled)
        if ticket is None:
            self._check_call(call)  # raises: the call was stopped while this waited for a slot
            raise AssertionError("unreachable")
        tries.after = None
        self._count(requests=1)
        status: int | None = None
        try:
            try:
                response = self._http.send(request, stream=True)
                status = response.status_code
            finally:
                absorbed = self._slots.release(ticket, status)
            # The slot is free once the reply has begun: the server is done with the request,
            # and another worker sends the next one while this body is still arriving.
            try:
                content = b"".join(response.iter_bytes())
            finally:
                response.close()
                _release(response)
        except httpx.TransportError as err:
            return self._transport_outcome(err)
        return self._absorb(
            self._interpret(response.status_code, response.headers, content, texts, offset),
            absorbed,
        )


@dataclass
class _LoopState:
    slots: _AsyncGate
    http: httpx.AsyncClient
    owned: bool
    closer: AsyncGenerator[None, None] | None = None
    """For a pool the client made: parked in ``_close_at_loop_shutdown`` while the loop lives."""


async def _close_at_loop_shutdown(http: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    # asyncio.run() closes every async generator still open before it closes the loop
    # (loop.shutdown_asyncgens), so one parked here closes the pool while its loop can still
    # run the close: a finished loop leaves no connection open behind it.
    try:
        yield
    finally:
        await http.aclose()


class AsyncEmbeddingsClient(_BaseClient):
    """Embeds texts with an asynchronous httpx client; up to ``max_concurrency`` requests in flight.

    Usage::

        async with AsyncEmbeddingsClient() as client:
            vectors = await client.embed_documents(texts)
            query = await client.embed_query("a question")

    Same settings as ``EmbeddingsClient``. The limit on requests in flight holds across every
    concurrent call on the client. The client can be used from successive event loops (as
    ``asyncio.run`` twice, or notebooks, do): each loop gets its own connection pool. Cancelling
    a call cancels its requests and leaves the client usable.
    """

    def __init__(
        self,
        *,
        api_key: str | SecretValue | None = None,
        base_url: str | None = None,
        model: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        adaptive_concurrency: bool = True,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout: float = DEFAULT_TIMEOUT,
        deadline: float | None = None,
        query_instruction: str | EllipsisType | None = ...,
        default_headers: Mapping[str, str] | None = None,
        encoding_format: Literal["float", "base64"] | None = None,
        long_text: Literal["truncate", "error", "none"] = "truncate",
        allow_insecure_http: bool = False,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        rate_limiter: RateLimiter | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        """Check every setting (see ``_settings.SETTINGS``); opens no connection yet."""
        super().__init__(_given(locals()), rate_limiter)
        self._injected_http = http_client
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._states_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close this event loop's connection pool (pools of loops already closed are dropped)."""
        with self._states_lock:
            states = list(self._states.items())
            self._states.clear()
        for loop, state in states:
            if state.owned and loop is asyncio.get_running_loop():
                if state.closer is not None:
                    await state.closer.aclose()  # closes the pool
                else:
                    await state.http.aclose()

    async def __aenter__(self) -> AsyncEmbeddingsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._states_lock:
            # A state holds its loop through its connections, so the weak keys alone never let
            # go of a finished loop's state.
            for finished in [known for known in self._states if known.is_closed()]:
                del self._states[finished]
            state = self._states.get(loop)
            if state is None:
                http = self._injected_http or _own_pool(
                    httpx.AsyncClient, self.max_concurrency, self.timeout, self.base_url
                )
                state = _LoopState(_AsyncGate(self._limiter), http, self._injected_http is None)
                self._states[loop] = state
            return state

    # -- public API -----------------------------------------------------------------------

    async def embed_documents(
        self, texts: Iterable[str], *, progress: Callable[[int], None] | None = None
    ) -> list[list[float]]:
        """One vector per text, in the order given. Every text is checked before anything is sent."""
        prepared = self._prepare_documents(texts)
        if not prepared:
            return []
        call = self._new_call()
        out: list[list[float]] = []
        # ``async for`` does not close the generator when its body raises (or the caller
        # closes ``iter_embeddings``): aclosing cancels the batches in flight before returning.
        async with contextlib.aclosing(self._run(self._batches(prepared), call)) as results:
            async for vectors in results:
                out.extend(vectors)
                if progress is not None:
                    progress(len(vectors))
        return out

    async def embed_query(self, text: str) -> list[float]:
        """The vector of one search query, with ``query_instruction`` put in front of it."""
        query = self._prepare_query(text)
        return (await self._embed_batch([query], 0, self._new_call()))[0]

    async def iter_embeddings(self, texts: Iterable[str]) -> AsyncIterator[list[float]]:
        """Stream vectors in input order with at most ``2 * max_concurrency`` batches in flight.

        See ``EmbeddingsClient.iter_embeddings``. Use ``async for``; closing the iterator
        early cancels the batches in flight.
        """
        async with contextlib.aclosing(self._run(self._stream_batches(texts), None)) as results:
            async for vectors in results:
                for vector in vectors:
                    yield vector

    def iter_chunks(
        self, texts: Iterable[str], chunk_size: int
    ) -> AsyncGenerator[list[list[float]], None]:
        """Async ``EmbeddingsClient.iter_chunks``: use ``async for``. Texts are checked at the call."""
        prepared = self._prepare_chunks(texts, chunk_size)
        return self._iter_chunks(prepared, chunk_size)

    async def _iter_chunks(
        self, texts: list[str], chunk_size: int
    ) -> AsyncGenerator[list[list[float]], None]:
        results = self._run(self._chunk_batches(texts, chunk_size), None)
        async with contextlib.aclosing(results):
            for start in range(0, len(texts), chunk_size):
                want = min(chunk_size, len(texts) - start)
                chunk: list[list[float]] = []
                while len(chunk) < want:
                    chunk.extend(await results.__anext__())
                yield chunk

    # -- machinery ------------------------------------------------------------------------

    async def _run(
        self, batches: Iterator[tuple[int, list[str]]], call: _Call | None
    ) -> AsyncGenerator[list[list[float]], None]:
        pending: deque[asyncio.Task[list[list[float]]]] = deque()
        # As in the sync client: in order, but the first failure of any batch ends the call.
        failed: asyncio.Future[asyncio.Task[list[list[float]]]] = (
            asyncio.get_running_loop().create_future()
        )

        def watch(task: asyncio.Task[list[list[float]]]) -> None:
            if not task.cancelled() and task.exception() is not None and not failed.done():
                failed.set_result(task)

        async def next_result() -> list[list[float]]:
            head = pending[0]  # stays pending (and is cancelled on the way out) until done
            either: list[asyncio.Future[Any]] = [head, failed]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not head.done():
                failed.result().result()  # raises the failure
            return pending.popleft().result()

        try:
            for offset, batch in batches:
                task = asyncio.ensure_future(
                    self._embed_batch(batch, offset, call or self._new_call())
                )
                task.add_done_callback(watch)
                pending.append(task)
                while len(pending) >= 2 * self._limiter.limit:
                    yield await next_result()
            while pending:
                yield await next_result()
        finally:
            failed.cancel()
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _embed_batch(self, texts: list[str], offset: int, call: _Call) -> list[list[float]]:
        vectors: list[list[float]] = []
        plan = RequestPlan(texts, offset, lambda: self._learned_batch_limit)
        for part_offset, part in plan:
            got = await self._attempt(part, part_offset, call)
            if got is None:
                plan.refused()
            else:
                vectors.extend(got)
        return vectors

    async def _attempt(
        self, texts: list[str], offset: int, call: _Call
    ) -> list[list[float]] | None:
        body = build_request_body(self.model, texts, self.encoding_format)
        tries = _Tries()
        while True:
            if self.rate_limiter is not None:
                wait = self.rate_limiter.reserve(self._tokens_for_limiter(texts))
                if wait > 0:
                    await _asleep(wait)
            self._check_call(call)
            outcome = await self._send(body, texts, offset, call, tries)
            if outcome.parsed is not None:
                return self._accept(outcome.parsed)
            if outcome.split:
                self._count(splits=1)
                return None
            delay = self._next_delay(outcome, tries, call)
            if tries.after is None:  # a refusal the limit explains waits for a slot instead
                await _asleep(delay)

    async def _loop_state(self) -> _LoopState:
        state = self._state()
        if state.owned and state.closer is None:
            state.closer = _close_at_loop_shutdown(state.http)
            await state.closer.__anext__()  # runs to its yield at once: registers it with the loop
        return state

    async def _send(
        self, body: bytes, texts: list[str], offset: int, call: _Call, tries: _Tries
    ) -> _Outcome:
        state = await self._loop_state()
        request = self._build_request(state.http, body, call)
        exchange = _Exchange(
            state.http, request, state.slots, tries.after, lambda: self._count(requests=1)
        )
        tries.after = None
        try:
            response, content = await exchange.run()
        except httpx.TransportError as err:
            return self._transport_outcome(err)
        # Let a request waiting for the slot just freed go out before this reply is parsed:
        # parsing holds the event loop for milliseconds, the server's time is the scarce one.
        await asyncio.sleep(0)
        return self._absorb(
            self._interpret(response.status_code, response.headers, content, texts, offset),
            exchange.absorbed,
        )
