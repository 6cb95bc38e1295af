"""How the local server answers: bodies, error shapes, statuses and messages (its *dialect*).

The package ships one dialect, ``aiml``: the AI/ML API as documented (``AimlDialect``), the
default of ``ServerConfig.dialect`` and of ``aiml-bge serve``. Every dialect serves the same
``POST /v1/embeddings`` and the same stand-in vectors; what differs is what a client sees
around them.

A dialect is an object, so another server's wire can be plugged in without changing the
package: subclass ``Dialect`` (or ``AimlDialect``), then either pass an instance,
``ServerConfig(dialect=MyDialect())`` / ``LocalServer(dialect=MyDialect())``, or call
``register_dialect(MyDialect())`` once to make its ``name`` selectable wherever a name is taken
(``ServerConfig(dialect="mine")``, ``aiml-bge serve --dialect mine`` in the same process). The
project's own tests plug in text-embeddings-inference, vLLM, infinity, Ollama and the OpenAI
API this way (``tests/support/server_dialects.py`` in the source tree, not in the wheel).

The server's own limits keep their statuses in every dialect (``max_body_bytes`` 413,
``max_items_per_request`` 413, ``max_chars_per_item`` 400, concurrency and rate 429); a
dialect changes the envelope, and the statuses where a real server checks something itself.
A limit left at ``None`` in ``ServerConfig`` takes the dialect's default
(``default_max_body_bytes``, ``default_max_items``, ``default_max_chars``), as each real server
has its own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, Protocol

import orjson

from .._settings import DEFAULT_MODEL

__all__ = [
    "FREE_TIER_MESSAGE",
    "AimlDialect",
    "BadRequest",
    "Context",
    "Dialect",
    "EmbeddingRequest",
    "ModelSettings",
    "Problem",
    "Reply",
    "dialect_names",
    "get_dialect",
    "parse_request",
    "register_dialect",
]

_JSON = "application/json"

FREE_TIER_MESSAGE = (
    "Free-tier limit: You've reached your free limit for the hour. Get AI/ML Subscription to "
    "use API, visit https://aimlapi.com/app/billing/ !"
)
"""The AI/ML API free tier's 429 message, as the vendor's documentation gives it (no
``Retry-After``)."""

_PHRASES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Reply:
    """A finished HTTP reply: status, body bytes, media type, extra headers."""

    status: int
    body: bytes
    media_type: str = _JSON
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """An error in neutral terms, before a dialect puts it in its envelope."""

    status: int
    message: str
    type: str | None = None
    param: str | None = None
    code: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """What an error body may quote about the request it answers."""

    path: str
    request_id: str
    api_key_hint: str = ""


@dataclass(frozen=True)
class EmbeddingRequest:
    """A request body that passed validation."""

    model: str | None
    """The model named, or ``None`` where the dialect lets it be left out."""
    texts: list[str]
    """The inputs, in order; a single string becomes a list of one."""
    single: bool
    """Whether ``input`` was a string rather than a list."""
    encoding_format: str
    """``"float"`` or ``"base64"``."""
    input_type: str | None = None
    """The side the client named (``Dialect.input_type_field``), where the dialect takes one;
    ``None`` when it was not sent or the dialect has no such field."""


@dataclass(frozen=True)
class BadRequest:
    """Why a request body was refused, before a dialect words it.

    ``reason`` is one of ``invalid_json``, ``not_object``, ``model_missing``, ``model_type``,
    ``input_missing``, ``input_empty_string``, ``input_empty_list``, ``input_type``,
    ``input_item_type``, ``encoding_format``, ``unknown_input_type`` (a side the dialect does
    not know, in ``Dialect.input_type_field``).
    """

    reason: str
    field: str
    detail: str
    expected: str
    received: str
    index: int | None = None
    value: Any = None


class ModelSettings(Protocol):
    """The part of ``ServerConfig`` a dialect reads."""

    served_models: list[str]
    retired_models: list[str]
    max_items_per_request: int | None
    max_body_bytes: int | None
    max_chars_per_item: int | None


# --------------------------------------------------------------------------- parsing

_MISSING: Any = object()


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _preview(value: Any) -> str:
    text = orjson.dumps(value).decode("utf-8", "replace")
    return text if len(text) <= 60 else text[:57] + "..."


def _bad_input(reason: str, detail: str, received: str, **kw: Any) -> BadRequest:
    expected = "string (minLength 1) | array<string> (minItems 1)"
    return BadRequest(reason, "input", detail, expected, received, **kw)


def parse_request(raw: bytes, dialect: Dialect) -> EmbeddingRequest | BadRequest:
    """Validate a ``POST /v1/embeddings`` body as ``dialect`` would; unknown fields are ignored."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        return BadRequest(
            "invalid_json",
            "body",
            f"body is not valid JSON: {err}",
            "a JSON object",
            "invalid JSON",
        )
    if not isinstance(doc, dict):
        kind = _json_type(doc)
        return BadRequest(
            "not_object", "body", "body must be a JSON object", "object", kind, value=doc
        )
    model = doc.get("model")
    if model is None:
        if dialect.model_required:
            return BadRequest(
                "model_missing", "model", "'model' is required", "string", "undefined"
            )
    elif not isinstance(model, str):
        kind = _json_type(model)
        return BadRequest(
            "model_type", "model", "'model' must be a string", "string", kind, value=model
        )
    inp = doc.get("input", _MISSING)
    if inp is _MISSING or inp is None:
        received = "undefined" if inp is _MISSING else "null"
        return _bad_input("input_missing", "'input' is required", received)
    if isinstance(inp, str):
        if inp == "" and not dialect.empty_string_ok:
            return _bad_input(
                "input_empty_string", "'input' must not be an empty string", '""', value=""
            )
        texts = [inp]
    elif isinstance(inp, list):
        if not inp:
            return _bad_input(
                "input_empty_list", "'input' must not be an empty array", "[]", value=[]
            )
        for i, item in enumerate(inp):
            if not isinstance(item, str):
                kind = _json_type(item)
                detail = f"'input' must be a string or array of strings; input[{i}] is a {kind}"
                received = f"{kind} {_preview(item)} at input[{i}]"
                return _bad_input("input_item_type", detail, received, index=i, value=item)
            if item == "" and not dialect.empty_string_ok:
                detail = f"input[{i}] must not be an empty string"
                return _bad_input(
                    "input_empty_string", detail, f'"" at input[{i}]', index=i, value=""
                )
        texts = inp
    else:
        detail = "'input' must be a string or array of strings"
        received = f"{_json_type(inp)} {_preview(inp)}"
        return _bad_input("input_type", detail, received, value=inp)
    fmt = doc.get("encoding_format")
    if fmt is None:
        encoding = "float"
    elif isinstance(fmt, str) and dialect.encoding_format_ok(fmt):
        encoding = fmt.lower()
    else:
        detail = '\'encoding_format\' must be "float" or "base64"'
        expected = '"float" | "base64"'
        return BadRequest(
            "encoding_format", "encoding_format", detail, expected, _preview(fmt), value=fmt
        )
    side: str | None = None
    field_name = dialect.input_type_field
    if dialect.input_types and doc.get(field_name) is not None:
        side = doc[field_name]
        if not isinstance(side, str) or side not in dialect.input_types:
            known = " | ".join(f'"{name}"' for name in dialect.input_types)
            detail = f"'{field_name}' must be one of {known}"
            return BadRequest(
                "unknown_input_type", field_name, detail, known, _preview(side), value=side
            )
    elif dialect.input_types:
        side = dialect.default_input_type
    return EmbeddingRequest(model, list(texts), isinstance(inp, str), encoding, side)


# --------------------------------------------------------------------------- base


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _phrase(status: int) -> str:
    return _PHRASES.get(status, "Error")


class Dialect:
    """What one server family shows on the wire (see the module docstring).

    A subclass sets ``name`` and the class flags, implements ``render`` (its error envelope)
    and overrides the replies whose wording or status differ. Every method is pure: it builds
    a ``Reply`` or a dict, and the app does the I/O. Instances hold no per-request state, so
    one instance may serve many servers at once.
    """

    name: ClassVar[str] = ""
    """The name it is selected by (``register_dialect``) and reported under (``/info``)."""
    model_required: ClassVar[bool] = True
    """Whether a body without ``model`` is refused."""
    empty_string_ok: ClassVar[bool] = False
    """Whether ``""`` is a valid input."""
    models_need_auth: ClassVar[bool] = True
    """Whether ``GET /v1/models`` asks for the key."""
    truncates_long_inputs: ClassVar[bool] = False
    """Whether inputs over ``max_tokens_per_item`` are cut (and billed cut) rather than refused."""
    echoes_client_request_id: ClassVar[bool] = False
    """Whether a valid ``X-Client-Request-Id`` comes back as ``x-client-request-id``."""
    owned_by: ClassVar[str] = "system"
    """``owned_by`` of each model in ``GET /v1/models``."""
    publishes_info: ClassVar[bool] = False
    """Whether ``GET /info`` answers (TEI's route) or is a 404, as on servers without it (the
    facts are always at ``GET /_info``)."""
    serves_deprecation_feed: ClassVar[bool] = False
    """Whether ``GET /v1/models/deprecations`` answers (the AI/ML API's feed) or is a 404."""
    input_type_field: ClassVar[str] = "input_type"
    """The request field that names the side (NIM's and Cohere's ``input_type``, TEI's
    ``prompt_name``); read only where ``input_types`` is not empty."""
    input_types: ClassVar[Mapping[str, str]] = {}
    """The sides the server takes, each with the prefix it adds to every input before
    embedding and counting (as servers that add a model's prompts themselves do); empty: the
    field is not read (unknown fields are ignored)."""
    default_input_type: ClassVar[str | None] = None
    """The side of a request that names none (``None``: no prefix)."""
    default_max_body_bytes: ClassVar[int] = 2_000_000
    """Largest body when ``max_body_bytes`` is ``None``: TEI's default ``--payload-limit``."""
    default_max_items: ClassVar[int] = 2048
    """Most inputs per request when ``max_items_per_request`` is ``None``: the OpenAI API's
    limit, which infinity shares."""
    default_max_batch_tokens: ClassVar[int | None] = None
    """What ``GET /info`` publishes as ``max_batch_tokens`` when ``ServerConfig.max_batch_tokens``
    is ``None`` (nothing is refused then)."""
    default_max_chars: ClassVar[int] = 100_000
    """Most characters per input when ``max_chars_per_item`` is ``None``: far above any text
    that fits 512 (or 8,192) tokens, low enough that counting one input's tokens stays cheap."""

    # ---- requests

    def encoding_format_ok(self, value: str) -> bool:
        """Whether ``value`` is an accepted ``encoding_format``."""
        return value in ("float", "base64")

    def resolve_model(
        self, requested: str | None, config: ModelSettings, ctx: Context
    ) -> str | Reply:
        """The model the reply names, or the error for an unknown or retired one."""
        if requested is None:
            return config.served_models[0] if config.served_models else DEFAULT_MODEL
        if requested in config.served_models:
            return requested
        if requested in config.retired_models:
            return self.retired_model(requested, ctx)
        return self.unknown_model(requested, ctx)

    def prefixed(self, texts: list[str], input_type: str | None) -> list[str]:
        """``texts`` as the model sees them: with the prefix of ``input_type``, if any."""
        prefix = self.input_types.get(input_type or "", "")
        return [prefix + text for text in texts] if prefix else texts

    def max_items(self, config: ModelSettings) -> int:
        """The most inputs one request may carry."""
        limit = config.max_items_per_request
        return self.default_max_items if limit is None else limit

    def max_body_bytes(self, config: ModelSettings) -> int:
        """The largest request body accepted, in bytes."""
        limit = config.max_body_bytes
        return self.default_max_body_bytes if limit is None else limit

    def max_chars(self, config: ModelSettings) -> int:
        """The most characters one input may have."""
        limit = config.max_chars_per_item
        return self.default_max_chars if limit is None else limit

    # ---- errors

    def render(self, p: Problem, ctx: Context) -> Reply:
        """Put ``p`` in this dialect's error envelope."""
        raise NotImplementedError

    def error(self, status: int, message: str, ctx: Context, **kw: Any) -> Reply:
        """``render(Problem(status, message, **kw))``: ``type``, ``param``, ``code``, ``headers``."""
        return self.render(Problem(status, message, **kw), ctx)

    def bad_request(self, failure: BadRequest, ctx: Context) -> Reply:
        """The reply to a body that failed validation."""
        return self.error(
            400, failure.detail, ctx, type="invalid_request_error", param=failure.field
        )

    def unsupported_media_type(self, ctx: Context) -> Reply | None:
        """The reply to a body not sent as JSON, where the dialect checks (else ``None``)."""
        return None

    def unauthorized(self, missing: bool, ctx: Context) -> Reply:
        """The reply to a missing (``missing=True``) or wrong API key."""
        return self.error(401, "Unauthorized", ctx, type="authentication_error")

    def unknown_model(self, model: str, ctx: Context) -> Reply:
        """The reply to a model the server does not serve."""
        return self.error(
            404, f"Model {model} not found", ctx, type="not_found_error", param="model"
        )

    def retired_model(self, model: str, ctx: Context) -> Reply:
        """The reply to a model that was served once and is retired."""
        return self.unknown_model(model, ctx)

    def rate_limited(self, ctx: Context, headers: Mapping[str, str]) -> Reply:
        """The reply to a request over the concurrency or per-minute limit (or a 429 fault)."""
        return self.error(429, "Too Many Requests", ctx, type="rate_limit_error", headers=headers)

    def quota_exhausted(self, ctx: Context) -> Reply:
        """The reply once ``free_tier_requests_per_hour`` is used up (a plain 429 unless
        overridden)."""
        return self.rate_limited(ctx, {})

    def body_too_large(self, size: int, limit: int, ctx: Context) -> Reply:
        """The reply to a body over ``max_body_bytes`` (413)."""
        message = f"request body too large: {size} bytes > maximum {limit} bytes"
        return self.error(413, message, ctx, type="invalid_request_error")

    def too_many_items(self, n: int, limit: int, ctx: Context) -> Reply:
        """The reply to a batch over ``max_items`` (413, naming the limit)."""
        message = f"too many inputs: {n} > maximum allowed batch size {limit}"
        return self.error(413, message, ctx, type="invalid_request_error", param="input")

    def too_many_chars(self, index: int, n: int, limit: int, ctx: Context) -> Reply:
        """The reply to an input over ``max_chars_per_item`` (400, naming the input)."""
        message = f"input[{index}] has {n} characters; at most {limit} are allowed"
        return self.error(400, message, ctx, type="invalid_request_error", param="input")

    def too_many_tokens(self, index: int, n: int, limit: int, ctx: Context) -> Reply:
        """The reply to an input over ``max_tokens_per_item`` (dialects that refuse it)."""
        message = f"input[{index}] has {n} tokens; at most {limit} are allowed"
        return self.error(400, message, ctx, type="invalid_request_error", param="input")

    def too_many_batch_tokens(self, n: int, limit: int, ctx: Context) -> Reply:
        """The reply to a request over ``max_batch_tokens`` in all (413, naming the limit)."""
        message = f"too many tokens in one request: {n} > maximum {limit}"
        return self.error(413, message, ctx, type="invalid_request_error", param="input")

    def server_error(self, status: int, ctx: Context) -> Reply:
        """An injected 500, 502, 503 or 504."""
        return self.error(status, _phrase(status), ctx, type="server_error")

    # ---- success

    def item(self, index: int, embedding: Any) -> dict[str, Any]:
        """One entry of ``data``."""
        return {"object": "embedding", "index": index, "embedding": embedding}

    def success_body(
        self, model: str, data: list[dict[str, Any]], tokens: int, credits: int
    ) -> dict[str, Any]:
        """The 200 body; OpenAI's minimal shape unless overridden."""
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return {"object": "list", "data": data, "model": model, "usage": usage}

    def success_headers(
        self, model: str, tokens: int, chars: int, credits: int, usd: float, ms: int
    ) -> dict[str, str]:
        """Headers of a 200 reply beyond the common ones."""
        return {}

    def reply_headers(self, request_id: str) -> dict[str, str]:
        """Headers on every reply of ``/v1/embeddings``, success or error."""
        return {}

    def models_body(self, models: Sequence[str], max_input_length: int = 512) -> dict[str, Any]:
        """The ``GET /v1/models`` body (``max_input_length``: tokens per input, for servers
        that publish it)."""
        created = int(time.time())
        data = [
            {"id": m, "object": "model", "created": created, "owned_by": self.owned_by}
            for m in models
        ]
        return {"object": "list", "data": data}


def _usage(tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": tokens,
        "total_tokens": tokens,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
    }


# --------------------------------------------------------------------------- the AI/ML API


class AimlDialect(Dialect):
    """The AI/ML API as documented (``AIMLAPI.md``, its OpenAPI schema and response sample).

    - 200: ``{"object": "list", "data", "model", "usage": {"prompt_tokens", "total_tokens",
      "completion_tokens": 0, "prompt_tokens_details": null}, "id": "embd-<hex>", "created",
      "meta": {"usage": {"credits_used"}}}``; headers ``x-inference-id`` (on every reply),
      ``x-aimlapi-credits-used``, ``x-aimlapi-usd-spent``; a valid ``X-Client-Request-Id`` is
      echoed.
    - Errors: ``{"message", "path", "requestId", "statusCode", "timestamp"}``. 400 "Body
      validation error! ... Expected ..., Received ..."; 401; 404 "Model <m> not found", or
      "Model <m> is deprecated and no longer supported, you cannot call it" for retired models;
      429 "Too Many Requests" (no Retry-After observed), or the free tier's "Free-tier limit:
      You've reached your free limit for the hour. ..." once its hourly quota is used up; 504
      "Generation timeout".
    - Whitespace-only strings are accepted: the schema only asks for ``minLength: 1``.
    - This server's own choices: ``GET /v1/models`` is public (like the vendor's catalogue);
      the wording of 401 and of the limit errors (the vendor publishes no limits).
    """

    name = "aiml"
    models_need_auth = False
    serves_deprecation_feed = True
    echoes_client_request_id = True

    def render(self, p: Problem, ctx: Context) -> Reply:
        ts = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = {
            "message": p.message,
            "path": ctx.path,
            "requestId": ctx.request_id,
            "statusCode": p.status,
            "timestamp": ts,
        }
        return Reply(p.status, _dumps(body), headers=p.headers)

    def bad_request(self, failure: BadRequest, ctx: Context) -> Reply:
        message = f"Body validation error! {failure.detail}. Expected {failure.expected}, Received {failure.received}"
        return self.error(400, message, ctx)

    def unauthorized(self, missing: bool, ctx: Context) -> Reply:
        what = "no API key provided" if missing else "invalid API key"
        return self.error(401, f"Unauthorized: {what}. Send 'Authorization: Bearer <key>'.", ctx)

    def unknown_model(self, model: str, ctx: Context) -> Reply:
        return self.error(404, f"Model {model} not found", ctx)

    def retired_model(self, model: str, ctx: Context) -> Reply:
        return self.error(
            404, f"Model {model} is deprecated and no longer supported, you cannot call it", ctx
        )

    def quota_exhausted(self, ctx: Context) -> Reply:
        return self.error(429, FREE_TIER_MESSAGE, ctx)

    def server_error(self, status: int, ctx: Context) -> Reply:
        messages = {
            500: "Internal server error",
            502: "Bad Gateway",
            503: "Service Unavailable: the model is under maintenance",
            504: "Generation timeout",
        }
        return self.error(status, messages.get(status, _phrase(status)), ctx)

    def success_body(
        self, model: str, data: list[dict[str, Any]], tokens: int, credits: int
    ) -> dict[str, Any]:
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": _usage(tokens),
            "id": f"embd-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "meta": {"usage": {"credits_used": credits}},
        }

    def success_headers(
        self, model: str, tokens: int, chars: int, credits: int, usd: float, ms: int
    ) -> dict[str, str]:
        return {
            "x-aimlapi-credits-used": str(credits),
            "x-aimlapi-usd-spent": f"{usd:.9f}".rstrip("0").rstrip("."),
        }

    def reply_headers(self, request_id: str) -> dict[str, str]:
        return {"x-inference-id": request_id}

    def models_body(self, models: Sequence[str], max_input_length: int = 512) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "type": "embedding"} for m in models],
        }


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Dialect] = {}


def register_dialect(dialect: Dialect) -> None:
    """Make ``dialect`` selectable by its ``name`` (``ServerConfig``, ``aiml-bge serve --dialect``).

    Registering the same object twice is a no-op; another dialect under a name already taken
    is refused (``ValueError``), so a name always means one thing.
    """
    if not isinstance(dialect, Dialect):
        raise TypeError(f"expected a Dialect instance, got {type(dialect).__name__}")
    if not dialect.name:
        raise ValueError(f"{type(dialect).__name__} has no name; set the class attribute 'name'")
    known = _REGISTRY.get(dialect.name)
    if known is not None and known is not dialect:
        raise ValueError(f"a dialect named {dialect.name!r} is already registered")
    _REGISTRY[dialect.name] = dialect


def dialect_names() -> tuple[str, ...]:
    """The names ``ServerConfig.dialect`` accepts: ``"aiml"``, then any registered since."""
    return tuple(_REGISTRY)


def get_dialect(dialect: str | Dialect) -> Dialect:
    """The dialect itself, or the registered one called ``dialect`` (``ValueError`` if none)."""
    if isinstance(dialect, Dialect):
        return dialect
    try:
        return _REGISTRY[dialect]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown dialect {dialect!r}; choose one of {', '.join(_REGISTRY)} "
            "(or pass a Dialect instance)"
        ) from None


register_dialect(AimlDialect())
