"""The request core: ``EmbeddingsClient`` and ``AsyncEmbeddingsClient`` over httpx.

This module and its I/O parts in ``_transport`` are the only ones that do network I/O. The
request loop is written once, in ``_engine`` (a generator of wait / send steps that does no
I/O); every decision it takes comes from the pure modules, and what both clients share
without I/O (settings, identity, usage, the cache route) is in ``_client_base``. The two
clients here only drive the loop: the sync one sends and waits on threads, the async one
awaits on event loops. Both read a reply within bounds of size and time derived from its
request.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
)
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from types import TracebackType
from typing import TypeVar

import httpx

from ._cached import Lookup
from ._client_base import Answer, BaseClient, Steps, traced, within
from ._constants import batches_in_flight
from ._engine import Call, Done, Failure, Reply, Send, Wait, stopped_error
from ._sockets import end_requests
from ._tally import NO_ATTEMPT, Tally
from ._transport import (
    FAILURES,
    AsyncGate,
    BoundedBody,
    Exchange,
    InOrder,
    LoopState,
    SyncGate,
    Vectors,
    aget_small,
    body_of,
    close_at_loop_shutdown,
    failure,
    get_small,
    own_pool,
    raw_chunks,
    release,
    with_end,
)
from ._usage import RateLimiter, Usage
from .errors import ModelNotFoundError

__all__ = ["AsyncEmbeddingsClient", "EmbeddingsClient", "RateLimiter", "Usage"]

_T = TypeVar("_T")
Progress = Callable[[int], None] | None


class EmbeddingsClient(BaseClient[httpx.Client]):
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
    share between threads, and works in a process forked from the one that made it (a caller's
    ``http_client`` is refused there: its connections are the parent's).
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
        backoff at once and stop reading a reply at its next chunk; on the client's own pool
        a request in flight ends at once, even one whose server sends nothing.
        """
        self._stop_calls()
        end_requests(self._http)  # requests still waiting on a server end now, not at timeout
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
        with within(tally := self._tally(len(prepared), "document")):
            if self._cache is not None:
                return self._embed_cached(self._cache.lookup(prepared, "document", tally), progress)
            return _collect(self._run(self._engine.batches(prepared), prepared, tally), progress)

    def embed_query(self, text: str) -> list[float]:
        """The vector of one search query: ``query_instruction`` in front, ``query_input_type`` sent."""
        query = self._engine.query(text)
        with within(tally := self._tally(1, "query")):
            if self._cache is not None:
                return self._embed_cached(self._cache.lookup([query], "query", tally))[0]
            call = self._new_call(tally=tally)
            return self._drive(self._steps([query], 0, call, query=True), call)[0]

    def iter_embeddings(self, texts: Iterable[str]) -> Iterator[list[float]]:
        """Stream vectors in input order, reading ``texts`` lazily with a bounded number of batches in flight.

        Memory stays bounded by ``2 * max_concurrency`` batches however long the input is. Each
        batch is checked just before it is sent, so a bad item late in the input raises when
        its batch is reached, after the vectors before it were yielded. The deadline, if set,
        applies to each batch.
        """
        if self._cache is not None:
            yield from self._cached_stream(texts)
            return
        with (
            within(tally := self._tally(None, "document", current=False)),
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
        return self._chunks(texts, chunk_size, self._cached_chunks, _chunked)

    # -- machinery ------------------------------------------------------------------------

    def _embed_cached(self, found: Lookup, progress: Progress = None, at: int = 0) -> Vectors:
        """The texts of ``found`` (at ``at`` in the call): only what the cache lacks is sent."""
        assert self._cache is not None
        with found.renumbered(at):
            batches = self._engine.batches(found.todo)
            sent = _collect(self._run(batches, found.todo, found.tally), progress, found.answered)
        self._cache.store().put_many(found.items(sent))
        return found.complete(sent)

    def _cached_stream(self, texts: Iterable[str]) -> Iterator[list[float]]:
        windows = self._windows(texts, tally := self._tally(None, "document", current=False))
        with (
            within(tally),
            windows.renumbered(),
            contextlib.closing(self._run(windows.batches(), None, tally)) as results,
        ):
            for done in filter(None, map(windows.add, results)):
                windows.store().put_many(done.items)
                yield from done.vectors

    def _cached_chunks(
        self, texts: list[str], chunk_size: int, tally: Tally | None
    ) -> Generator[list[list[float]], None, None]:
        assert self._cache is not None
        with within(tally):
            for start in range(0, len(texts), chunk_size):
                chunk = texts[start : start + chunk_size]
                yield self._embed_cached(self._cache.lookup(chunk, "document", tally), at=start)

    def _drive(self, steps: Steps, call: Call) -> list[list[float]]:
        try:
            step = next(steps)
            while not isinstance(step, Done):
                step = steps.send(self._answer(step, call))
        except ModelNotFoundError as err:
            self._name_replacement(err, self._deprecation_feed())
            raise
        return step.vectors

    def _deprecation_feed(self) -> bytes | None:
        from ._deprecations import FEED_BYTES_LIMIT

        with self._feed_lock:
            if self._feed is ...:
                request = self._feed_request(self._http)
                self._feed = body_of(get_small(self._http, request, FEED_BYTES_LIMIT))
            return self._feed

    def _answer(self, step: Send | Wait, call: Call) -> Answer:
        """Send (the answer is the reply or the failure) or wait (the answer is None)."""
        if not isinstance(step, Send):
            return self._wait(step.seconds, call)
        with step.attempt or NO_ATTEMPT as attempt:
            return traced(attempt, self._send(step, call))

    def _wait(self, seconds: float, call: Call) -> Answer:
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
                for chunk in raw_chunks(response):
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
        self._probe.run(self._http, shared.deadline.remaining())

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


class AsyncEmbeddingsClient(BaseClient[httpx.AsyncClient]):
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
        with within(tally := self._tally(len(prepared), "document")):
            if self._cache is not None:
                found = await self._cache.alookup(prepared, "document", tally)
                return await self._embed_cached(found, progress)
            results = self._run(self._engine.batches(prepared), prepared, tally)
            return await _acollect(results, progress)

    async def embed_query(self, text: str) -> list[float]:
        """The vector of one search query: ``query_instruction`` in front, ``query_input_type`` sent."""
        query = self._engine.query(text)
        with within(tally := self._tally(1, "query")):
            if self._cache is not None:
                found = await self._cache.alookup([query], "query", tally)
                return (await self._embed_cached(found))[0]
            call = self._new_call(tally=tally)
            return (await self._drive(self._steps([query], 0, call, query=True)))[0]

    async def iter_embeddings(self, texts: Iterable[str]) -> AsyncIterator[list[float]]:
        """Stream vectors in input order with at most ``2 * max_concurrency`` batches in flight.

        See ``EmbeddingsClient.iter_embeddings``. Use ``async for``; closing the iterator
        early cancels the batches in flight.
        """
        if self._cache is not None:
            async with contextlib.aclosing(self._cached_stream(texts)) as cached:
                async for vector in cached:
                    yield vector
            return
        with within(tally := self._tally(None, "document", current=False)):
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
        return self._chunks(texts, chunk_size, self._cached_chunks, _achunked)

    # -- machinery ------------------------------------------------------------------------

    async def _embed_cached(self, found: Lookup, progress: Progress = None, at: int = 0) -> Vectors:
        """``EmbeddingsClient._embed_cached``, storing off the event loop."""
        assert self._cache is not None
        with found.renumbered(at):
            results = self._run(self._engine.batches(found.todo), found.todo, found.tally)
            sent = await _acollect(results, progress, found.answered)
        await self._cache.store().aput_many(found.items(sent))
        return found.complete(sent)

    async def _cached_stream(self, texts: Iterable[str]) -> AsyncGenerator[list[float], None]:
        # The lookups run as the stream reads its texts, on the event loop (as the reading does).
        windows = self._windows(texts, tally := self._tally(None, "document", current=False))
        with within(tally), windows.renumbered():
            async with contextlib.aclosing(self._run(windows.batches(), None, tally)) as results:
                async for vectors in results:
                    if done := windows.add(vectors):
                        await windows.store().aput_many(done.items)
                        for vector in done.vectors:
                            yield vector

    async def _cached_chunks(
        self, texts: list[str], chunk_size: int, tally: Tally | None
    ) -> AsyncGenerator[list[list[float]], None]:
        assert self._cache is not None
        with within(tally):
            for start in range(0, len(texts), chunk_size):
                chunk = texts[start : start + chunk_size]
                found = await self._cache.alookup(chunk, "document", tally)
                yield await self._embed_cached(found, at=start)

    async def _drive(self, steps: Steps) -> list[list[float]]:
        try:
            step = next(steps)
            while not isinstance(step, Done):
                step = steps.send(await self._answer(step))
        except ModelNotFoundError as err:
            self._name_replacement(err, await self._deprecation_feed())
            raise
        return step.vectors

    async def _deprecation_feed(self) -> bytes | None:
        from ._deprecations import FEED_BYTES_LIMIT

        if self._feed is ...:
            http = (await self._loop_state()).http
            reply = await aget_small(http, self._feed_request(http), FEED_BYTES_LIMIT)
            self._feed = body_of(reply)
        return self._feed

    async def _answer(self, step: Send | Wait) -> Answer:
        if isinstance(step, Send):
            with step.attempt or NO_ATTEMPT as attempt:
                return traced(attempt, await self._send(step))
        return await self._wait(step.seconds)

    async def _wait(self, seconds: float) -> Answer:
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
        await self._probe.arun((await self._loop_state()).http, shared.deadline.remaining())
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


class _Collected:
    """A call's vectors as its batches finish (in order), each batch reported to ``progress``
    (``done``: texts finished before any batch, reported at once)."""

    def __init__(self, progress: Callable[[int], None] | None, done: int) -> None:
        self.vectors: list[list[float]] = []
        self._progress = progress
        if progress is not None and done:
            progress(done)

    def add(self, vectors: list[list[float]]) -> None:
        self.vectors.extend(vectors)
        if self._progress is not None:
            self._progress(len(vectors))


def _collect(
    results: Generator[list[list[float]], None, None],
    progress: Callable[[int], None] | None,
    done: int = 0,
) -> list[list[float]]:
    # Closed on the way out, even when ``progress`` raises: batches not yet sent are dropped.
    got = _Collected(progress, done)
    with contextlib.closing(results):
        for vectors in results:
            got.add(vectors)
    return got.vectors


async def _acollect(
    results: AsyncGenerator[list[list[float]], None],
    progress: Callable[[int], None] | None,
    done: int = 0,
) -> list[list[float]]:
    # ``async for`` does not close the generator when its body raises: aclosing cancels the
    # batches in flight before returning.
    got = _Collected(progress, done)
    async with contextlib.aclosing(results) as batches:
        async for vectors in batches:
            got.add(vectors)
    return got.vectors


def _chunked(
    results: Generator[list[list[float]], None, None],
    texts: list[str],
    chunk_size: int,
    tally: Tally | None = None,
) -> Generator[list[list[float]], None, None]:
    with within(tally), contextlib.closing(results):
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
    with within(tally):
        async with contextlib.aclosing(results):
            for start in range(0, len(texts), chunk_size):
                want = min(chunk_size, len(texts) - start)
                chunk: list[list[float]] = []
                while len(chunk) < want:
                    chunk.extend(await results.__anext__())
                yield chunk
