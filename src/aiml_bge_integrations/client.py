"""The request core: ``EmbeddingsClient`` and ``AsyncEmbeddingsClient`` over httpx.

This is the only module that does network I/O. The request loop is written once, in
``_engine`` (a generator of wait / send steps that does no I/O); every decision it takes comes
from the pure modules. The two clients here only drive it: the sync one sends and waits on
threads, the async one awaits on event loops. Both read a reply within bounds of size and
time derived from its request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import os
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
from dataclasses import dataclass
from types import EllipsisType, TracebackType
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

import httpx

from . import _retry
from ._batching import apply_long_text_policy, check_texts, collect_texts, iter_checked_chunks
from ._concurrency import Flights, Limiter, Ticket
from ._constants import ERROR_BODY_LIMIT, LOOPBACK_HOSTS, USER_AGENT, batches_in_flight
from ._engine import Call, Done, Engine, Failure, Reply, Send, Step, stopped_error
from ._outcome import Context, ReplyTooLarge, WallTimeout
from ._secrets import resolve_key
from ._settings import (
    CLIENT_SETTINGS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    SecretValue,
    check_settings,
    expected_dimension,
    int_at_least,
)
from ._usage import RateLimiter, Usage, UsageCounter
from .errors import ConfigurationError

__all__ = ["AsyncEmbeddingsClient", "EmbeddingsClient", "RateLimiter", "Usage"]

_T = TypeVar("_T")
_Http = TypeVar("_Http", httpx.Client, httpx.AsyncClient)
_Answer = Reply | Failure | None
_Steps = Generator[Step, _Answer, None]


class _SyncGate:
    """Slots for the sync client's threads: at most the current limit in flight."""

    def __init__(self, limiter: Limiter) -> None:
        self._flights = Flights(limiter)
        self._cond = threading.Condition()

    def acquire(self, after: int | None, stopped: threading.Event) -> Ticket | None:
        """A slot, or None once ``stopped`` is set (the call was given up: nothing is sent)."""
        with self._cond:
            while not stopped.is_set():
                ticket = self._flights.take(after)
                if ticket is not None:
                    return ticket
                # Woken by every release; the short timeout also sees a call stopped meanwhile.
                self._cond.wait(0.05)
        return None

    def release(self, ticket: Ticket, status: int | None) -> int | None:
        with self._cond:
            mark = self._flights.give_back(ticket, status)
            self._cond.notify_all()
        return mark


class _AsyncGate:
    """Slots for the requests of one event loop: at most the current limit in flight."""

    def __init__(self, limiter: Limiter) -> None:
        self._flights = Flights(limiter)
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, after: int | None = None) -> Ticket:
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

    def release(self, ticket: Ticket, status: int | None) -> int | None:
        mark = self._flights.give_back(ticket, status)
        # Everyone waiting looks again: the limit may have grown by more than one.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        return mark


class _Body:
    """A reply's body, read within its request's bounds of size and time.

    A 200 reply past ``Send.limit`` bytes (as received or as decoded) raises ``ReplyTooLarge``
    and is read no further; an error reply is cut at ``ERROR_BODY_LIMIT`` (its message is at
    the start). A request past ``Send.timeout`` since it was sent raises ``WallTimeout``: the
    time is checked between chunks, and each read of the socket is given no more than the
    time left (httpcore reads its timeouts from the request before every read), so a server
    that trickles its reply holds a call no longer than its timeout.
    """

    def __init__(
        self, request: httpx.Request, response: httpx.Response, step: Send, started: float
    ) -> None:
        self._request, self._response = request, response
        self._cut = response.status_code != 200
        self._limit = ERROR_BODY_LIMIT if self._cut else step.limit
        self._end = started + step.timeout
        self._parts: list[bytes] = []
        self._size = 0
        declared = response.headers.get("content-length", "")
        if not self._cut and declared.isdigit() and int(declared) > self._limit:
            raise self._too_large()
        self._check_time()

    def add(self, chunk: bytes) -> bool:
        """Keep ``chunk``; False once an error reply's bound is reached (read no more)."""
        room = self._limit - self._size
        if len(chunk) > room or self._response.num_bytes_downloaded > self._limit:
            if not self._cut:
                raise self._too_large()
            self._parts.append(chunk[:room])
            return False
        self._parts.append(chunk)
        self._size += len(chunk)
        self._check_time()
        return True

    def reply(self, absorbed: int | None) -> Reply:
        return Reply(
            self._response.status_code, self._response.headers, b"".join(self._parts), absorbed
        )

    def _too_large(self) -> ReplyTooLarge:
        headers = self._response.headers
        return ReplyTooLarge(
            self._limit, headers.get("x-inference-id") or headers.get("x-request-id")
        )

    def _check_time(self) -> None:
        left = self._end - time.monotonic()
        if left <= 0:
            raise WallTimeout("the reply was still arriving when the request's time ran out")
        timeouts = self._request.extensions.get("timeout")
        if isinstance(timeouts, dict):
            self._request.extensions["timeout"] = {**timeouts, "read": left}


def _failure(err: Exception) -> Failure:
    """What a driver caught, as the engine takes it (see ``_outcome.transport_outcome``)."""
    if isinstance(err, ReplyTooLarge):
        return Failure(err, "too_large")
    if isinstance(err, WallTimeout | httpx.TimeoutException):
        return Failure(err, "timeout")
    if isinstance(err, httpx.DecodingError):
        return Failure(err, "decoding")
    return Failure(err, "connection")


# Everything a request can raise short of a reply: httpx maps httpcore's and anyio's errors
# (and ssl's, and the socket's) to httpx.TransportError; a body that does not decode as its
# Content-Encoding says is httpx.DecodingError; both are httpx.RequestError.
_FAILURES = (httpx.RequestError, ReplyTooLarge, WallTimeout)


class _BaseClient(Generic[_Http]):
    """Settings, identity, usage and the engine shared by both clients."""

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
        max_response_bytes: int | None = None,
        rate_limiter: RateLimiter | None = None,
        http_client: _Http | None = None,
    ) -> None:
        """Check every setting (see ``_settings.SETTINGS``); opens no connection yet."""
        given = locals()
        # Checks and defaults come from the one definition of every setting (_settings).
        values = check_settings({name: given[name] for name in CLIENT_SETTINGS})
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
        self.max_retries: int = values["max_retries"]
        self.timeout: float = values["timeout"]
        """Seconds for one HTTP request, from sending it to the last byte of its reply."""
        self.deadline: float | None = values["deadline"]
        """Seconds for one whole call across retries (None: no overall limit)."""
        self.query_instruction: str | None = values["query_instruction"]
        """Prefix for ``embed_query`` (BGE English models: the retrieval instruction)."""
        self.encoding_format: str | None = values["encoding_format"]
        self.long_text: str = values["long_text"]
        self.allow_insecure_http: bool = values["allow_insecure_http"]
        self.max_response_bytes: int | None = values["max_response_bytes"]
        """The most bytes read of one reply (None: derived from each request)."""
        self.default_headers: dict[str, str] = values["default_headers"] or {}
        self._check_transport_security()
        rpm, tpm = values["requests_per_minute"], values["tokens_per_minute"]
        self.rate_limiter = rate_limiter or (RateLimiter(rpm, tpm) if rpm or tpm else None)
        self.retry_policy = _retry.RetryPolicy(max_retries=self.max_retries)
        """How often and how long to wait before retrying; its ``sleep`` and ``asleep`` are the
        waits between attempts (a test seam: record delays instead of sleeping)."""
        self._injected_http: _Http | None = http_client
        self._injected_limiter = rate_limiter
        self._closed = False
        self._usage = UsageCounter()
        ctx = Context(
            self.model, self.base_url, self._key, self.timeout, expected_dimension(self.model)
        )
        self._engine = Engine(
            ctx,
            encoding_format=self.encoding_format,
            query_instruction=self.query_instruction,
            timeout=self.timeout,
            max_response_bytes=self.max_response_bytes,
            policy=self.retry_policy,
            rate_limiter=self.rate_limiter,
            usage=self._usage,
        )
        # No Authorization here: the key enters a request's headers as the request is built.
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            **self.default_headers,
        }
        # What a copy is built from: the settings as resolved here, with the key object itself
        # (a pickle writes only its fingerprint, see _secrets).
        self._init_kwargs: dict[str, Any] = {
            **{name: values[name] for name in CLIENT_SETTINGS},
            "api_key": self._key,
        }
        self._pid = os.getpid()
        self._start_process()

    def _start_process(self) -> None:
        """What belongs to one process: the limiter, the calls running; the I/O of subclasses."""
        self._limiter = Limiter(self.max_concurrency, self.adaptive_concurrency)
        self._live_calls: weakref.WeakSet[threading.Event] = weakref.WeakSet()

    def _this_process(self) -> None:
        # A forked child has none of its parent's threads, and its copies of the parent's
        # connections and locks are not its own: it starts afresh (the key and usage kept).
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._usage.after_fork()
            self._engine.after_fork()
            self._start_process()

    # -- identity -----------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r}, "
            f"batch_size={self.batch_size}, max_concurrency={self.max_concurrency}, "
            f"max_retries={self.max_retries}, api_key=SecretKey('**********'))"
        )

    @property
    def is_closed(self) -> bool:
        """True once ``close()`` (``aclose()``) has been called and no call has run since."""
        return self._closed

    # -- copies ----------------------------------------------------------------------------
    # A copy is a new client with the same settings and the same key: its own connection pool
    # (unless the caller gave one) and usage totals from zero. In memory (copy, deepcopy) it
    # shares the key object and what the caller passed in (http_client, rate_limiter); a
    # pickle carries the key's fingerprint only (see _secrets) and leaves those objects behind.

    def __copy__(self) -> Any:
        cls: Any = type(self)
        return cls(
            http_client=self._injected_http,
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
        return self._usage.snapshot(self._limiter.limit, self._limiter.peak)

    def reset_usage(self) -> Usage:
        """Return the totals so far and start counting from zero (the limits are not totals: kept)."""
        return self._usage.snapshot(self._limiter.limit, self._limiter.peak, reset=True)

    @property
    def effective_batch_size(self) -> int:
        """``batch_size``, or the smaller limit a server has stated."""
        limit = self._engine.learned_batch_limit
        return min(self.batch_size, limit) if limit else self.batch_size

    # -- preparing texts ------------------------------------------------------------------

    def _check_transport_security(self) -> None:
        # The URL's shape is checked with base_url itself (_settings); this needs two settings.
        parts = urlsplit(self.base_url)
        host = (parts.hostname or "").lower()
        loopback = host in LOOPBACK_HOSTS or _is_loopback_ip(host)
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

    def _prepare_chunks(self, texts: object, chunk_size: object) -> list[str]:
        int_at_least(1)("chunk_size", chunk_size)
        return self._prepare_documents(texts)

    def _new_call(self, cancelled: threading.Event | None = None) -> Call:
        self._this_process()
        self._closed = False
        call = self._engine.new_call(self.deadline, cancelled)
        # close() stops every call still running, so no worker sends or sleeps on after it.
        self._live_calls.add(call.cancelled)
        return call

    def _stop_calls(self) -> None:
        self._closed = True
        for stop in list(self._live_calls):
            stop.set()

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

    def _stream_batches(self, texts: object) -> Iterator[tuple[int, list[str]]]:
        for offset, chunk in iter_checked_chunks(texts, self.effective_batch_size):
            yield offset, apply_long_text_policy(chunk, self.model, self.long_text, offset)

    def _steps(self, texts: list[str], offset: int, call: Call) -> _Steps:
        return self._engine.batch(texts, offset, call)

    def _build_request(self, http: _Http, step: Send) -> httpx.Request:
        headers = {
            **self._headers,
            "Authorization": f"Bearer {self._key.get()}",
            "X-Client-Request-Id": uuid.uuid4().hex,
        }
        return http.build_request(
            "POST", self._engine.ctx.url, content=step.body, headers=headers, timeout=step.timeout
        )


class EmbeddingsClient(_BaseClient[httpx.Client]):
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
    share between threads, and works in a process forked from the one that made it.
    """

    def _start_process(self) -> None:
        super()._start_process()
        if self._injected_http is None:
            # A forked child leaves its parent's pool alone (closing it would close the
            # parent's connections too) and opens its own.
            self._http = _own_pool(httpx.Client, self.max_concurrency, self.base_url)
        else:
            self._http = self._injected_http
        self._slots = _SyncGate(self._limiter)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool (if the client made it) and the worker threads.

        Calls still running are stopped: their workers send nothing more, wake from any
        backoff at once and stop reading a reply at its next chunk.
        """
        self._stop_calls()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._injected_http is None:
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
        out: list[list[float]] = []
        # Closed on the way out, even when ``progress`` raises: batches not yet sent are dropped.
        with contextlib.closing(self._run(self._batches(prepared), prepared)) as results:
            for vectors in results:
                out.extend(vectors)
                _report(progress, vectors)
        return out

    def embed_query(self, text: str) -> list[float]:
        """The vector of one search query, with ``query_instruction`` put in front of it."""
        query = self._prepare_query(text)
        call = self._new_call()
        return self._drive(self._steps([query], 0, call), call)[0]

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
        return _chunked(
            self._run(self._chunk_batches(prepared, chunk_size), None), prepared, chunk_size
        )

    # -- machinery ------------------------------------------------------------------------

    def _drive(self, steps: _Steps, call: Call) -> list[list[float]]:
        step = next(steps)
        while not isinstance(step, Done):
            step = steps.send(
                self._send(step, call) if isinstance(step, Send) else self._wait(step.seconds, call)
            )
        return step.vectors

    def _wait(self, seconds: float, call: Call) -> _Answer:
        """Wait ``seconds`` (the answer to a ``Wait`` is None)."""
        if self.retry_policy.sleep is not None:
            self.retry_policy.sleep(seconds)
        else:  # a call stopped meanwhile wakes its workers at once
            call.cancelled.wait(seconds)
        return None

    def _send(self, step: Send, call: Call) -> Reply | Failure:
        http, slots = self._http, self._slots
        request = self._build_request(http, step)
        ticket = slots.acquire(step.after, call.cancelled)
        if ticket is None:  # the call was stopped while this waited for a slot
            raise stopped_error()
        status: int | None = None
        started = time.monotonic()
        try:
            try:
                response = http.send(request, stream=True)
                status = response.status_code
            finally:
                absorbed = slots.release(ticket, status)
            # The slot is free once the reply has begun: the server is done with the request,
            # and another worker sends the next one while this body is still arriving.
            try:
                body = _Body(request, response, step, started)
                for chunk in response.iter_bytes():
                    if call.cancelled.is_set():
                        raise stopped_error()
                    if not body.add(chunk):
                        break
            finally:
                response.close()
                _release(response)
        except _FAILURES as err:
            return _failure(err)
        return body.reply(absorbed)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=batches_in_flight(self.max_concurrency),
                    thread_name_prefix="aiml-bge",
                )
            return self._pool

    def _run(
        self, batches: Iterator[tuple[int, list[str]]], whole: list[str] | None
    ) -> Generator[list[list[float]], None, None]:
        """Embed batches concurrently, yielding each batch's vectors in order.

        ``whole``: the call's texts, one deadline for all its batches; ``None`` gives each batch
        its own deadline (streaming). Either way, giving up stops the batches not yet sent.
        """
        if whole is not None and not whole:
            return
        shared = self._new_call()

        def embed(batch: list[str], offset: int) -> list[list[float]]:
            call = shared if whole is not None else self._new_call(shared.cancelled)
            return self._drive(self._steps(batch, offset, call), call)

        if self.max_concurrency == 1:
            for offset, batch in batches:
                yield embed(batch, offset)
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
                fut = pool.submit(embed, batch, offset)
                fut.add_done_callback(watch)
                pending.append(fut)
                # The pool's threads follow the current limit.
                while len(pending) >= batches_in_flight(self._limiter.limit):
                    yield next_result()
            while pending:
                yield next_result()
        finally:
            shared.cancelled.set()
            for fut in pending:
                fut.cancel()


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


class AsyncEmbeddingsClient(_BaseClient[httpx.AsyncClient]):
    """Embeds texts with an asynchronous httpx client; up to ``max_concurrency`` requests in flight.

    Usage::

        async with AsyncEmbeddingsClient() as client:
            vectors = await client.embed_documents(texts)
            query = await client.embed_query("a question")

    Same settings as ``EmbeddingsClient``. The limit on requests in flight holds across every
    concurrent call on the client. The client can be used from successive event loops (as
    ``asyncio.run`` twice, or notebooks, do): each loop gets its own connection pool, and so
    does a forked child's loop. Cancelling a call cancels its requests and leaves the client
    usable.
    """

    def _start_process(self) -> None:
        super()._start_process()
        # A forked child leaves its parent's pools alone (closing them would close the
        # parent's connections too).
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._states_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close this event loop's connection pool (pools of loops already closed are dropped)."""
        self._stop_calls()
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
                    httpx.AsyncClient, self.max_concurrency, self.base_url
                )
                state = _LoopState(_AsyncGate(self._limiter), http, self._injected_http is None)
                self._states[loop] = state
            return state

    async def _loop_state(self) -> _LoopState:
        state = self._state()
        if state.owned and state.closer is None:
            state.closer = _close_at_loop_shutdown(state.http)
            await state.closer.__anext__()  # runs to its yield at once: registers it with the loop
        return state

    # -- public API -----------------------------------------------------------------------

    async def embed_documents(
        self, texts: Iterable[str], *, progress: Callable[[int], None] | None = None
    ) -> list[list[float]]:
        """One vector per text, in the order given. Every text is checked before anything is sent."""
        prepared = self._prepare_documents(texts)
        out: list[list[float]] = []
        # ``async for`` does not close the generator when its body raises (or the caller
        # closes ``iter_embeddings``): aclosing cancels the batches in flight before returning.
        async with contextlib.aclosing(self._run(self._batches(prepared), prepared)) as results:
            async for vectors in results:
                out.extend(vectors)
                _report(progress, vectors)
        return out

    async def embed_query(self, text: str) -> list[float]:
        """The vector of one search query, with ``query_instruction`` put in front of it."""
        query = self._prepare_query(text)
        return (await self._drive(self._steps([query], 0, self._new_call())))[0]

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
        return _achunked(
            self._run(self._chunk_batches(prepared, chunk_size), None), prepared, chunk_size
        )

    # -- machinery ------------------------------------------------------------------------

    async def _drive(self, steps: _Steps) -> list[list[float]]:
        step = next(steps)
        while not isinstance(step, Done):
            step = steps.send(
                await self._send(step) if isinstance(step, Send) else await self._wait(step.seconds)
            )
        return step.vectors

    async def _wait(self, seconds: float) -> _Answer:
        """Wait ``seconds`` (the answer to a ``Wait`` is None)."""
        await (self.retry_policy.asleep or asyncio.sleep)(seconds)
        return None

    async def _send(self, step: Send) -> Reply | Failure:
        state = await self._loop_state()
        request = self._build_request(state.http, step)
        exchange = _Exchange(state.http, request, state.slots, step)
        try:
            reply = await exchange.run()
        except _FAILURES as err:
            return _failure(err)
        # Let a request waiting for the slot just freed go out before this reply is parsed:
        # parsing holds the event loop for milliseconds, the server's time is the scarce one.
        await asyncio.sleep(0)
        return reply

    async def _run(
        self, batches: Iterator[tuple[int, list[str]]], whole: list[str] | None
    ) -> AsyncGenerator[list[list[float]], None]:
        if whole is not None and not whole:
            return
        shared = self._new_call()
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
                call = shared if whole is not None else self._new_call(shared.cancelled)
                task = asyncio.ensure_future(self._drive(self._steps(batch, offset, call)))
                task.add_done_callback(watch)
                pending.append(task)
                while len(pending) >= batches_in_flight(self._limiter.limit):
                    yield await next_result()
            while pending:
                yield await next_result()
        finally:
            failed.cancel()
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)


class _Exchange:
    """One request and its whole reply, in a task of its own that is never cancelled natively.

    httpcore protects its connection pool's bookkeeping from cancellation with anyio shields,
    which a plain ``Task.cancel()`` goes through: a request cancelled while its reply is being
    closed can leave a pool slot taken for good (encode/httpcore#1093). So the request runs in
    an inner task inside an anyio cancel scope. Cancelling the caller cancels that scope,
    which anyio delivers around httpcore's shields, and waits for the inner task to finish
    cleaning up. The scope's deadline is the request's timeout, from sending to the last
    byte. The request slot is held from sending until the reply's headers arrive.
    """

    def __init__(
        self, http: httpx.AsyncClient, request: httpx.Request, slots: _AsyncGate, step: Send
    ) -> None:
        self._http, self._request, self._slots, self._step = http, request, slots, step
        self._scope: Any = None
        self._caller_cancelled = False

    async def run(self) -> Reply:
        inner = asyncio.ensure_future(self._inner())
        try:
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            self._caller_cancelled = True
            if self._scope is not None:
                self._scope.cancel()
            else:  # not started: nothing of httpcore's to protect
                inner.cancel()
            with contextlib.suppress(BaseException):
                await inner  # the cleanup; a second cancellation abandons it
            raise

    async def _inner(self) -> Reply:
        import anyio  # httpx's own dependency; imported only once a request is made

        with anyio.CancelScope() as scope:
            self._scope = scope
            ticket = await self._slots.acquire(self._step.after)
            started = time.monotonic()
            scope.deadline = anyio.current_time() + self._step.timeout
            status: int | None = None
            try:
                response = await self._http.send(self._request, stream=True)
                status = response.status_code
            finally:
                absorbed = self._slots.release(ticket, status)
            # The slot is free once the reply has begun: the server is done with the request,
            # and the next one goes out while this body is still arriving.
            try:
                body = _Body(self._request, response, self._step, started)
                async for chunk in response.aiter_bytes():
                    if not body.add(chunk):
                        break
            finally:
                await response.aclose()
                _release(response)
            return body.reply(absorbed)
        if not self._caller_cancelled:
            raise WallTimeout("the reply was still arriving when the request's time ran out")
        raise asyncio.CancelledError  # the scope was cancelled: the caller is being cancelled


def _report(progress: Callable[[int], None] | None, vectors: list[list[float]]) -> None:
    if progress is not None:
        progress(len(vectors))


def _chunked(
    results: Generator[list[list[float]], None, None], texts: list[str], chunk_size: int
) -> Generator[list[list[float]], None, None]:
    with contextlib.closing(results):
        for start in range(0, len(texts), chunk_size):
            want = min(chunk_size, len(texts) - start)
            chunk: list[list[float]] = []
            while len(chunk) < want:
                chunk.extend(next(results))
            yield chunk


async def _achunked(
    results: AsyncGenerator[list[list[float]], None], texts: list[str], chunk_size: int
) -> AsyncGenerator[list[list[float]], None]:
    async with contextlib.aclosing(results):
        for start in range(0, len(texts), chunk_size):
            want = min(chunk_size, len(texts) - start)
            chunk: list[list[float]] = []
            while len(chunk) < want:
                chunk.extend(await results.__anext__())
            yield chunk


def _own_pool(cls: type[_Http], max_concurrency: int, base_url: str) -> _Http:
    """The connection pool a client builds when given none.

    ``batches_in_flight(max_concurrency)`` connections, all kept alive: a reply's body is
    still being read after its slot is free and the next request has gone out. TLS is
    verified. Each request carries its own timeout.
    """
    connections = batches_in_flight(max_concurrency)
    return cls(
        verify=_no_tls_context() if base_url[:5].lower() == "http:" else _ssl_context(),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
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


def _rebuild(cls: type[_T], kwargs: dict[str, Any]) -> _T:
    return cls(**kwargs)
