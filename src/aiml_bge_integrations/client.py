"""The request core: ``EmbeddingsClient`` and ``AsyncEmbeddingsClient`` over httpx.

This module and its I/O parts in ``_transport`` are the only ones that do network I/O. The
request loop is written once, in ``_engine`` (a generator of wait / send steps that does no
I/O); every decision it takes comes from the pure modules. The two clients here only drive it: the sync one sends and waits on
threads, the async one awaits on event loops. Both read a reply within bounds of size and
time derived from its request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
import warnings
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
from dataclasses import dataclass, field
from types import EllipsisType, TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import httpx

from . import _retry
from ._concurrency import Limiter
from ._constants import USER_AGENT, batches_in_flight
from ._engine import Call, Done, Engine, Failure, Reply, Send, Step, stopped_error
from ._models import token_policy_notice
from ._outcome import Context
from ._secrets import resolve_key
from ._settings import (
    BGE_MAX_TOKENS,
    CLIENT_SETTINGS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    SecretValue,
    check_settings,
    expected_dimension,
    is_bge_model,
    same_model,
)
from ._tally import NO_ATTEMPT, Tally, collecting
from ._telemetry import AttemptSpan, CallSpan, Telemetry, make_telemetry
from ._transport import (
    FAILURES,
    AsyncGate,
    BoundedBody,
    Exchange,
    InOrder,
    LoopState,
    SyncGate,
    Vectors,
    check_transport_security,
    close_at_loop_shutdown,
    failure,
    own_pool,
    release,
    with_end,
)
from ._usage import RateLimiter, Usage, UsageCounter
from ._warnings import warn_user
from .errors import ItemRejectedError, ModelNotFoundError

if TYPE_CHECKING:
    from ._cache import CachedBatch, EmbeddingCache

__all__ = ["AsyncEmbeddingsClient", "EmbeddingsClient", "RateLimiter", "Usage"]

_T = TypeVar("_T")
_Http = TypeVar("_Http", httpx.Client, httpx.AsyncClient)
_Answer = Reply | Failure | None
_Steps = Generator[Step, _Answer, None]
_NO_TALLY: contextlib.nullcontext[None] = contextlib.nullcontext()


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
        document_instruction: str | EllipsisType | None = ...,
        query_input_type: str | None = None,
        document_input_type: str | None = None,
        allow_blank_texts: bool | EllipsisType = ...,
        default_headers: Mapping[str, str] | None = None,
        encoding_format: Literal["float", "base64"] | None = None,
        long_text: Literal["truncate", "error", "none"] = "truncate",
        allow_insecure_http: bool = False,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_response_bytes: int | None = None,
        cache: str | None = None,
        trace_requests: bool = False,
        rate_limiter: RateLimiter | None = None,
        http_client: _Http | None = None,
    ) -> None:
        """Check every setting (see ``_settings.SETTINGS``); opens no connection yet."""
        given = locals()
        # Checks and defaults come from the one definition of every setting (_settings).
        values = check_settings({name: given[name] for name in CLIENT_SETTINGS})
        self._key = resolve_key(values["api_key"], values["base_url"])
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
        self.document_instruction: str | None = values["document_instruction"]
        """Prefix for documents (e5: ``"passage: "``; most models: none)."""
        self.query_input_type: str | None = values["query_input_type"]
        """The request field ``input_type`` sent with queries (None: not sent)."""
        self.document_input_type: str | None = values["document_input_type"]
        """The request field ``input_type`` sent with documents (None: not sent)."""
        self.allow_blank_texts: bool = values["allow_blank_texts"]
        """Whether empty and whitespace-only texts are sent (else refused before sending)."""
        self.encoding_format: str | None = values["encoding_format"]
        self.long_text: str = values["long_text"]
        self.allow_insecure_http: bool = values["allow_insecure_http"]
        self.max_response_bytes: int | None = values["max_response_bytes"]
        """The most bytes read of one reply (None: derived from each request)."""
        self.default_headers: dict[str, str] = values["default_headers"] or {}
        self.cache: str | None = values["cache"]
        """Path of the embedding cache (None: none); opened at the first call."""
        self.trace_requests: bool = values["trace_requests"]
        """Whether each HTTP attempt gets its own OpenTelemetry span."""
        check_transport_security(self.base_url, self.allow_insecure_http)
        _notice_token_policy(self.model, self.long_text)
        rpm, tpm = values["requests_per_minute"], values["tokens_per_minute"]
        self.rate_limiter = rate_limiter or (RateLimiter(rpm, tpm) if rpm or tpm else None)
        self.retry_policy = _retry.RetryPolicy(max_retries=self.max_retries)
        """How often and how long to wait before retrying; its ``sleep`` and ``asleep`` are the
        waits between attempts (a test seam: record delays instead of sleeping)."""
        self._injected_http: _Http | None = http_client
        self._injected_limiter = rate_limiter
        self._closed = False
        self._usage = UsageCounter()
        self.telemetry: Telemetry = make_telemetry(trace_requests=self.trace_requests)
        """Where calls are reported: OpenTelemetry's global providers when its API is
        installed, else a no-op (see docs/observability.md)."""
        ctx = Context(self.model, self.base_url, self._key, expected_dimension(self.model))
        self._engine = Engine(
            ctx,
            batch_size=self.batch_size,
            long_text=self.long_text,
            encoding_format=self.encoding_format,
            query_instruction=self.query_instruction,
            document_instruction=self.document_instruction,
            input_types=(self.query_input_type, self.document_input_type),
            allow_blank=self.allow_blank_texts,
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
        self._cache_file: EmbeddingCache | None = None
        self._cache_lock = threading.Lock()
        self._feed: bytes | EllipsisType | None = ...  # the deprecation feed: not read yet
        self._feed_lock = threading.Lock()
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
    def served_model(self) -> str | None:
        """The model the server's last reply named (its ``model`` field); None before one has."""
        return self._engine.served_model

    @property
    def effective_batch_size(self) -> int:
        """``batch_size``, or the smaller limit a server has stated."""
        return self._engine.batch_size()

    # -- preparing texts ------------------------------------------------------------------

    def _tally(self, inputs: int | None, side: str, current: bool = True) -> Tally | None:
        """The telemetry of one logical call (None when telemetry is off and nobody collects)."""
        sink = collecting()
        if self.telemetry.enabled:
            span = self.telemetry.start_call(
                model=self.model,
                base_url=self.base_url,
                encoding_format=self.encoding_format,
                inputs=inputs,
                side=side,
            )
        elif sink is None:
            return None
        else:
            span = CallSpan()  # the no-op: figures only
        tally = Tally(span, lambda: self._limiter.limit, current)
        if sink is not None:
            sink.append(tally)
        return tally

    def _new_call(
        self, cancelled: threading.Event | None = None, tally: Tally | None = None
    ) -> Call:
        self._this_process()
        if self._closed:  # a closed client opens what it needs again, as on first use
            self._closed = False
            self._reopen()
        call = self._engine.new_call(self.deadline, cancelled, tally)
        # close() stops every call still running, so no worker sends or sleeps on after it.
        self._live_calls.add(call.cancelled)
        return call

    def _reopen(self) -> None:
        """Open again what ``close()`` closed (the async client opens a pool per loop anyway)."""

    def _stop_calls(self) -> None:
        self._this_process()  # a forked child closes what is its own, never its parent's
        self._closed = True
        for stop in list(self._live_calls):
            stop.set()

    def _steps(self, texts: list[str], offset: int, call: Call, query: bool = False) -> _Steps:
        # An empty batch (a cached stream's window with nothing to send) sends nothing.
        return self._engine.batch(texts, offset, call, query=query) if texts else _no_steps()

    # -- the embedding cache ----------------------------------------------------------------
    # With ``cache`` set, a call looks its texts up first (after the prompt and the long-text
    # policy: the texts as they would be sent), sends each text the cache does not hold once,
    # and stores what came back. A key is made of everything that changes a vector: the text,
    # the model, the side and its prompt, the long-text policy and limit, the encoding and the
    # server's root (see _cache.cache_key). The model is the one asked for, unless a reply to
    # this client has named another one: then the model the server says it serves.

    def _store(self) -> EmbeddingCache:
        """The cache file, opened at the first call (a file that is no cache is refused then)."""
        from ._cache import EmbeddingCache

        with self._cache_lock:
            if self._cache_file is None:
                assert self.cache is not None
                self._cache_file = EmbeddingCache(self.cache)
            return self._cache_file

    def _key_model(self) -> str:
        served = self._engine.served_model
        return self.model if served is None or same_model(served, self.model) else served

    def _cache_keys(self, texts: list[str], side: str, model: str) -> list[str]:
        from ._cache import cache_key

        # The side's prompt and input type change its vectors (a query's prompt is also in
        # its text by now; a document's is put in front as its batch is sent).
        query = side == "query"
        prompt = self.query_instruction if query else self.document_instruction
        input_type = self.query_input_type if query else self.document_input_type
        limit = BGE_MAX_TOKENS if is_bge_model(self.model) else None
        return [
            cache_key(
                text=text,
                model_served=model,
                side=side,
                prompt=prompt,
                input_type=input_type,
                long_text=self.long_text,
                token_limit=limit,
                dimension=None,
                server_root=self.base_url,
                encoding=self.encoding_format,
            )
            for text in texts
        ]

    def cached_documents(self, texts: Iterable[str]) -> int:
        """How many of the distinct ``texts`` the cache holds as documents for these settings.

        The texts are keyed as ``embed_documents`` keys them (``document_instruction`` in front,
        the long-text policy applied) and looked up read-only: nothing is sent, and the cache
        file is not written, not even the time an entry was last used. 0 without ``cache`` or
        before its file exists; texts the long-text policy refuses (``long_text="error"``) are
        not counted. Keys use the model as requested (a reply naming another model is known
        only once one has come).
        """
        from ._batching import LongTextWarning
        from ._cache import count_held
        from .errors import TextTooLongError

        if self.cache is None:
            return 0
        keys: set[str] = set()
        model = self._key_model()
        chunk: list[str] = []

        def add(texts: list[str]) -> None:
            while texts:
                try:
                    keys.update(
                        self._cache_keys(self._engine._as_documents(texts), "document", model)
                    )
                    return
                except TextTooLongError as err:
                    refused = set(err.indices)
                    texts = [t for i, t in enumerate(texts) if i not in refused]

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LongTextWarning)
            for text in texts:
                chunk.append(text)
                if len(chunk) == 1024:
                    add(chunk)
                    chunk = []
            add(chunk)
        return count_held(self.cache, keys)

    def _to_send(self, plan: CachedBatch, texts: list[str], tally: Tally | None) -> list[str]:
        """The texts ``plan`` says to send; counts its hits and misses."""
        todo = [texts[i] for i in plan.to_send]
        self._usage.count(
            cache_hits=plan.hits, cache_misses=plan.misses, texts=len(texts) - len(todo)
        )
        if tally is not None:
            tally.usage.count(texts=len(texts) - len(todo))
            tally.cache_hits = (tally.cache_hits or 0) + plan.hits
            tally.cache_misses = (tally.cache_misses or 0) + plan.misses
        return todo

    def _new_items(
        self, plan: CachedBatch, todo: list[str], sent: list[list[float]], side: str, model: str
    ) -> list[tuple[str, list[float]]]:
        """What to store: under the model the replies named, if not the one looked up."""
        now = self._key_model()
        if now == model:
            return plan.new_items(sent)
        return list(zip(self._cache_keys(todo, side, now), sent, strict=True))

    # -- the deprecation feed -----------------------------------------------------------------
    # After a 404 for the model the feed (GET {base_url}/models/deprecations, public) is read
    # once per client, without the key and with a short timeout; what it says of the model is
    # added to the ModelNotFoundError. Any failure to read it leaves the error as it was.

    def _feed_request(self, http: _Http) -> httpx.Request:
        from ._deprecations import FEED_TIMEOUT, deprecation_feed_url

        request = http.build_request(
            "GET",
            deprecation_feed_url(self.base_url),
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            timeout=FEED_TIMEOUT,
        )
        request.headers.pop("Authorization", None)  # an injected client's own defaults
        return request

    def _name_replacement(self, err: ModelNotFoundError, feed: bytes | None) -> None:
        from ._deprecations import parse_deprecation_feed, replacement_message

        note = replacement_message(self.model, parse_deprecation_feed(feed)) if feed else None
        if note and note not in err.message:
            err.message = f"{err.message} {note}"
            err.args = (err.message,)

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
            self._http = own_pool(httpx.Client, self.max_concurrency, self.base_url)
        else:
            self._http = self._injected_http
        self._slots = SyncGate(self._limiter)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _reopen(self) -> None:
        with self._pool_lock:
            if self._injected_http is None and self._http.is_closed:
                self._http = own_pool(httpx.Client, self.max_concurrency, self.base_url)

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
        prepared = self._engine.documents(texts)
        if self.cache is not None:
            with _within(tally := self._tally(len(prepared), "document")):
                return self._embed_cached(prepared, "document", tally, progress)
        out: list[list[float]] = []
        # Closed on the way out, even when ``progress`` raises: batches not yet sent are dropped.
        with (
            _within(tally := self._tally(len(prepared), "document")),
            contextlib.closing(
                self._run(self._engine.batches(prepared), prepared, tally)
            ) as results,
        ):
            for vectors in results:
                out.extend(vectors)
                _report(progress, vectors)
        return out

    def embed_query(self, text: str) -> list[float]:
        """The vector of one search query: ``query_instruction`` in front, ``query_input_type`` sent."""
        query = self._engine.query(text)
        with _within(tally := self._tally(1, "query")):
            if self.cache is not None:
                return self._embed_cached([query], "query", tally)[0]
            call = self._new_call(tally=tally)
            return self._drive(self._steps([query], 0, call, query=True), call)[0]

    def iter_embeddings(self, texts: Iterable[str]) -> Iterator[list[float]]:
        """Stream vectors in input order, reading ``texts`` lazily with a bounded number of batches in flight.

        Memory stays bounded by ``2 * max_concurrency`` batches however long the input is. Each
        batch is checked just before it is sent, so a bad item late in the input raises when
        its batch is reached, after the vectors before it were yielded. The deadline, if set,
        applies to each batch.
        """
        if self.cache is not None:
            yield from self._cached_stream(texts)
            return
        with (
            _within(tally := self._tally(None, "document", current=False)),
            contextlib.closing(
                self._run(self._engine.stream_batches(texts), None, tally)
            ) as results,
        ):
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
        prepared = self._engine.chunks(texts, chunk_size)
        tally = self._tally(len(prepared), "document", current=False)
        if self.cache is not None:
            return self._cached_chunks(prepared, chunk_size, tally)
        return _chunked(
            self._run(self._engine.chunk_batches(prepared, chunk_size), None, tally),
            prepared,
            chunk_size,
            tally,
        )

    # -- machinery ------------------------------------------------------------------------

    def _embed_cached(
        self,
        texts: list[str],
        side: str,
        tally: Tally | None,
        progress: Callable[[int], None] | None = None,
        offset: int = 0,
    ) -> list[list[float]]:
        """``texts`` (at ``offset`` in the call) through the cache: only what it lacks is sent."""
        from ._cache import lookup_batch

        store, model = self._store(), self._key_model()
        plan = lookup_batch(store, self._cache_keys(texts, side, model))
        todo = self._to_send(plan, texts, tally)
        if progress is not None and len(todo) < len(texts):
            progress(len(texts) - len(todo))
        sent: list[list[float]] = []
        with (
            _renumbered(plan.to_send, offset),
            contextlib.closing(self._run(self._engine.batches(todo), todo, tally)) as results,
        ):
            for vectors in results:
                sent.extend(vectors)
                _report(progress, vectors)
        store.put_many(self._new_items(plan, todo, sent, side, model))
        return plan.complete(sent)

    def _cached_stream(self, texts: Iterable[str]) -> Iterator[list[float]]:
        tally = self._tally(None, "document", current=False)
        windows = _Windows(self, texts, tally)
        with (
            _within(tally),
            windows.renumbered(),
            contextlib.closing(self._run(windows.batches(), None, tally)) as results,
        ):
            for vectors in results:
                done = windows.add(vectors)
                if done is not None:
                    self._store().put_many(done.items)
                    yield from done.vectors

    def _cached_chunks(
        self, texts: list[str], chunk_size: int, tally: Tally | None
    ) -> Generator[list[list[float]], None, None]:
        with _within(tally):
            for start in range(0, len(texts), chunk_size):
                chunk = texts[start : start + chunk_size]
                yield self._embed_cached(chunk, "document", tally, None, start)

    def _drive(self, steps: _Steps, call: Call) -> list[list[float]]:
        try:
            step = next(steps)
            while not isinstance(step, Done):
                answer: _Answer
                if isinstance(step, Send):
                    with step.attempt or NO_ATTEMPT as attempt:
                        answer = _traced(attempt, self._send(step, call))
                else:
                    answer = self._wait(step.seconds, call)
                step = steps.send(answer)
        except ModelNotFoundError as err:
            self._name_replacement(err, self._deprecation_feed())
            raise
        return step.vectors

    def _deprecation_feed(self) -> bytes | None:
        from ._deprecations import FEED_BYTES_LIMIT

        with self._feed_lock:
            if self._feed is ...:
                self._feed = None
                with contextlib.suppress(Exception):
                    response = self._http.send(self._feed_request(self._http), stream=True)
                    try:
                        if response.status_code == 200:
                            self._feed = _upto(response.iter_bytes(), FEED_BYTES_LIMIT)
                    finally:
                        response.close()
            return self._feed

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
                body = BoundedBody(request, response, step, started)
                for chunk in response.iter_bytes():
                    if call.cancelled.is_set():
                        raise stopped_error()
                    if not body.add(chunk):
                        break
            finally:
                response.close()
                release(response)
        except FAILURES as err:
            return failure(err)
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
        self,
        batches: Iterator[tuple[int, list[str]]],
        whole: list[str] | None,
        tally: Tally | None = None,
    ) -> Generator[list[list[float]], None, None]:
        """Embed batches concurrently, yielding each batch's vectors in order.

        ``whole``: the call's texts, one deadline for all its batches; ``None`` gives each batch
        its own deadline (streaming). Either way, giving up stops the batches not yet sent.
        """
        if whole is not None and not whole:
            return
        shared = self._new_call(tally=tally)

        def embed(batch: list[str], offset: int) -> list[list[float]]:
            call = shared if whole is not None else self._new_call(shared.cancelled, tally)
            return self._drive(self._steps(batch, offset, call), call)

        if self.max_concurrency == 1:
            for offset, batch in batches:
                yield embed(batch, offset)
            return
        pool, window = self._executor(), InOrder[Future[Vectors]](Future())
        try:
            for item in with_end(batches):
                if item is not None:
                    window.add(pool.submit(embed, item[1], item[0]))
                while window.ready(item is None, self._limiter.limit):
                    wait(window.awaited(), return_when=FIRST_COMPLETED)
                    yield window.take()
        finally:
            shared.cancelled.set()
            window.cancel()


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
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopState] = (
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

    def _state(self) -> LoopState:
        loop = asyncio.get_running_loop()
        with self._states_lock:
            # A state holds its loop through its connections, so the weak keys alone never let
            # go of a finished loop's state.
            for finished in [known for known in self._states if known.is_closed()]:
                del self._states[finished]
            state = self._states.get(loop)
            if state is None:
                http = self._injected_http or own_pool(
                    httpx.AsyncClient, self.max_concurrency, self.base_url
                )
                state = LoopState(AsyncGate(self._limiter), http, self._injected_http is None)
                self._states[loop] = state
            return state

    async def _loop_state(self) -> LoopState:
        state = self._state()
        if state.owned and state.closer is None:
            state.closer = close_at_loop_shutdown(state.http)
            await state.closer.__anext__()  # runs to its yield at once: registers it with the loop
        return state

    # -- public API -----------------------------------------------------------------------

    async def embed_documents(
        self, texts: Iterable[str], *, progress: Callable[[int], None] | None = None
    ) -> list[list[float]]:
        """One vector per text, in the order given. Every text is checked before anything is sent."""
        prepared = self._engine.documents(texts)
        if self.cache is not None:
            with _within(tally := self._tally(len(prepared), "document")):
                return await self._embed_cached(prepared, "document", tally, progress)
        out: list[list[float]] = []
        # ``async for`` does not close the generator when its body raises (or the caller
        # closes ``iter_embeddings``): aclosing cancels the batches in flight before returning.
        with _within(tally := self._tally(len(prepared), "document")):
            async with contextlib.aclosing(
                self._run(self._engine.batches(prepared), prepared, tally)
            ) as results:
                async for vectors in results:
                    out.extend(vectors)
                    _report(progress, vectors)
        return out

    async def embed_query(self, text: str) -> list[float]:
        """The vector of one search query: ``query_instruction`` in front, ``query_input_type`` sent."""
        query = self._engine.query(text)
        with _within(tally := self._tally(1, "query")):
            if self.cache is not None:
                return (await self._embed_cached([query], "query", tally))[0]
            call = self._new_call(tally=tally)
            return (await self._drive(self._steps([query], 0, call, query=True)))[0]

    async def iter_embeddings(self, texts: Iterable[str]) -> AsyncIterator[list[float]]:
        """Stream vectors in input order with at most ``2 * max_concurrency`` batches in flight.

        See ``EmbeddingsClient.iter_embeddings``. Use ``async for``; closing the iterator
        early cancels the batches in flight.
        """
        if self.cache is not None:
            async with contextlib.aclosing(self._cached_stream(texts)) as cached:
                async for vector in cached:
                    yield vector
            return
        with _within(tally := self._tally(None, "document", current=False)):
            async with contextlib.aclosing(
                self._run(self._engine.stream_batches(texts), None, tally)
            ) as results:
                async for vectors in results:
                    for vector in vectors:
                        yield vector

    def iter_chunks(
        self, texts: Iterable[str], chunk_size: int
    ) -> AsyncGenerator[list[list[float]], None]:
        """Async ``EmbeddingsClient.iter_chunks``: use ``async for``. Texts are checked at the call."""
        prepared = self._engine.chunks(texts, chunk_size)
        tally = self._tally(len(prepared), "document", current=False)
        if self.cache is not None:
            return self._cached_chunks(prepared, chunk_size, tally)
        return _achunked(
            self._run(self._engine.chunk_batches(prepared, chunk_size), None, tally),
            prepared,
            chunk_size,
            tally,
        )

    # -- machinery ------------------------------------------------------------------------

    async def _embed_cached(
        self,
        texts: list[str],
        side: str,
        tally: Tally | None,
        progress: Callable[[int], None] | None = None,
        offset: int = 0,
    ) -> list[list[float]]:
        """``texts`` (at ``offset`` in the call) through the cache: only what it lacks is sent."""
        from ._cache import alookup_batch

        store, model = self._store(), self._key_model()
        plan = await alookup_batch(store, self._cache_keys(texts, side, model))
        todo = self._to_send(plan, texts, tally)
        if progress is not None and len(todo) < len(texts):
            progress(len(texts) - len(todo))
        sent: list[list[float]] = []
        with _renumbered(plan.to_send, offset):
            async with contextlib.aclosing(
                self._run(self._engine.batches(todo), todo, tally)
            ) as results:
                async for vectors in results:
                    sent.extend(vectors)
                    _report(progress, vectors)
        await store.aput_many(self._new_items(plan, todo, sent, side, model))
        return plan.complete(sent)

    async def _cached_stream(self, texts: Iterable[str]) -> AsyncGenerator[list[float], None]:
        # The lookups run as the stream reads its texts, on the event loop (as the reading does).
        tally = self._tally(None, "document", current=False)
        windows = _Windows(self, texts, tally)
        with _within(tally), windows.renumbered():
            async with contextlib.aclosing(self._run(windows.batches(), None, tally)) as results:
                async for vectors in results:
                    done = windows.add(vectors)
                    if done is not None:
                        await self._store().aput_many(done.items)
                        for vector in done.vectors:
                            yield vector

    async def _cached_chunks(
        self, texts: list[str], chunk_size: int, tally: Tally | None
    ) -> AsyncGenerator[list[list[float]], None]:
        with _within(tally):
            for start in range(0, len(texts), chunk_size):
                chunk = texts[start : start + chunk_size]
                yield await self._embed_cached(chunk, "document", tally, None, start)

    async def _drive(self, steps: _Steps) -> list[list[float]]:
        try:
            step = next(steps)
            while not isinstance(step, Done):
                answer: _Answer
                if isinstance(step, Send):
                    with step.attempt or NO_ATTEMPT as attempt:
                        answer = _traced(attempt, await self._send(step))
                else:
                    answer = await self._wait(step.seconds)
                step = steps.send(answer)
        except ModelNotFoundError as err:
            self._name_replacement(err, await self._deprecation_feed())
            raise
        return step.vectors

    async def _deprecation_feed(self) -> bytes | None:
        from ._deprecations import FEED_BYTES_LIMIT

        if self._feed is ...:
            feed = None
            with contextlib.suppress(Exception):
                http = (await self._loop_state()).http
                response = await http.send(self._feed_request(http), stream=True)
                try:
                    parts: list[bytes] = []
                    async for chunk in response.aiter_bytes():
                        parts.append(chunk)
                        if sum(map(len, parts)) > FEED_BYTES_LIMIT:
                            break
                    else:
                        if response.status_code == 200:
                            feed = b"".join(parts)
                finally:
                    await response.aclose()
            self._feed = feed
        return self._feed

    async def _wait(self, seconds: float) -> _Answer:
        """Wait ``seconds`` (the answer to a ``Wait`` is None)."""
        await (self.retry_policy.asleep or asyncio.sleep)(seconds)
        return None

    async def _send(self, step: Send) -> Reply | Failure:
        state = await self._loop_state()
        request = self._build_request(state.http, step)
        exchange = Exchange(state.http, request, state.slots, step)
        try:
            reply = await exchange.run()
        except FAILURES as err:
            return failure(err)
        # Let a request waiting for the slot just freed go out before this reply is parsed:
        # parsing holds the event loop for milliseconds, the server's time is the scarce one.
        await asyncio.sleep(0)
        return reply

    async def _run(
        self,
        batches: Iterator[tuple[int, list[str]]],
        whole: list[str] | None,
        tally: Tally | None = None,
    ) -> AsyncGenerator[list[list[float]], None]:
        if whole is not None and not whole:
            return
        shared = self._new_call(tally=tally)
        window = InOrder[asyncio.Future[Vectors]](asyncio.get_running_loop().create_future())
        try:
            for item in with_end(batches):
                if item is not None:
                    call = shared if whole is not None else self._new_call(shared.cancelled, tally)
                    window.add(
                        asyncio.ensure_future(self._drive(self._steps(item[1], item[0], call)))
                    )
                while window.ready(item is None, self._limiter.limit):
                    await asyncio.wait(window.awaited(), return_when=asyncio.FIRST_COMPLETED)
                    yield window.take()
        finally:
            if window.cancel():
                await asyncio.gather(*window.pending, return_exceptions=True)


_noticed: set[tuple[str, str]] = set()
_noticed_lock = threading.Lock()


def _notice_token_policy(model: str, long_text: str) -> None:
    # Asked for by name only: "truncate" is the default, and would be said for every
    # model the package does not know. Said once per process for a model and a policy.
    if long_text != "error":
        return
    notice = token_policy_notice(model, long_text)
    with _noticed_lock:
        if notice is None or (model, long_text) in _noticed:
            return
        _noticed.add((model, long_text))
    warn_user(notice, UserWarning)


@contextlib.contextmanager
def _renumbered(positions: tuple[int, ...], offset: int) -> Iterator[None]:
    """An input the server refused, named by its index in the caller's texts, not in those sent."""
    try:
        yield
    except ItemRejectedError as err:
        _renumber(err, positions, offset, 0)
        raise


def _renumber(err: ItemRejectedError, positions: tuple[int, ...], offset: int, base: int) -> None:
    """``err.index`` was ``base`` + a position in ``positions``: make it ``offset`` + the text's."""
    sent = err.index - base
    if 0 <= sent < len(positions):
        index = offset + positions[sent]
        err.message = err.message.replace(f"index {err.index}", f"index {index}", 1)
        err.args = (err.message,)
        err.index = index


@dataclass
class _Window:
    """One window of a cached stream: its lookup, and its misses' batches in flight."""

    plan: CachedBatch
    todo: list[str]
    batches: int
    offset: int
    """Where the window starts in the caller's texts."""
    base: int
    """Where its misses start among all the texts the stream sends (the batches' offsets)."""
    model: str
    sent: list[list[float]] = field(default_factory=list)
    got: int = 0


@dataclass
class _Finished:
    vectors: list[list[float]]
    items: list[tuple[str, list[float]]]


class _Windows:
    """A stream through the cache, without a pause between windows.

    The stream is read in windows that keep every request slot busy (``batch_size`` x
    ``2 * max_concurrency`` texts); each is looked up as it is read, and its misses go into
    the one request pipeline of the stream, so the next windows' requests are in flight while
    one is finished. A window with nothing to send puts an empty batch in the pipeline (no
    request), so that results and windows stay in step.
    """

    def __init__(self, client: _BaseClient[Any], texts: Iterable[str], tally: Tally | None) -> None:
        self._client, self._texts, self._tally = client, texts, tally
        self._pending: deque[_Window] = deque()

    def batches(self) -> Iterator[tuple[int, list[str]]]:
        from ._cache import lookup_batch

        c = self._client
        size = c.batch_size * batches_in_flight(c.max_concurrency)
        base = 0
        for offset, chunk in c._engine.stream_batches(self._texts, size):
            model = c._key_model()
            plan = lookup_batch(c._store(), c._cache_keys(chunk, "document", model))
            todo = c._to_send(plan, chunk, self._tally)
            cuts = [(base + o, b) for o, b in c._engine.batches(todo)] or [(base, [])]
            self._pending.append(_Window(plan, todo, len(cuts), offset, base, model))
            base += len(todo)
            yield from cuts

    def add(self, vectors: list[list[float]]) -> _Finished | None:
        """One batch's vectors, in order; the first window's result once all of its are in."""
        window = self._pending[0]
        window.sent.extend(vectors)
        window.got += 1
        if window.got < window.batches:
            return None
        self._pending.popleft()
        items = self._client._new_items(
            window.plan, window.todo, window.sent, "document", window.model
        )
        return _Finished(window.plan.complete(window.sent), items)

    @contextlib.contextmanager
    def renumbered(self) -> Iterator[None]:
        try:
            yield
        except ItemRejectedError as err:
            for w in self._pending:
                if w.base <= err.index < w.base + len(w.todo):
                    _renumber(err, w.plan.to_send, w.offset, w.base)
                    break
            raise


def _upto(chunks: Iterable[bytes], limit: int) -> bytes | None:
    """The bytes of ``chunks``, or None past ``limit`` bytes (read no further)."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _no_steps() -> _Steps:
    yield Done([])


def _within(tally: Tally | None) -> contextlib.AbstractContextManager[Any]:
    """The call's telemetry as a context manager (a no-op without it)."""
    return _NO_TALLY if tally is None else tally


def _traced(attempt: AttemptSpan, answer: Reply | Failure) -> Reply | Failure:
    """``answer``, recorded on its attempt's span."""
    if isinstance(answer, Reply):
        attempt.set_status(answer.status)
    else:
        attempt.set_status(None, error=answer.error)
    return answer


def _report(progress: Callable[[int], None] | None, vectors: list[list[float]]) -> None:
    if progress is not None:
        progress(len(vectors))


def _chunked(
    results: Generator[list[list[float]], None, None],
    texts: list[str],
    chunk_size: int,
    tally: Tally | None = None,
) -> Generator[list[list[float]], None, None]:
    with _within(tally), contextlib.closing(results):
        for start in range(0, len(texts), chunk_size):
            want = min(chunk_size, len(texts) - start)
            chunk: list[list[float]] = []
            while len(chunk) < want:
                chunk.extend(next(results))
            yield chunk


async def _achunked(
    results: AsyncGenerator[list[list[float]], None],
    texts: list[str],
    chunk_size: int,
    tally: Tally | None = None,
) -> AsyncGenerator[list[list[float]], None]:
    with _within(tally):
        async with contextlib.aclosing(results):
            for start in range(0, len(texts), chunk_size):
                want = min(chunk_size, len(texts) - start)
                chunk: list[list[float]] = []
                while len(chunk) < want:
                    chunk.extend(await results.__anext__())
                yield chunk


def _rebuild(cls: type[_T], kwargs: dict[str, Any]) -> _T:
    return cls(**kwargs)
