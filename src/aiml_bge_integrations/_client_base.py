"""What both clients share without touching a socket: settings, identity, usage, the engine.

``BaseClient`` checks every setting once (through ``_settings``), holds the key in its holder,
builds the engine that plans every request and the route through the cache, counts usage,
and builds each request (the key enters its headers there and nowhere else). The clients in
``client`` add the I/O: the sync one on threads, the async one on event loops.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
import warnings
import weakref
from collections.abc import (
    Callable,
    Generator,
    Iterable,
    Mapping,
)
from types import EllipsisType
from typing import Any, Generic, Literal, TypeVar

import httpx

from . import _retry
from ._cached import CacheRoute, Windows
from ._concurrency import Limiter
from ._constants import USER_AGENT, batches_in_flight
from ._engine import Call, Done, Engine, Failure, Reply, Send, Step
from ._models import first_token_policy_notice
from ._outcome import Context
from ._probe import LimitsProbe
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
)
from ._tally import Tally, collecting
from ._telemetry import AttemptSpan, CallSpan, Telemetry, make_telemetry
from ._transport import (
    ACCEPT_ENCODING,
    check_process,
    check_transport_security,
)
from ._usage import RateLimiter, Usage, UsageCounter
from ._warnings import warn_user
from .errors import ModelNotFoundError

__all__ = ["Answer", "BaseClient", "Http", "Steps", "no_steps", "traced", "within"]

_T = TypeVar("_T")
_R = TypeVar("_R")
Http = TypeVar("Http", httpx.Client, httpx.AsyncClient)
Answer = Reply | Failure | None
Steps = Generator[Step, Answer, None]
_NO_TALLY: contextlib.nullcontext[None] = contextlib.nullcontext()


class BaseClient(Generic[Http]):
    """Settings, identity, usage and the engine shared by both clients."""

    _run: Callable[..., Any]
    """Each client's request pipeline: batches in, each batch's vectors out, in order."""

    def __init__(
        self,
        *,
        api_key: str | SecretValue | None = None,
        base_url: str | None = None,
        model: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        adaptive_concurrency: bool = True,
        discover_limits: bool = True,
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
        http_client: Http | None = None,
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
        self.discover_limits: bool = values["discover_limits"]
        """Whether the server is asked once what it accepts (see ``_probe``)."""
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
        if notice := first_token_policy_notice(self.model, self.long_text):
            warn_user(notice, UserWarning)
        rpm, tpm = values["requests_per_minute"], values["tokens_per_minute"]
        self.rate_limiter = rate_limiter or (RateLimiter(rpm, tpm) if rpm or tpm else None)
        self.retry_policy = _retry.RetryPolicy(max_retries=self.max_retries)
        """How often and how long to wait before retrying; its ``sleep`` and ``asleep`` are the
        waits between attempts (a test seam: record delays instead of sleeping)."""
        self._injected_http: Http | None = http_client
        if http_client is not None:
            check_process(http_client)  # remembers where it was given (see _new_call)
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
            "Accept-Encoding": ACCEPT_ENCODING,
            "User-Agent": USER_AGENT,
            **self.default_headers,
        }
        self._probe = LimitsProbe(self.discover_limits, self._engine, self._headers)
        # What a copy is built from: the settings as resolved here, with the key object itself
        # (a pickle writes only its fingerprint, see _secrets).
        self._init_kwargs: dict[str, Any] = {
            **{name: values[name] for name in CLIENT_SETTINGS},
            "api_key": self._key,
        }
        self._cache = (
            None
            if self.cache is None
            else CacheRoute(
                self.cache,
                model=self.model,
                base_url=self.base_url,
                long_text=self.long_text,
                encoding_format=self.encoding_format,
                prompts=(self.query_instruction, self.document_instruction),
                input_types=(self.query_input_type, self.document_input_type),
                served_model=lambda: self._engine.served_model,
                usage=self._usage,
            )
        )
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
        from .errors import TextTooLongError

        route = self._cache
        if route is None:
            return 0
        keys: set[str] = set()
        model = route.key_model()
        chunk: list[str] = []

        def add(texts: list[str]) -> None:
            while texts:
                try:
                    prepared = self._engine._as_documents(texts)
                    keys.update(route.keys(prepared, "document", model))
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
        return route.held(keys)

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
        if self._injected_http is not None:
            check_process(self._injected_http)  # never the parent's sockets in a fork
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

    def _steps(self, texts: list[str], offset: int, call: Call, query: bool = False) -> Steps:
        # An empty batch (a cached stream's window with nothing to send) sends nothing.
        return self._engine.batch(texts, offset, call, query=query) if texts else no_steps()

    def _chunks(
        self,
        texts: Iterable[str],
        chunk_size: int,
        cached: Callable[[list[str], int, Tally | None], _R],
        assemble: Callable[[Any, list[str], int, Tally | None], _R],
    ) -> _R:
        """``iter_chunks`` of either client: ``assemble`` makes chunks of the batches' results
        (``cached``: of the cache's and the requests' vectors)."""
        prepared = self._engine.chunks(texts, chunk_size)
        tally = self._tally(len(prepared), "document", current=False)
        if self._cache is not None:
            return cached(prepared, chunk_size, tally)
        results = self._run(self._engine.chunk_batches(prepared, chunk_size), None, tally)
        return assemble(results, prepared, chunk_size, tally)

    def _windows(self, texts: Iterable[str], tally: Tally | None) -> Windows:
        """A cached stream's windows: enough texts to keep every request slot busy."""
        assert self._cache is not None
        size = self.batch_size * batches_in_flight(self.max_concurrency)
        return Windows(self._cache, self._engine, texts, tally, size)

    # -- the deprecation feed -----------------------------------------------------------------
    # After a 404 for the model the feed (GET {base_url}/models/deprecations, public) is read
    # once per client, without the key and with a short timeout; what it says of the model is
    # added to the ModelNotFoundError. Any failure to read it leaves the error as it was.

    def _feed_request(self, http: Http) -> httpx.Request:
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

    def _build_request(self, http: Http, step: Send) -> httpx.Request:
        headers = {
            **self._headers,
            "Authorization": f"Bearer {self._key.get()}",
            "X-Client-Request-Id": uuid.uuid4().hex,
        }
        return http.build_request(
            "POST", self._engine.ctx.url, content=step.body, headers=headers, timeout=step.timeout
        )


def no_steps() -> Steps:
    yield Done([])


def within(tally: Tally | None) -> contextlib.AbstractContextManager[Any]:
    """The call's telemetry as a context manager (a no-op without it)."""
    return _NO_TALLY if tally is None else tally


def traced(attempt: AttemptSpan, answer: Reply | Failure) -> Reply | Failure:
    """``answer``, recorded on its attempt's span."""
    if isinstance(answer, Reply):
        attempt.set_status(answer.status)
    else:
        attempt.set_status(None, error=answer.error)
    return answer


def _rebuild(cls: type[_T], kwargs: dict[str, Any]) -> _T:
    return cls(**kwargs)
