"""How each real embeddings server answers: bodies, error shapes, statuses and messages.

The local server speaks one dialect at a time (``ServerConfig.dialect``). Every dialect serves
the same ``POST /v1/embeddings`` and the same stand-in vectors; what differs is what a client
sees around them. Each class below cites the real behaviour it copies; where the source did
not settle a detail (a message produced deep inside a library, a case a server does not have),
its docstring says the value is this server's own choice.

===============  ===========================================================================
dialect          mimics
===============  ===========================================================================
``aiml``         the AI/ML API (api.aimlapi.com): its documentation and OpenAPI schema
``openai``       the OpenAI API itself (api.openai.com)
``tei``          Hugging Face text-embeddings-inference, router ``/v1/embeddings``
``vllm``         vLLM's OpenAI server, 2025+ envelope ``{"error": {...}}``
``vllm-legacy``  vLLM up to 0.10.1, flat envelope ``{"object": "error", ...}``
``infinity``     michaelfeil/infinity (FastAPI)
``ollama``       Ollama's OpenAI compatibility layer
===============  ===========================================================================

The server's own limits keep their statuses in every dialect (``max_body_bytes`` 413,
``max_items_per_request`` 413, ``max_chars_per_item`` 400, concurrency and rate 429); only the
envelope changes. Real per-dialect statuses apply where the real servers check something
themselves: validation, unknown models, TEI's client batch size, over-long inputs.
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
    "DIALECTS",
    "AimlDialect",
    "BadRequest",
    "Context",
    "Dialect",
    "EmbeddingRequest",
    "InfinityDialect",
    "ModelSettings",
    "OllamaDialect",
    "OpenAIDialect",
    "Problem",
    "Reply",
    "TeiDialect",
    "VllmDialect",
    "VllmLegacyDialect",
    "get_dialect",
    "parse_request",
]

_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"

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


@dataclass(frozen=True)
class BadRequest:
    """Why a request body was refused, before a dialect words it.

    ``reason`` is one of ``invalid_json``, ``not_object``, ``model_missing``, ``model_type``,
    ``input_missing``, ``input_empty_string``, ``input_empty_list``, ``input_type``,
    ``input_item_type``, ``encoding_format``.
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
    max_client_batch_size: int


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
    return EmbeddingRequest(model, list(texts), isinstance(inp, str), encoding)


# --------------------------------------------------------------------------- base


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _phrase(status: int) -> str:
    return _PHRASES.get(status, "Error")


class Dialect:
    """What one real server family shows on the wire (see the module docstring).

    A subclass sets the class flags, implements ``render`` (its error envelope) and overrides
    the replies whose wording or status differ. Every method is pure: it builds a ``Reply``
    or a dict, and the app does the I/O.
    """

    name: ClassVar[str] = ""
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

    def max_items(self, config: ModelSettings) -> int | None:
        """The most inputs one request may carry, if a limit applies."""
        return config.max_items_per_request

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

    def models_body(self, models: Sequence[str]) -> dict[str, Any]:
        """The ``GET /v1/models`` body."""
        created = int(time.time())
        data = [
            {"id": m, "object": "model", "created": created, "owned_by": self.owned_by}
            for m in models
        ]
        return {"object": "list", "data": data}


def _openai_envelope(message: str, type_: str | None, param: str | None, code: Any) -> bytes:
    return _dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def _vllm_usage(tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": tokens,
        "total_tokens": tokens,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
    }


# --------------------------------------------------------------------------- dialects


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
      429 "Too Many Requests" (no Retry-After observed); 504 "Generation timeout".
    - Whitespace-only strings are accepted: the schema only asks for ``minLength: 1``.
    - This server's own choices: ``GET /v1/models`` is public (like the vendor's catalogue);
      the wording of 401 and of the limit errors (the vendor publishes no limits).
    """

    name = "aiml"
    models_need_auth = False
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
            "usage": _vllm_usage(tokens),
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

    def models_body(self, models: Sequence[str]) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "type": "embedding"} for m in models],
        }


class OpenAIDialect(Dialect):
    """The OpenAI API (api.openai.com): ``{"error": {"message", "type", "param", "code"}}``.

    - 400 ``invalid_request_error``: "'$.input' is invalid. Please check the API reference:
      https://platform.openai.com/docs/api-reference." (empty string or list, wrong input type);
      "Missing required parameter: 'input'." (code ``missing_required_parameter``); "you must
      provide a model parameter"; unparseable JSON gets OpenAI's "We could not parse the JSON
      body of your request..." text.
    - 401 "Incorrect API key provided: ..." (code ``invalid_api_key``) or "You didn't provide
      an API key...".
    - 404 code ``model_not_found``: "The model `m` does not exist or you do not have access to
      it."; retired models: "The model `m` has been deprecated, learn more here: ...".
    - 429 type ``requests``, code ``rate_limit_exceeded``. Over-long input: 400 "This model's
      maximum context length is N tokens, however you requested M tokens (M in your prompt; 0
      for the completion). ...".
    - 200: ``{"object", "data", "model", "usage": {"prompt_tokens", "total_tokens"}}``.
    - Not copied: OpenAI also takes token-id arrays; this stand-in refuses them.
    """

    name = "openai"
    echoes_client_request_id = True

    _INVALID_INPUT = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
    _UNPARSEABLE = (
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
        "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. "
        "If you have trouble figuring out how to fix this, please contact us through our help center at "
        "help.openai.com.)"
    )

    def render(self, p: Problem, ctx: Context) -> Reply:
        return Reply(
            p.status, _openai_envelope(p.message, p.type, p.param, p.code), headers=p.headers
        )

    def bad_request(self, failure: BadRequest, ctx: Context) -> Reply:
        r = failure.reason
        kw: dict[str, Any] = {"type": "invalid_request_error"}
        if r in ("invalid_json", "not_object"):
            return self.error(400, self._UNPARSEABLE, ctx, **kw)
        if r == "model_missing":
            return self.error(400, "you must provide a model parameter", ctx, **kw)
        if r == "model_type":
            message = (
                f"Invalid type for 'model': expected a string, but got {failure.received} instead."
            )
            return self.error(400, message, ctx, param="model", code="invalid_type", **kw)
        if r == "input_missing":
            message = "Missing required parameter: 'input'."
            return self.error(
                400, message, ctx, param="input", code="missing_required_parameter", **kw
            )
        if r == "encoding_format":
            message = (
                f"Invalid value: {failure.received}. Supported values are: 'float' and 'base64'."
            )
            return self.error(
                400, message, ctx, param="encoding_format", code="invalid_value", **kw
            )
        return self.error(400, self._INVALID_INPUT, ctx, **kw)

    def unauthorized(self, missing: bool, ctx: Context) -> Reply:
        if missing:
            message = (
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return self.error(401, message, ctx, type="invalid_request_error")
        message = (
            f"Incorrect API key provided: {ctx.api_key_hint}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
        return self.error(401, message, ctx, type="invalid_request_error", code="invalid_api_key")

    def unknown_model(self, model: str, ctx: Context) -> Reply:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return self.error(404, message, ctx, type="invalid_request_error", code="model_not_found")

    def retired_model(self, model: str, ctx: Context) -> Reply:
        message = f"The model `{model}` has been deprecated, learn more here: https://platform.openai.com/docs/deprecations"
        return self.error(404, message, ctx, type="invalid_request_error", code="model_not_found")

    def rate_limited(self, ctx: Context, headers: Mapping[str, str]) -> Reply:
        message = "Rate limit reached for requests. Please try again later."
        return self.error(
            429, message, ctx, type="requests", code="rate_limit_exceeded", headers=headers
        )

    def too_many_tokens(self, index: int, n: int, limit: int, ctx: Context) -> Reply:
        message = (
            f"This model's maximum context length is {limit} tokens, however you requested {n} tokens "
            f"({n} in your prompt; 0 for the completion). Please reduce your prompt; or completion length."
        )
        return self.error(400, message, ctx, type="invalid_request_error")

    def server_error(self, status: int, ctx: Context) -> Reply:
        messages = {
            500: "The server had an error while processing your request. Sorry about that!",
            502: "Bad gateway.",
            503: "The engine is currently overloaded, please try again later.",
            504: "Gateway timeout.",
        }
        return self.error(status, messages.get(status, _phrase(status)), ctx, type="server_error")

    def success_headers(
        self, model: str, tokens: int, chars: int, credits: int, usd: float, ms: int
    ) -> dict[str, str]:
        return {
            "openai-model": model,
            "openai-processing-ms": str(ms),
            "openai-version": "2020-10-01",
        }

    def reply_headers(self, request_id: str) -> dict[str, str]:
        return {"x-request-id": f"req_{request_id.replace('-', '')}"}


class TeiDialect(Dialect):
    """Hugging Face text-embeddings-inference (``router/src/http/server.rs``, ``openai_embed``).

    - ``/v1/embeddings`` errors are ``OpenAICompatErrorResponse``: ``{"message", "code":
      <status>, "type": "<ErrorType>"}``, the type being the Rust variant name and the status
      ``From<&ErrorType> for StatusCode``: Validation 413, Empty 400, Overloaded 429, Tokenizer
      422, Backend 424, Unhealthy 503. (TEI's native routes, e.g. ``/embed``, use
      ``{"error", "error_type"}`` instead.)
    - A batch over ``--max-client-batch-size`` (default 32, published at ``GET /info``):
      **413** "batch size 40 > maximum allowed batch size 32", type ``Validation``.
    - An input over ``max_input_length`` tokens without auto-truncation: **413** type
      ``Validation``, "Input validation error: `inputs` must have less than 512 tokens. Given:
      600" -- no input index, and a 413 like the batch limit.
    - ``[]``: 400 ``Empty`` "`inputs` cannot be empty"; ``""``: 400 ``Empty`` "Input validation
      error: `inputs` cannot be empty". Bad JSON is axum's plain-text rejection: 400 "Failed to
      parse the request body as JSON: ...", wrong types 422 "Failed to deserialize the JSON body
      into the target type: ...", no JSON content type 415, a body over the payload limit 413.
    - 401 with an empty body when ``--api-key`` is set and the bearer differs.
    - ``model`` is optional and ignored; replies name the served model (``model_id``).
    - 429 "Model is overloaded", type ``Overloaded``, when no concurrency permit is free.
    - 200: ``{"object": "list", "data": [{"object", "embedding", "index"}], "model", "usage":
      {"prompt_tokens", "total_tokens"}}`` with ``x-compute-*`` headers.
    - Not copied: TEI also takes token-id inputs; this stand-in refuses them (422).
    """

    name = "tei"
    model_required = False
    owned_by = "text-embeddings-inference"

    def render(self, p: Problem, ctx: Context) -> Reply:
        body = {"message": p.message, "code": p.status, "type": p.type or "Validation"}
        return Reply(p.status, _dumps(body), headers=p.headers)

    def _rejection(self, status: int, text: str) -> Reply:
        return Reply(status, text.encode("utf-8"), media_type=_TEXT)

    def bad_request(self, failure: BadRequest, ctx: Context) -> Reply:
        r = failure.reason
        if r == "invalid_json":
            return self._rejection(
                400, f"Failed to parse the request body as JSON: {failure.detail}"
            )
        if r == "input_empty_list":
            return self.error(400, "`inputs` cannot be empty", ctx, type="Empty")
        if r == "input_empty_string":
            return self.error(
                400, "Input validation error: `inputs` cannot be empty", ctx, type="Empty"
            )
        what = {
            "input_missing": "missing field `input`",
            "input_item_type": "input: data did not match any variant of untagged enum Input",
            "input_type": "input: data did not match any variant of untagged enum Input",
            "encoding_format": f"encoding_format: unknown variant {failure.received}, expected `float` or `base64`",
            "model_type": f"model: invalid type: {failure.received}, expected a string",
        }.get(r, f"invalid type: {failure.received}, expected struct OpenAICompatRequest")
        return self._rejection(
            422, f"Failed to deserialize the JSON body into the target type: {what}"
        )

    def unsupported_media_type(self, ctx: Context) -> Reply | None:
        return self._rejection(415, "Expected request with `Content-Type: application/json`")

    def unauthorized(self, missing: bool, ctx: Context) -> Reply:
        return Reply(401, b"", media_type=_TEXT)

    def resolve_model(
        self, requested: str | None, config: ModelSettings, ctx: Context
    ) -> str | Reply:
        return config.served_models[0] if config.served_models else DEFAULT_MODEL

    def max_items(self, config: ModelSettings) -> int | None:
        return config.max_items_per_request or config.max_client_batch_size

    def rate_limited(self, ctx: Context, headers: Mapping[str, str]) -> Reply:
        return self.error(429, "Model is overloaded", ctx, type="Overloaded", headers=headers)

    def body_too_large(self, size: int, limit: int, ctx: Context) -> Reply:
        return self._rejection(413, "Failed to buffer the request body: length limit exceeded")

    def too_many_items(self, n: int, limit: int, ctx: Context) -> Reply:
        return self.error(
            413, f"batch size {n} > maximum allowed batch size {limit}", ctx, type="Validation"
        )

    def too_many_chars(self, index: int, n: int, limit: int, ctx: Context) -> Reply:
        message = f"input[{index}] has {n} characters; at most {limit} are allowed"
        return self.error(400, message, ctx, type="Validation")

    def too_many_tokens(self, index: int, n: int, limit: int, ctx: Context) -> Reply:
        message = f"Input validation error: `inputs` must have less than {limit} tokens. Given: {n}"
        return self.error(413, message, ctx, type="Validation")

    def server_error(self, status: int, ctx: Context) -> Reply:
        if status == 503:
            return self.error(503, "unhealthy", ctx, type="Unhealthy")
        return self.error(status, f"Backend error: {_phrase(status)}", ctx, type="Backend")

    def item(self, index: int, embedding: Any) -> dict[str, Any]:
        return {"object": "embedding", "embedding": embedding, "index": index}

    def success_headers(
        self, model: str, tokens: int, chars: int, credits: int, usd: float, ms: int
    ) -> dict[str, str]:
        return {
            "x-compute-type": "cpu",
            "x-compute-time": str(ms),
            "x-compute-characters": str(chars),
            "x-compute-tokens": str(tokens),
            "x-total-time": str(ms),
            "x-tokenization-time": "0",
            "x-queue-time": "0",
            "x-inference-time": str(ms),
        }


class VllmDialect(Dialect):
    """vLLM's OpenAI-compatible server, 2025+ (``ErrorResponse(error=ErrorInfo(...))``).

    - Errors: ``{"error": {"message", "type", "param", "code": <status int>}}``.
    - Request validation (vLLM's handler for FastAPI's ``RequestValidationError``): 400, type
      "Bad Request" (the HTTP phrase), message the pydantic error text (approximated here).
    - Unknown model: 404 ``NotFoundError`` "The model `m` does not exist." (``_check_model``);
      ``model`` may be left out (the first served name answers).
    - Over-long input: 400 ``BadRequestError`` "This model's maximum context length is 512
      tokens. However, you requested 600 tokens in the input for embedding generation. Please
      reduce the length of the input."
    - 401 ``{"error": "Unauthorized"}`` from the ``--api-key`` middleware.
    - 200: ``{"id": "embd-<hex>", "object": "list", "created", "model", "data": [{"index",
      "object", "embedding"}], "usage": {"prompt_tokens", "total_tokens", "completion_tokens": 0,
      "prompt_tokens_details": null}}``.
    - This server's own choices: vLLM has no request-rate limit, so the 429 wording is made up
      in its style; token-id inputs (which vLLM accepts) are refused.
    """

    name = "vllm"
    model_required = False
    empty_string_ok = True
    owned_by = "vllm"

    _PYDANTIC: ClassVar[dict[str, tuple[str, str]]] = {
        "invalid_json": ("json_invalid", "JSON decode error"),
        "not_object": ("model_attributes_type", "Input should be a valid dictionary or object"),
        "model_type": ("string_type", "Input should be a valid string"),
        "input_missing": ("missing", "Field required"),
        "input_empty_list": (
            "too_short",
            "List should have at least 1 item after validation, not 0",
        ),
        "input_type": ("string_type", "Input should be a valid string"),
        "input_item_type": ("string_type", "Input should be a valid string"),
        "encoding_format": ("literal_error", "Input should be 'float' or 'base64'"),
    }

    def envelope(self, p: Problem) -> dict[str, Any]:
        """The error body for ``p``."""
        return {
            "error": {
                "message": p.message,
                "type": p.type or _phrase(p.status),
                "param": p.param,
                "code": p.status,
            }
        }

    def render(self, p: Problem, ctx: Context) -> Reply:
        return Reply(p.status, _dumps(self.envelope(p)), headers=p.headers)

    def bad_request(self, failure: BadRequest, ctx: Context) -> Reply:
        kind, msg = self._PYDANTIC.get(failure.reason, ("value_error", failure.detail))
        loc: tuple[Any, ...] = ("body", failure.field)
        if failure.index is not None:
            loc = (*loc, failure.index)
        message = (
            f"[{{'type': '{kind}', 'loc': {loc!r}, 'msg': '{msg}', 'input': {failure.received!r}}}]"
        )
        return self.error(400, message, ctx, type="Bad Request")

    def unauthorized(self, missing: bool, ctx: Context) -> Reply:
        return Reply(401, _dumps({"error": "Unauthorized"}))

    def unknown_model(self, model: str, ctx: Context) -> Reply:
        return self.error(
            404, f"The model `{model}` does not exist.", ctx, type="NotFoundError", param="model"
        )

    def rate_limited(self, ctx: Context, headers: Mapping[str, str]) -> Reply:
        return self.error(429, "Too Many Requests", ctx, headers=headers)

    def too_many_tokens(self, index: int, n: int, limit: int, ctx: Context) -> Reply:
        message = (
            f"This model's maximum context length is {limit} tokens. However, you requested {n} tokens in "
            "the input for embedding generation. Please reduce the length of the input."
        )
        return self.error(400, message, ctx, type="BadRequestError")

    def server_error(self, status: int, ctx: Context) -> Reply:
        kind = {500: "InternalServerError", 503: "ServiceUnavailableError"}.get(status)
        return self.error(status, _phrase(status), ctx, type=kind)

    def item(self, index: int, embedding: Any) -> dict[str, Any]:
        return {"index": index, "object": "embedding", "embedding": embedding}

    def success_body(
        self, model: str, data: list[dict[str, Any]], tokens: int, credits: int
    ) -> dict[str, Any]:
        return {
            "id": f"embd-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": model,
            "data": data,
            "usage": _vllm_usage(tokens),
        }


class VllmLegacyDialect(VllmDialect):
    """vLLM up to 0.10.1: the same server with a flat error body.

    ``{"object": "error", "message", "type", "param", "code": <status int>}``; everything else
    as ``VllmDialect``. Both envelopes are in use, so clients must read both.
    """

    name = "vllm-legacy"

    def envelope(self, p: Problem) -> dict[str, Any]:
        return {
            "object": "error",
            "message": p.message,
            "type": p.type or _phrase(p.status),
            "param": p.param,
            "code": p.status,
        }


class InfinityDialect(Dialect):
    """michaelfeil/infinity (``infinity_server.py``, ``fastapi_schemas/errors.py``, ``pymodels.py``).

    - Its own errors: ``OpenAIException`` -> ``{"error": {"message", "type": null, "param":
      null, "code": <status>}}``; an overloaded engine 429 "model m is currently overloaded";
      an unknown model 400 "Invalid model: Engine for model name `m` not found. Available model
      names are [...]" -- but with one model served, any name resolves to it
      (``AsyncEngineArray.__getitem__``).
    - Request validation is FastAPI's: **422** ``{"detail": [{"type", "loc", "msg", "input"}]}``
      ("List should have at least 1 item after validation, not 0", "Field required", ...);
      ``""`` is accepted (no minimum length); lists hold at most 2048 items.
    - Auth (``--api-key``): 401 ``{"detail": "Unauthorized"}`` with ``WWW-Authenticate: Bearer``.
    - Inputs over the model's window are truncated, not refused.
    - 200: ``{"object": "list", "data": [{"object", "embedding", "index"}], "model", "usage":
      {"prompt_tokens", "total_tokens"}, "id": "infinity-<uuid>", "created"}``.
    """

    name = "infinity"
    model_required = False
    empty_string_ok = True
    truncates_long_inputs = True
    owned_by = "infinity"

    _FASTAPI: ClassVar[dict[str, tuple[str, tuple[Any, ...], str]]] = {
        "invalid_json": ("json_invalid", ("body", 0), "JSON decode error"),
        "not_object": (
            "model_attributes_type",
            ("body",),
            "Input should be a valid dictionary or object to extract fields from",
        ),
        "model_type": ("string_type", ("body", "text", "model"), "Input should be a valid string"),
        "input_missing": ("missing", ("body", "text", "input"), "Field required"),
        "input_empty_list": (
            "too_short",
            ("body", "text", "input", "list[constrained-str]"),
            "List should have at least 1 item after validation, not 0",
        ),
        "input_item_type": (
            "string_type",
            ("body", "text", "input", "list[constrained-str]"),
            "Input should be a valid string",
        ),
        "input_type": (
            "string_type",
            ("body", "text", "input", "constrained-str"),
            "Input should be a valid string",
        ),
        "encoding_format": (
            "enum",
            ("body", "text", "encoding_format"),
            "Input should be 'float' or 'base64'",
        ),
    }

    def render(self, p: Problem, ctx: Context) -> Reply:
        return Reply(p.status, _openai_envelope(p.message, None, None, p.status), headers=p.headers)

    def bad_request(self, failure: BadRequest, ctx: Context) -> Reply:
        kind, loc, msg = self._FASTAPI[failure.reason]
        where = [*loc, failure.index] if failure.index is not None else list(loc)
        entry = {"type": kind, "loc": where, "msg": msg, "input": failure.value}
        return Reply(422, _dumps({"detail": [entry]}))

    def unauthorized(self, missing: bool, ctx: Context) -> Reply:
        return Reply(
            401, _dumps({"detail": "Unauthorized"}), headers={"www-authenticate": "Bearer"}
        )

    def resolve_model(
        self, requested: str | None, config: ModelSettings, ctx: Context
    ) -> str | Reply:
        served = config.served_models or [DEFAULT_MODEL]
        if len(served) == 1 or requested is None:
            return served[0]
        if requested in served:
            return requested
        message = f"Invalid model: Engine for model name `{requested}` not found. Available model names are {list(served)}"
        return self.error(400, message, ctx)

    def rate_limited(self, ctx: Context, headers: Mapping[str, str]) -> Reply:
        return self.error(429, "model is currently overloaded", ctx, headers=headers)

    def server_error(self, status: int, ctx: Context) -> Reply:
        return self.error(status, f"InternalServerError: {_phrase(status)}", ctx)

    def item(self, index: int, embedding: Any) -> dict[str, Any]:
        return {"object": "embedding", "embedding": embedding, "index": index}

    def success_body(
        self, model: str, data: list[dict[str, Any]], tokens: int, credits: int
    ) -> dict[str, Any]:
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "id": f"infinity-{uuid.uuid4()}",
            "created": int(time.time()),
        }

    def models_body(self, models: Sequence[str]) -> dict[str, Any]:
        created = int(time.time())
        data = [
            {
                "id": m,
                "stats": {},
                "object": "model",
                "owned_by": "infinity",
                "created": created,
                "backend": "hashing-stand-in",
            }
            for m in models
        ]
        return {"data": data, "object": "list"}


class OllamaDialect(Dialect):
    """Ollama's OpenAI layer (``openai/openai.go`` ``NewError``, ``EmbeddingsMiddleware``).

    - Errors: ``{"error": {"message", "type", "param": null, "code": null}}``, type
      ``invalid_request_error`` for 400, ``not_found_error`` for 404, ``api_error`` otherwise.
    - A missing input or ``[]``: 400 "invalid input"; ``""`` becomes ``[""]`` and is embedded;
      a bad ``encoding_format`` (compared case-insensitively): 400 "Invalid value for
      'encoding_format' = x. Supported values: ['float', 'base64']."
    - Unknown model: 404 ``model "m" not found, try pulling it first``; a ``:latest`` tag is
      ignored when matching served names.
    - Inputs over the context window are truncated (the OpenAI route cannot turn that off).
    - 200: ``{"object": "list", "data": [{"object", "embedding", "index"}], "model", "usage":
      {"prompt_tokens", "total_tokens"}}``.
    - This server's own choices: Ollama has no API keys, but this stand-in still checks the
      bearer when a key is set (401 ``api_error``); real Ollama answers a full queue with 503
      "server busy", this server's limits answer 429 with that message.
    """

    name = "ollama"
    empty_string_ok = True
    truncates_long_inputs = True
    owned_by = "library"

    def encoding_format_ok(self, value: str) -> bool:
        return value.lower() in ("float", "base64")

    def render(self, p: Problem, ctx: Context) -> Reply:
        etype = {400: "invalid_request_error", 404: "not_found_error"}.get(p.status, "api_error")
        return Reply(p.status, _openai_envelope(p.message, etype, None, None), headers=p.headers)

    def bad_request(self, failure: BadRequest, ctx: Context) -> Reply:
        r = failure.reason
        if r == "invalid_json":
            message = f"invalid JSON in request body: {failure.detail}"
        elif r == "not_object":
            message = f"json: cannot unmarshal {failure.received} into Go value of type openai.EmbedRequest"
        elif r == "model_missing":
            message = "model is required"
        elif r == "model_type":
            message = f"json: cannot unmarshal {failure.received} into Go struct field EmbedRequest.model of type string"
        elif r == "encoding_format":
            shown = failure.value if isinstance(failure.value, str) else failure.received
            message = f"Invalid value for 'encoding_format' = {shown}. Supported values: ['float', 'base64']."
        elif r in ("input_type", "input_item_type"):
            message = "invalid input type"
        else:
            message = "invalid input"
        return self.error(400, message, ctx)

    def resolve_model(
        self, requested: str | None, config: ModelSettings, ctx: Context
    ) -> str | Reply:
        bare = (requested or "").removesuffix(":latest")
        if any(name.removesuffix(":latest") == bare for name in config.served_models):
            return requested or bare
        return self.unknown_model(requested or "", ctx)

    def unknown_model(self, model: str, ctx: Context) -> Reply:
        return self.error(404, f'model "{model}" not found, try pulling it first', ctx)

    def unauthorized(self, missing: bool, ctx: Context) -> Reply:
        return self.error(401, "unauthorized", ctx)

    def rate_limited(self, ctx: Context, headers: Mapping[str, str]) -> Reply:
        return self.error(
            429,
            "server busy, please try again.  maximum pending requests exceeded",
            ctx,
            headers=headers,
        )

    def server_error(self, status: int, ctx: Context) -> Reply:
        return self.error(status, _phrase(status).lower(), ctx)

    def item(self, index: int, embedding: Any) -> dict[str, Any]:
        return {"object": "embedding", "embedding": embedding, "index": index}


_INSTANCES: dict[str, Dialect] = {
    cls.name: cls()
    for cls in (
        AimlDialect,
        OpenAIDialect,
        TeiDialect,
        VllmDialect,
        VllmLegacyDialect,
        InfinityDialect,
        OllamaDialect,
    )
}

DIALECTS: tuple[str, ...] = tuple(_INSTANCES)
"""Names accepted as ``ServerConfig.dialect``."""


def get_dialect(name: str) -> Dialect:
    """The dialect called ``name`` (one of ``DIALECTS``)."""
    try:
        return _INSTANCES[name]
    except KeyError:
        raise ValueError(f"unknown dialect {name!r}; choose one of {', '.join(DIALECTS)}") from None
