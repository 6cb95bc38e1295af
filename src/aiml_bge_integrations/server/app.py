"""The local AIML-compatible server as a Starlette app: routes, checks, limits, faults.

Routes::

    POST /v1/embeddings   embeddings, in the configured dialect (see ``dialects``)
    GET  /v1/models       the served models (auth as the dialect's real server asks)
    GET  /v1/models/deprecations   the AI/ML API's deprecation feed (AI/ML dialect; public;
                          also /models/..., /api/v1/models/..., and .../deprecated)
    GET  /info            TEI's facts (model_id, max_client_batch_size, max_input_length, ...),
                          where the dialect's server publishes them (``publishes_info``)
    GET  /_info           the same facts and the stand-in's own, in every dialect
    GET  /health          200 while serving
    GET  /_stats          the counters (``stats.ServerStats``) as JSON
    POST /_stats/reset    zero them (needs the key when one is set)

A ``POST /v1/embeddings`` goes through, in order: auth (401), a declared body size
(``Content-Length``) over the limit (413), the free-tier hourly quota, the per-minute and
concurrency limits (429), the worker queue, the body size counted while it is read (413),
validation (400/422), the model (404), the item count (413), item characters (400), the
side's prefix where the dialect takes an input type, item tokens (dialect's refusal, or
truncation), the request's tokens (413), then fault injection and the stand-in embedding;
the reply leaves ``latency`` seconds after the request was admitted (the stand-in's own work
counts inside that time, as a real model's would). Every reply carries
``x-aiml-bge-backend: hashing-stand-in``: the vectors are not the real model's.

Credits (AI/ML dialect): ``credits_for(tokens) = max(1, ceil(tokens / 1000))`` and
``x-aimlapi-usd-spent = credits * USD_PER_CREDIT``; both are stand-in figures, chosen so the
documented sample (7 tokens) costs 1 credit.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _metadata_version
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._settings import DEFAULT_MODEL
from ..tokens import BGE_MAX_TOKENS
from .backend import HashingEmbedder, TokenCounter, VectorCache
from .deprecations import feed_entries, feed_reply
from .dialects import (
    BadRequest,
    Context,
    Dialect,
    Reply,
    get_dialect,
    parse_request,
)
from .faults import (
    ITEM_FAULTS,
    FaultConfig,
    FaultInjector,
    mutate_items,
    retry_after_header,
    truncate_body,
)
from .stats import ServerStats

__all__ = [
    "BACKEND_HEADER",
    "DEFAULT_MAX_CONNECTIONS",
    "USD_PER_CREDIT",
    "ServerConfig",
    "create_app",
    "credits_for",
]

BACKEND_HEADER = ("x-aiml-bge-backend", "hashing-stand-in")
"""Header on every reply: these vectors come from the hashing stand-in, not from BGE."""

USD_PER_CREDIT = 0.0000005
"""Stand-in price of one credit, for ``x-aimlapi-usd-spent``."""

DEFAULT_MAX_CONNECTIONS = 512
"""Default of ``ServerConfig.max_connections`` (TEI's default ``--max-concurrent-requests``)."""

RETIRED_MODELS = ["BAAI/bge-large-en-v1.5", "togethercomputer/m2-bert-80M-32k-retrieval"]

try:
    _VERSION = _metadata_version("aiml-bge-integrations")
except PackageNotFoundError:  # running from a source tree that was never installed
    _VERSION = "0+unknown"

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_NUMPY_JSON = orjson.OPT_SERIALIZE_NUMPY


def credits_for(tokens: int) -> int:
    """Credits billed for ``tokens`` BGE tokens: ``max(1, ceil(tokens / 1000))`` (stand-in)."""
    return max(1, math.ceil(tokens / 1000))


@dataclass
class ServerConfig:
    """Everything the local server can be told; read per request, so tests may change it live.

    The body, input count and input length are always bounded: ``None`` there takes the
    dialect's default (``AimlDialect``: 2,000,000 bytes, 2,048 inputs, 100,000 characters), and
    ``max_connections`` bounds the connections; the other limits are off (``None``) unless set.
    Assign a new ``FaultConfig`` to ``faults`` to restart its script and seeded sequence.
    """

    api_key: str | None = None
    """The accepted bearer key; ``None`` is open mode (any non-empty bearer is accepted)."""
    dialect: str | Dialect = "aiml"
    """How replies are worded: a registered name (``dialects.dialect_names()``; the package
    ships ``"aiml"``) or a ``dialects.Dialect`` instance."""
    served_models: list[str] = field(default_factory=lambda: [DEFAULT_MODEL])
    """Models that answer; the first is the one dialects without model names report."""
    retired_models: list[str] = field(default_factory=lambda: list(RETIRED_MODELS))
    """Models that answer 404 "deprecated and no longer supported" (in the AI/ML dialect)."""
    dim: int = 768
    """Length of the stand-in vectors."""
    latency: float = 0.0
    """Seconds from admission to reply for every accepted request, the stand-in's own compute
    included (requests overlap), as an upstream whose inference takes that long."""
    max_concurrent_requests: int | None = None
    """Requests handled at once; one more gets 429 at once."""
    workers: int | None = None
    """Requests served at once; the others wait in a queue, in arrival order, as TEI and infinity
    do (their wait comes before ``latency``, and they count in ``in_flight``). ``None``: no queue."""
    requests_per_minute: int | None = None
    """Requests admitted per sliding 60-second window; more get 429."""
    free_tier_requests_per_hour: int | None = None
    """The AI/ML API free tier's quota: requests answered per sliding hour; past it every
    request gets the free tier's 429 ("You've reached your free limit for the hour"), which
    retrying within minutes does not clear. ``None``: no quota."""
    retry_after_on_limit: float | None = None
    """Seconds to announce in ``Retry-After`` on limit 429s; ``None`` sends no header (like AI/ML)."""
    max_body_bytes: int | None = None
    """Largest accepted body in bytes; larger gets 413, before the body is read (a declared
    ``Content-Length``) or as soon as the count passes it (chunked). ``None``: the dialect's
    default (2,000,000, TEI's ``--payload-limit``)."""
    max_items_per_request: int | None = None
    """Most inputs per request; more gets 413 naming the limit. ``None``: the dialect's default
    (2,048, the OpenAI API's; TEI's 32)."""
    max_chars_per_item: int | None = None
    """Most characters per input; longer gets 400 naming the input and the limit. ``None``: the
    dialect's default (100,000)."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Open connections served at once; past it every request gets 503 "Service Unavailable"
    (uvicorn's ``limit_concurrency``, as vLLM and infinity, which run on uvicorn, answer). Read
    when the server starts."""
    max_tokens_per_item: int | None = None
    """Most BGE tokens per input; longer gets the dialect's over-long error (or is cut)."""
    max_batch_tokens: int | None = None
    """Most tokens in one request, all inputs together (as counted, after any truncation);
    more gets 413 naming the limit, and ``GET /info`` publishes it as TEI's
    ``max_batch_tokens``. ``None``: no limit (``/info`` then shows the dialect's
    ``default_max_batch_tokens``: TEI's 16,384, which TEI uses to batch, not to refuse)."""
    faults: FaultConfig | None = None
    """Faults to inject into otherwise healthy replies."""

    def __post_init__(self) -> None:
        get_dialect(self.dialect)  # an unknown name is a ValueError here, not on a request
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must be None (open mode) or a non-empty string")
        if self.latency < 0:
            raise ValueError("latency must not be negative")
        for name in (
            "max_concurrent_requests",
            "workers",
            "requests_per_minute",
            "free_tier_requests_per_hour",
            "max_body_bytes",
            "max_items_per_request",
            "max_chars_per_item",
            "max_tokens_per_item",
            "max_connections",
            "max_batch_tokens",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None for no limit)")


class _WorkerQueue:
    """At most ``workers`` requests served at once; the others wait for a worker in arrival order."""

    def __init__(self) -> None:
        self.busy = 0
        self.waiting: deque[asyncio.Future[None]] = deque()

    async def acquire(self, workers: int) -> None:
        if self.busy < workers and not self.waiting:
            self.busy += 1
            return
        turn = asyncio.get_running_loop().create_future()
        self.waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release(workers)  # given a worker just as the request went away
            else:
                self.waiting.remove(turn)
            raise

    def release(self, workers: int | None) -> None:
        self.busy -= 1
        while self.waiting and (workers is None or self.busy < workers):
            turn = self.waiting.popleft()
            if not turn.done():
                self.busy += 1
                turn.set_result(None)


class _State:
    """Per-app mutable state besides the config: counters, the window, the fault injector."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stats = ServerStats()
        self.vectors = VectorCache(HashingEmbedder(config.dim))
        self.tokens = TokenCounter()
        self.window: deque[float] = deque()
        self.hour: deque[float] = deque()
        self.queue = _WorkerQueue()
        self._injector: FaultInjector | None = None

    def injector(self) -> FaultInjector | None:
        faults = self.config.faults
        if faults is None:
            return None
        if self._injector is None or self._injector.config is not faults:
            self._injector = FaultInjector(faults)
        return self._injector

    def vectors_for(self, dim: int) -> VectorCache:
        if self.vectors.embedder.dim != dim:
            self.vectors = VectorCache(HashingEmbedder(dim))
        return self.vectors

    def rate_ok(self, per_minute: int | None) -> bool:
        return _window_ok(self.window, per_minute, 60.0)

    def quota_ok(self, per_hour: int | None) -> bool:
        return _window_ok(self.hour, per_hour, 3600.0)


def _window_ok(window: deque[float], limit: int | None, seconds: float) -> bool:
    """Admit one more request into a sliding window of ``seconds`` holding at most ``limit``."""
    if limit is None:
        return True
    now = time.monotonic()
    while window and now - window[0] >= seconds:
        window.popleft()
    if len(window) >= limit:
        return False
    window.append(now)
    return True


def _reply(reply: Reply, extra: Mapping[str, str] | None = None) -> Response:
    headers = {**reply.headers, **(extra or {})}
    return Response(
        reply.body, status_code=reply.status, media_type=reply.media_type, headers=headers
    )


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _key_hint(token: str) -> str:
    if len(token) <= 8:
        return "*" * len(token)
    return f"{token[:3]}{'*' * (len(token) - 7)}{token[-4:]}"


def _auth_problem(
    request: Request, config: ServerConfig, dialect: Dialect, ctx: Context
) -> Reply | None:
    token = _bearer(request)
    if token is None:
        return dialect.unauthorized(True, ctx)
    if config.api_key is None:
        return None
    if hmac.compare_digest(token.encode("utf-8"), config.api_key.encode("utf-8")):
        return None
    hinted = Context(ctx.path, ctx.request_id, _key_hint(token))
    return dialect.unauthorized(False, hinted)


def _retry_after(seconds: float | None) -> dict[str, str]:
    if seconds is None:
        return {}
    return {"retry-after": retry_after_header("429-retry-after", seconds, time.time()) or "0"}


def _declared_size(request: Request) -> int | None:
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else None


async def _read_body(request: Request, limit: int) -> tuple[bytes, int | None]:
    """The body, or ``(b"", size)`` once it is known to be over ``limit``.

    A declared ``Content-Length`` over the limit is refused without reading a byte; a chunked
    body is counted as it arrives, so at most ``limit`` bytes (plus one chunk) are ever held.
    """
    declared = _declared_size(request)
    if declared is not None and declared > limit:
        return b"", declared
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return b"", size
        chunks.append(chunk)
    return b"".join(chunks), None


async def _sleep_unless_disconnected(seconds: float, receive: Receive) -> bool:
    """Sleep ``seconds``; stop early and return True if the client goes away meanwhile."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait_for(asyncio.shield(watcher), timeout=seconds)
    except asyncio.TimeoutError:
        return False
    finally:
        watcher.cancel()
    return True


class _DroppedResponse(Response):
    """A 200 that promises ``len(body)`` bytes, sends a part, and breaks the connection."""

    def __init__(self, body: bytes, fraction: float, headers: Mapping[str, str]) -> None:
        super().__init__(
            body, status_code=200, media_type="application/json", headers=dict(headers)
        )
        self.fraction = fraction

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cut = int(len(self.body) * self.fraction)
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[:cut], "more_body": True})
        # Returning with the body unfinished makes uvicorn close the connection: the client
        # sees fewer bytes than Content-Length promised (httpx.RemoteProtocolError).


def _encode_items(
    dialect: Dialect, vectors: np.ndarray[Any, Any], fmt: str
) -> list[dict[str, Any]]:
    if fmt == "base64":
        return [
            dialect.item(i, base64.b64encode(row.tobytes()).decode("ascii"))
            for i, row in enumerate(vectors)
        ]
    return [dialect.item(i, row) for i, row in enumerate(vectors)]


async def _embeddings(request: Request) -> Response:
    state: _State = request.app.state.aiml
    config = state.config
    dialect = get_dialect(config.dialect)
    request_id = str(uuid.uuid4())
    ctx = Context(request.url.path, request_id)
    stats = state.stats
    stats.count_request()

    common = dialect.reply_headers(request_id)
    client_id = request.headers.get("x-client-request-id")
    if dialect.echoes_client_request_id and client_id and _CLIENT_REQUEST_ID.match(client_id):
        common["x-client-request-id"] = client_id

    def finish(reply: Reply, healthy: bool = False) -> Response:
        stats.count_reply(reply.status, healthy)
        return _reply(reply, common)

    auth = _auth_problem(request, config, dialect, ctx)
    if auth is not None:
        return finish(auth)
    # A declared size over the limit is refused before the request waits for anything.
    body_limit = dialect.max_body_bytes(config)
    declared = _declared_size(request)
    if declared is not None and declared > body_limit:
        return finish(dialect.body_too_large(declared, body_limit, ctx))
    if not state.quota_ok(config.free_tier_requests_per_hour):
        stats.count_rate_limited()
        return finish(dialect.quota_exhausted(ctx))
    if not state.rate_ok(config.requests_per_minute):
        stats.count_rate_limited()
        return finish(dialect.rate_limited(ctx, _retry_after(config.retry_after_on_limit)))
    if not stats.try_admit(config.max_concurrent_requests):
        stats.count_rate_limited()
        return finish(dialect.rate_limited(ctx, _retry_after(config.retry_after_on_limit)))
    workers = config.workers
    try:
        if workers is not None:
            await state.queue.acquire(workers)
        stats.start_serving()
        try:
            return await _admitted(request, state, dialect, ctx, common, finish)
        finally:
            stats.stop_serving()
            if workers is not None:
                state.queue.release(state.config.workers)
    finally:
        stats.release()


async def _admitted(
    request: Request,
    state: _State,
    dialect: Dialect,
    ctx: Context,
    common: dict[str, str],
    finish: Callable[..., Response],
) -> Response:
    config = state.config
    stats = state.stats
    started = time.perf_counter()

    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        refused = dialect.unsupported_media_type(ctx)
        if refused is not None:
            return finish(refused)
    body_limit = dialect.max_body_bytes(config)
    raw, oversize = await _read_body(request, body_limit)
    if oversize is not None:
        return finish(dialect.body_too_large(oversize, body_limit, ctx))

    parsed = parse_request(raw, dialect)
    if isinstance(parsed, BadRequest):
        return finish(dialect.bad_request(parsed, ctx))
    model = dialect.resolve_model(parsed.model, config, ctx)
    if isinstance(model, Reply):
        return finish(model)
    texts = parsed.texts

    limit = dialect.max_items(config)
    if len(texts) > limit:
        return finish(dialect.too_many_items(len(texts), limit, ctx))
    max_chars = dialect.max_chars(config)
    for i, text in enumerate(texts):
        if len(text) > max_chars:
            return finish(dialect.too_many_chars(i, len(text), max_chars, ctx))

    texts = dialect.prefixed(texts, parsed.input_type)

    # Counting and embedding run in worker threads, so the event loop keeps accepting (and
    # refusing) requests while a large batch is being worked on; texts seen before are a
    # lookup, done inline (a thread hop would cost more than the work).
    counts = state.tokens.lookup(texts)
    if counts is None:
        counts = await run_in_threadpool(state.tokens.count, texts)
    cap = config.max_tokens_per_item
    if cap is not None:
        for i, n in enumerate(counts):
            if n > cap and not dialect.truncates_long_inputs:
                return finish(dialect.too_many_tokens(i, n, cap, ctx))
        if dialect.truncates_long_inputs:
            counts = [min(n, cap) for n in counts]
    tokens = sum(counts)
    if config.max_batch_tokens is not None and tokens > config.max_batch_tokens:
        return finish(dialect.too_many_batch_tokens(tokens, config.max_batch_tokens, ctx))
    credits = credits_for(tokens)
    stats.count_accepted(len(texts), tokens, credits)

    # The simulated upstream latency is the whole time a request spends upstream, the model's
    # own compute included: the stand-in's work below happens inside it, not on top of it.
    reply_at = started + config.latency

    injector = state.injector()
    fault = injector.next_fault() if injector is not None else None
    if fault is not None:
        stats.count_fault(fault)
        assert injector is not None
        faults = injector.config
        await _sleep_until(reply_at)
        if fault.startswith("429"):
            announce = retry_after_header(fault, faults.retry_after_seconds, time.time())
            return finish(dialect.rate_limited(ctx, {"retry-after": announce} if announce else {}))
        if fault in ("500", "502", "503", "504"):
            return finish(dialect.server_error(int(fault), ctx))
        if fault == "slow" and await _sleep_unless_disconnected(
            faults.slow_seconds, request.receive
        ):
            # The client gave up (its timeout fired): nobody reads a reply, none is counted.
            return Response(b"", status_code=499)

    cache = state.vectors_for(config.dim)
    vectors = cache.lookup(texts)
    if vectors is None:
        vectors = await run_in_threadpool(cache.embed, texts)
    data = _encode_items(dialect, vectors, parsed.encoding_format)
    if fault in ITEM_FAULTS:
        assert injector is not None
        data = mutate_items(fault, data, injector.random())
    body = orjson.dumps(dialect.success_body(model, data, tokens, credits), option=_NUMPY_JSON)
    await _sleep_until(reply_at)
    elapsed_ms = int((time.perf_counter() - started) * 1000)
    chars = sum(len(t) for t in texts)
    headers = {
        **dialect.success_headers(
            model, tokens, chars, credits, credits * USD_PER_CREDIT, elapsed_ms
        ),
        **common,
    }
    if fault == "drop":
        assert injector is not None
        return _DroppedResponse(body, injector.config.drop_fraction, headers)
    if fault == "malformed-json":
        body = truncate_body(body)
    healthy = fault is None or fault == "slow"
    stats.count_reply(200, healthy)
    return Response(body, status_code=200, media_type="application/json", headers=headers)


async def _sleep_until(moment: float) -> None:
    wait = moment - time.perf_counter()
    if wait > 0:
        await asyncio.sleep(wait)


async def _models(request: Request) -> Response:
    state: _State = request.app.state.aiml
    dialect = get_dialect(state.config.dialect)
    ctx = Context(request.url.path, str(uuid.uuid4()))
    if dialect.models_need_auth:
        problem = _auth_problem(request, state.config, dialect, ctx)
        if problem is not None:
            return _reply(problem)
    config = state.config
    return _json(dialect.models_body(config.served_models, _max_input_length(config)))


def _max_input_length(config: ServerConfig) -> int:
    return config.max_tokens_per_item or BGE_MAX_TOKENS


async def _deprecations(request: Request) -> Response:
    state: _State = request.app.state.aiml
    config = state.config
    dialect = get_dialect(config.dialect)
    if not dialect.serves_deprecation_feed:
        raise HTTPException(404)
    entries = feed_entries(config.served_models, config.retired_models)
    params = request.query_params
    body, headers = feed_reply(entries, params.get("status"), params.get("since"))
    return Response(body, media_type="application/json", headers=headers)


async def _info(request: Request) -> Response:
    state: _State = request.app.state.aiml
    if not get_dialect(state.config.dialect).publishes_info:
        raise HTTPException(404)  # the server imitated has no such route
    return await _facts(request)


async def _facts(request: Request) -> Response:
    state: _State = request.app.state.aiml
    config = state.config
    dialect = get_dialect(config.dialect)
    return _json(
        {
            "model_id": config.served_models[0] if config.served_models else DEFAULT_MODEL,
            "model_sha": None,
            "model_dtype": "float32",
            "model_type": {"embedding": {"pooling": "cls"}},
            "served_model_name": config.served_models[0] if config.served_models else DEFAULT_MODEL,
            "max_concurrent_requests": config.max_concurrent_requests or config.max_connections,
            "max_input_length": _max_input_length(config),
            "max_batch_tokens": config.max_batch_tokens or dialect.default_max_batch_tokens,
            "max_batch_requests": None,
            "max_client_batch_size": dialect.max_items(config),
            "auto_truncate": config.max_tokens_per_item is None or dialect.truncates_long_inputs,
            "tokenization_workers": 1,
            "version": _VERSION,
            "sha": None,
            "docker_label": None,
            "dialect": dialect.name,
            "backend": BACKEND_HEADER[1],
            "stand_in": "hashing vectors, not the real model",
            "dim": config.dim,
            "auth": "open" if config.api_key is None else "key",
            "max_body_bytes": dialect.max_body_bytes(config),
            "max_chars_per_item": dialect.max_chars(config),
            "max_connections": config.max_connections,
            "workers": config.workers,
        }
    )


async def _health(request: Request) -> Response:
    return _json({"status": "ok", "backend": BACKEND_HEADER[1]})


async def _stats(request: Request) -> Response:
    state: _State = request.app.state.aiml
    return _json(state.stats.snapshot())


async def _stats_reset(request: Request) -> Response:
    state: _State = request.app.state.aiml
    dialect = get_dialect(state.config.dialect)
    problem = _auth_problem(
        request, state.config, dialect, Context(request.url.path, str(uuid.uuid4()))
    )
    if problem is not None:
        return _reply(problem)
    state.stats.reset()
    return _json(state.stats.snapshot())


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    state: _State = request.app.state.aiml
    dialect = get_dialect(state.config.dialect)
    ctx = Context(request.url.path, str(uuid.uuid4()))
    return _reply(
        dialect.error(exc.status_code, f"Cannot {request.method} {request.url.path}", ctx)
    )


class _BackendHeader:
    """ASGI middleware: stamp every reply as coming from the stand-in backend."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                name, value = BACKEND_HEADER
                message["headers"] = [*message.get("headers", []), (name.encode(), value.encode())]
            await send(message)

        await self.app(scope, receive, stamped)


def create_app(config: ServerConfig) -> Starlette:
    """The Starlette app serving ``config`` (kept by reference: later changes take effect).

    ``app.state.aiml.stats`` holds the counters and ``app.state.aiml.config`` the config.
    """
    routes = [
        Route("/v1/embeddings", _embeddings, methods=["POST"]),
        Route("/v1/models", _models, methods=["GET"]),
        *(
            Route(f"{prefix}/models/{word}", _deprecations, methods=["GET"])
            for prefix in ("/v1", "", "/api/v1")
            for word in ("deprecations", "deprecated")
        ),
        Route("/info", _info, methods=["GET"]),
        Route("/_info", _facts, methods=["GET"]),
        Route("/health", _health, methods=["GET"]),
        Route("/_stats", _stats, methods=["GET"]),
        Route("/_stats/reset", _stats_reset, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _http_error, 405: _http_error})
    app.add_middleware(_BackendHeader)
    app.state.aiml = _State(config)
    app.state.config = config
    app.state.stats = app.state.aiml.stats
    return app
