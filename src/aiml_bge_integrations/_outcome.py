"""What an attempt came to, pure: a reply or a transport failure -> vectors, retry, split or error.

Every function takes what it needs as arguments (the request's context, the reply's status,
headers and bytes); nothing here does I/O or keeps state, so all of it is tested without a
socket. The request loop (``_engine``) acts on the ``Outcome``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from . import _retry
from ._deprecations import free_tier_quota_error, is_free_tier_quota
from ._secrets import SecretKey
from ._settings import API_KEY_ENV, BASE_URL_ENV, MODEL_ENV, same_model
from ._wire import (
    ErrorInfo,
    ParsedEmbeddings,
    WireError,
    batch_limit_in_message,
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
    InsufficientCreditsError,
    ItemRejectedError,
    ModelNotFoundError,
    ResponseTooLargeError,
    ResponseValidationError,
    status_error_class,
)

__all__ = [
    "Context",
    "Outcome",
    "ReplyTooLarge",
    "WallTimeout",
    "interpret",
    "scrub_secret",
    "status_error",
    "transport_outcome",
]


@dataclass(frozen=True)
class Context:
    """What the decisions need to know of the client that sent the request."""

    model: str
    base_url: str
    key: SecretKey
    expected_dim: int | None = None

    @property
    def url(self) -> str:
        """Where requests go."""
        return self.base_url + "/embeddings"


@dataclass
class Outcome:
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
    batch_limit: int | None = None
    """The most inputs per request the server said it takes, when it said so."""


class WallTimeout(Exception):
    """The request ran past its time, from sending to the last byte (raised by a driver)."""


class ReplyTooLarge(Exception):
    """A reply's body grew past ``limit`` bytes (raised by a driver while reading)."""

    def __init__(self, limit: int, request_id: str | None = None) -> None:
        super().__init__(limit)
        self.limit = limit
        self.request_id = request_id


def interpret(
    ctx: Context,
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    count: int,
    offset: int,
) -> Outcome:
    """The outcome of a reply to a request for ``count`` texts starting at ``offset``."""
    if status == 200:
        try:
            parsed = parse_embeddings_response(
                content, count, expected_dim=ctx.expected_dim, headers=headers
            )
        except WireError as err:
            rid = headers.get("x-inference-id") or headers.get("x-request-id")
            message = f"invalid reply for texts {offset}..{offset + count - 1}: {err}"
            served = _reply_model(content)
            other_model = served is not None and not same_model(served, ctx.model)
            if other_model:
                # A single-model server answers any name with its own vectors: asking
                # again cannot help, and the fix is in the settings.
                message += (
                    f". The server answered with model {served!r}, not {ctx.model!r}: "
                    f"set model={served!r} if that is the model you want"
                )
            return Outcome(
                error=ResponseValidationError(message, request_id=rid),
                retry=not other_model,
                cause="validation",
            )
        return Outcome(parsed=parsed)
    key = ctx.key.get()
    # Scrub the body itself, not only the message: it is kept on the error as ``.body``.
    content = _scrub_bytes(content, key)
    info = parse_error_body(content, headers)
    message = scrub_secret(info.message, key)
    body = _error_body(content)
    if status in (400, 413, 422):
        # An input the server names is refused at once: splitting would only embed (and
        # bill) the rest of the batch before the same error.
        pos = info.item_index if info.item_index is not None else item_index_in_message(message)
        if pos is not None and pos < count:
            return Outcome(error=_item_error(status, message, info, offset + pos, body))
        too_large = says_batch_too_large(status, message)
        if too_large or says_input_too_long(message):
            if count > 1:
                limit = batch_limit_in_message(message) if too_large else None
                learned = limit if limit and 0 < limit < count else None
                return Outcome(split=True, cause=str(status), batch_limit=learned)
            return Outcome(error=_item_error(status, message, info, offset, body))
    if is_free_tier_quota(status, message):
        # The hourly quota is used up: waiting minutes between retries cannot clear it.
        quota = free_tier_quota_error(
            message, headers=headers, request_id=info.request_id, body=body
        )
        return Outcome(error=quota, cause=str(status))
    return Outcome(
        error=status_error(ctx, status, message, info, body),
        retry=_retry.is_retryable_status(status),
        cause=str(status),
        retry_after=_retry.parse_retry_after(headers),
    )


def transport_outcome(ctx: Context, err: Exception, kind: str, timeout: float) -> Outcome:
    """The outcome of a request that got no usable reply.

    ``err`` is what the driver caught and ``kind`` what it is: ``"too_large"`` (a
    ``ReplyTooLarge``: never retried, the same request fetches the same reply), or, retried,
    ``"timeout"`` (the request ran past ``timeout`` seconds), ``"decoding"`` (a body that
    does not decode as its ``Content-Encoding`` says) or ``"connection"``.
    """
    if isinstance(err, ReplyTooLarge):
        return Outcome(
            error=ResponseTooLargeError(
                f"the reply from {ctx.url} grew past {err.limit:,} bytes, more than this "
                "request can need; reading stopped there (max_response_bytes raises the bound)",
                limit=err.limit,
                request_id=err.request_id,
            ),
            cause="validation",
        )
    if kind == "timeout":
        return Outcome(
            error=APITimeoutError(f"request timed out ({type(err).__name__}) after {timeout:g}s"),
            retry=True,
            cause="timeout",
        )
    detail = scrub_secret(str(err), ctx.key.get()) or type(err).__name__
    what = "sent a reply that does not decode" if kind == "decoding" else "failed"
    return Outcome(
        error=APIConnectionError(f"connection to {ctx.base_url} {what}: {detail}"),
        retry=True,
        cause=kind,
    )


def status_error(
    ctx: Context, status: int, message: str, info: ErrorInfo, body: Any
) -> APIStatusError:
    """The error for an HTTP error status, with advice where the fix is in the settings."""
    cls: type[APIStatusError] = status_error_class(status)
    lowered = message.lower()
    advice = ""
    if status == 404:
        if "model" in lowered or "deprecated" in lowered or "not supported" in lowered:
            cls = ModelNotFoundError
            if _is_aiml_api(ctx.base_url):
                advice = (
                    f"The AI/ML API does not serve {ctx.model!r}: it retired the BGE models "
                    f"from its list in 2026. Choose a model it serves with model=... (or "
                    f"{MODEL_ENV}), or point base_url (or {BASE_URL_ENV}) at an "
                    "OpenAI-compatible server that hosts BGE (docs: Self-hosting BGE)."
                )
            else:
                advice = (
                    f"The server at {ctx.base_url} does not serve {ctx.model!r}: ask for a "
                    f"model it serves with model=... (or {MODEL_ENV}; most servers list "
                    f"theirs at {ctx.base_url}/models), or point base_url (or "
                    f"{BASE_URL_ENV}) at a server that serves it."
                )
        else:
            advice = (
                f"Requests go to {ctx.url}, which this server does not have: check "
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


def _item_error(
    status: int, message: str, info: ErrorInfo, index: int, body: Any
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


def _error_body(content: bytes) -> Any:
    """The error reply's body, parsed (JSON) or as a short excerpt; already scrubbed."""
    if not content:
        return None
    try:
        return orjson.loads(content)
    except ValueError:
        return content[:500].decode("utf-8", "replace")


def _is_aiml_api(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").lower()
    return host == "aimlapi.com" or host.endswith(".aimlapi.com")


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


def scrub_secret(text: str, key: str) -> str:
    """``text`` with the API key replaced by ``***``.

    A key of fewer than eight characters (a test or local-server key) is replaced only where it
    stands as a token of its own, so that replacing it does not garble the words around it.
    """
    if not key or key not in text:
        return text
    if len(key) >= _SHORT_SECRET:
        return text.replace(key, "***")
    return re.sub(rf"(?<![\w-]){re.escape(key)}(?![\w-])", "***", text)


def _scrub_bytes(content: bytes, key: str) -> bytes:
    text = content.decode("utf-8", "replace")
    if key not in text:
        return content
    return scrub_secret(text, key).encode("utf-8")
