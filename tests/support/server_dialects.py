"""The local server's test-only dialects: what other embeddings servers answer, over real HTTP.

The package ships the AI/ML API's dialect only (what users run). The client, though, must read
every self-hosted server's replies, so its tests run the same local server worded as each of
them. These classes plug into the package's seam (``aiml_bge_integrations.server.register_dialect``);
``tests/conftest.py`` registers them once per session, so tests select them by name
(``LocalServer(dialect="tei")``). Each class cites the real behaviour it copies; where the
source did not settle a detail, its docstring says the value is this stand-in's own choice.

===============  ===========================================================================
dialect          mimics
===============  ===========================================================================
``openai``       the OpenAI API itself (api.openai.com)
``tei``          Hugging Face text-embeddings-inference, router ``/v1/embeddings``
``vllm``         vLLM's OpenAI server, 2025+ envelope ``{"error": {...}}``
``vllm-legacy``  vLLM up to 0.10.1, flat envelope ``{"object": "error", ...}``
``infinity``     michaelfeil/infinity (FastAPI)
``ollama``       Ollama's OpenAI compatibility layer
``nim``          an NVIDIA NIM-style server that adds e5's prefixes itself (``input_type``)
``cohere-compat``  an OpenAI-compatible gateway taking Cohere's ``input_type`` values
===============  ===========================================================================

Where a real server takes the side as a request field (``input_type``; TEI's
``prompt_name``), the dialect lists its values in ``input_types`` and the server adds the
matching prefix before embedding, so a query's vector differs from a passage's exactly as
``"query: " + text`` differs from ``"passage: " + text``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import orjson

from aiml_bge_integrations import DEFAULT_MODEL
from aiml_bge_integrations.server import register_dialect

# The package's own reason phrases and usage block: these servers word them the same way.
from aiml_bge_integrations.server.dialects import (
    BadRequest,
    Context,
    Dialect,
    ModelSettings,
    Problem,
    Reply,
    _phrase,
    _usage,
)

__all__ = [
    "DIALECTS",
    "SIDE_DIALECTS",
    "TEST_DIALECTS",
    "CohereCompatDialect",
    "InfinityDialect",
    "NimDialect",
    "OllamaDialect",
    "OpenAIDialect",
    "TeiDialect",
    "VllmDialect",
    "VllmLegacyDialect",
    "register_test_dialects",
]

_TEXT = "text/plain; charset=utf-8"


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _openai_envelope(message: str, type_: str | None, param: str | None, code: Any) -> bytes:
    return _dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


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
    - ``prompt_name`` names a prompt of the model's sentence-transformers configuration, which
      TEI puts in front of every input; this stand-in serves e5's ``{"query": "query: ",
      "passage": "passage: "}``. A name it does not have: 413 ``Validation`` (its wording here
      is this stand-in's own).
    - Not copied: TEI also takes token-id inputs; this stand-in refuses them (422).
    """

    name = "tei"
    model_required = False
    owned_by = "text-embeddings-inference"
    publishes_info = True
    input_type_field = "prompt_name"
    input_types: ClassVar[Mapping[str, str]] = {"query": "query: ", "passage": "passage: "}
    default_max_items = 32
    default_max_batch_tokens = 16384
    """TEI's default ``--max-batch-tokens``, published at ``GET /info``."""
    """TEI's default ``--max-client-batch-size``; ``max_items_per_request``, when set, replaces it."""

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
        if r == "unknown_input_type":
            message = (
                f"Input validation error: prompt_name {failure.received} is not in the prompts"
            )
            return self.error(413, message, ctx, type="Validation")
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
            "usage": _usage(tokens),
        }

    def models_body(self, models: Sequence[str], max_input_length: int = 512) -> dict[str, Any]:
        # vLLM's ModelCard: root is the model's path, max_model_len its context in tokens.
        created = int(time.time())
        data = [
            {
                "id": m,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": m,
                "parent": None,
                "max_model_len": max_input_length,
                "permission": [
                    {
                        "id": f"modelperm-{uuid.uuid4().hex}",
                        "object": "model_permission",
                        "created": created,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for m in models
        ]
        return {"object": "list", "data": data}


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

    def too_many_items(self, n: int, limit: int, ctx: Context) -> Reply:
        # As recorded from infinity 0.0.78 (tests/fixtures/infinity/too_many_items.json),
        # without echoing the inputs back.
        entry = {
            "type": "too_long",
            "loc": ["body", "text", "input", "list[constrained-str]"],
            "msg": f"List should have at most {limit} items after validation, not {n}",
        }
        return Reply(422, _dumps({"detail": [entry]}))

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

    def models_body(self, models: Sequence[str], max_input_length: int = 512) -> dict[str, Any]:
        # As infinity 0.0.78 answers (tests/fixtures/infinity/models.json), the backend named
        # for what it is.
        created = int(time.time())
        stats = {"queue_fraction": 0.0, "queue_absolute": 0, "results_pending": 0, "batch_size": 32}
        data = [
            {
                "id": m,
                "stats": stats,
                "object": "model",
                "owned_by": "infinity",
                "created": created,
                "backend": "hashing-stand-in",
                "capabilities": ["embed"],
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


class NimDialect(OpenAIDialect):
    """An NVIDIA NIM-style server for an e5 model that adds e5's prefixes itself.

    - ``input_type`` ``"query"`` puts ``query: `` in front of every input, ``"passage"`` (or
      ``"document"``) ``passage: ``; any other value is a 400 in OpenAI's envelope.
    - A request without ``input_type`` is embedded as a query, as the multilingual-e5 server
      users met does (real NIM refuses such a request for asymmetric models: not copied).
    - Everything else as ``OpenAIDialect``.
    """

    name = "nim"
    input_types: ClassVar[Mapping[str, str]] = {
        "query": "query: ",
        "passage": "passage: ",
        "document": "passage: ",
    }
    default_input_type = "query"

    def bad_request(self, failure: BadRequest, ctx: Context) -> Reply:
        if failure.reason == "unknown_input_type":
            message = f"Invalid value for 'input_type': {failure.received}. Supported values are: {failure.expected}."
            return self.error(400, message, ctx, type="invalid_request_error", param="input_type")
        return super().bad_request(failure, ctx)


class CohereCompatDialect(NimDialect):
    """An OpenAI-compatible gateway in front of a Cohere-style model: ``input_type``
    ``"search_query"`` / ``"search_document"`` (nomic-embed's prefixes, which carry the same
    names, are what it adds); none sent, no prefix (this stand-in's choice)."""

    name = "cohere-compat"
    input_types: ClassVar[Mapping[str, str]] = {
        "search_query": "search_query: ",
        "search_document": "search_document: ",
    }
    default_input_type = None


TEST_DIALECTS: tuple[Dialect, ...] = (
    OpenAIDialect(),
    TeiDialect(),
    VllmDialect(),
    VllmLegacyDialect(),
    InfinityDialect(),
    OllamaDialect(),
    NimDialect(),
    CohereCompatDialect(),
)
"""One instance of each test-only dialect (dialects hold no per-request state)."""

SIDE_DIALECTS: tuple[str, ...] = ("nim", "cohere-compat")
"""Servers that take the side as ``input_type`` and prefix every input themselves: their
vectors differ from the others' on purpose, so they are tested apart (``tests/selfhosted``)."""

DIALECTS: tuple[str, ...] = (
    "aiml",
    *(d.name for d in TEST_DIALECTS if d.name not in SIDE_DIALECTS),
)
"""The dialects whose wire every test checks: the shipped ``aiml`` first, then the test-only
ones whose vectors are the plain stand-in's."""


def register_test_dialects() -> None:
    """Make every test-only dialect selectable by name (idempotent)."""
    for dialect in TEST_DIALECTS:
        register_dialect(dialect)
