"""The exception tree of ``aiml_bge_integrations``.

Every error this package raises on purpose derives from :class:`AimlBgeError`::

    AimlBgeError
    ├── ConfigurationError (ValueError)            bad settings; raised at construction
    │   └── MissingAPIKeyError                     no api_key and no AIMLAPI_API_KEY
    ├── InvalidInputError (ValueError)             bad texts, raised before any request
    │   ├── TextTooLongError                       over 512 BGE tokens with long_text="error"
    │   └── InputFileError                         the corpus job's input: unreadable, or a bad record (named)
    ├── InputTypeError (TypeError)                 not texts, or an item that is not str
    ├── ResponseValidationError                    the server's 200 reply is not exactly right
    │   └── ResponseTooLargeError                  a reply larger than its request can need
    ├── OutputError                                the corpus job's output cannot be written
    ├── ResumeError                                a job's checkpoint does not fit the command or its files
    ├── OutputBusyError                            another run of the job holds the output's lock
    └── APIError                                   the request failed
        ├── APIConnectionError                     no reply (refused, reset, dropped)   [retried]
        │   └── APITimeoutError                    timeout or the call's deadline        [retried*]
        └── APIStatusError                         an HTTP error reply (.status_code)
            ├── BadRequestError            400
            │   └── ItemRejectedError      400/413 for one input (.index names it)
            ├── AuthenticationError        401
            ├── PermissionDeniedError      403
            │   └── InsufficientCreditsError  403 out of credits
            ├── NotFoundError              404
            │   └── ModelNotFoundError     404 for the model: retired or not served
            ├── RequestTooLargeError       413 (batches are split and retried first)
            ├── UnprocessableEntityError   422
            ├── RateLimitError             429                                   [retried]
            │   └── QuotaExceededError     429 free tier's hourly limit reached: not retried
            └── InternalServerError        5xx                                   [retried]

Warnings (``warnings.warn``, never raised): ``ModelMismatchWarning`` (UserWarning), once per
client, when a server's reply names another model than the one requested.

``[retried]`` errors reach the caller only once retries or the deadline run out
(*a deadline that has run out is not retried). 408 and 409 are retried and, if they persist,
surface as ``APIStatusError``.

Each ``APIError`` carries ``status_code`` (``None`` without a reply), ``message`` (the server's
own words from any known error body shape), ``request_id`` (``x-inference-id``,
``x-request-id`` or the body's ``requestId``) and ``body``. No message ever contains the API key.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AimlBgeError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "InputFileError",
    "InputTypeError",
    "InsufficientCreditsError",
    "InternalServerError",
    "InvalidInputError",
    "ItemRejectedError",
    "MissingAPIKeyError",
    "ModelMismatchWarning",
    "ModelNotFoundError",
    "NotFoundError",
    "OutputBusyError",
    "OutputError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "RequestTooLargeError",
    "ResponseTooLargeError",
    "ResponseValidationError",
    "ResumeError",
    "TextTooLongError",
    "UnprocessableEntityError",
    "status_error_class",
]


class AimlBgeError(Exception):
    """Root of every error raised by this package."""

    def __reduce__(self) -> Any:
        # Pickle by state, not by replaying __init__ (several subclasses take keyword-only or
        # extra arguments), so errors cross process boundaries (multiprocessing, joblib).
        return (_restore_error, (type(self), self.args, self.__dict__))


def _restore_error(cls: type[AimlBgeError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    err = cls.__new__(cls, *args)
    err.args = args
    err.__dict__.update(state)
    return err


class ConfigurationError(AimlBgeError, ValueError):
    """A setting is invalid (raised when the client or adapter is built).

    Also raised at the first call in a forked child when the client was given an
    ``http_client`` in the parent: its connections are the parent's sockets.
    """


class MissingAPIKeyError(ConfigurationError):
    """No API key was given and ``AIMLAPI_API_KEY`` is not set."""


class InvalidInputError(AimlBgeError, ValueError):
    """One or more texts are unusable; ``indices`` names them. Nothing was sent."""

    def __init__(self, message: str, indices: list[int] | None = None) -> None:
        super().__init__(message)
        self.indices: list[int] = list(indices or [])


class TextTooLongError(InvalidInputError):
    """Texts exceed the model's token window and ``long_text="error"``; ``token_counts`` maps index -> tokens."""

    def __init__(self, message: str, token_counts: dict[int, int]) -> None:
        super().__init__(message, sorted(token_counts))
        self.token_counts = dict(token_counts)


class InputTypeError(AimlBgeError, TypeError):
    """The input is not an iterable of ``str``; ``index`` names the offending item when there is one."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class ResponseValidationError(AimlBgeError):
    """A 200 reply that cannot be trusted: wrong count, bad or duplicate index, wrong dimension, bad JSON.

    Raised after the bounded validation retries; never a silently wrong list.
    """

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class ResponseTooLargeError(ResponseValidationError):
    """A reply grew past the bytes its request can need (``limit``); reading stopped there.

    Never retried: the same request would fetch the same reply. ``max_response_bytes``
    raises the bound for a server that needs more.
    """

    def __init__(self, message: str, *, limit: int, request_id: str | None = None) -> None:
        super().__init__(message, request_id=request_id)
        self.limit = limit


# -- the corpus job (``aiml-bge embed`` and the Ray job) -------------------------------------


class InputFileError(InvalidInputError):
    """The job's input cannot be read or has a bad record; the message names the file and line."""

    def __init__(self, message: str, *, path: Path | None = None, line: int | None = None):
        super().__init__(message)
        self.path = path
        self.line = line


class OutputError(AimlBgeError):
    """The job's output (or its staging directory next to it) cannot be written."""


class ResumeError(AimlBgeError):
    """A job's checkpoint does not fit this command, or disagrees with the files it describes."""


class OutputBusyError(AimlBgeError):
    """Another run is writing the same output: it holds the lock of its work directory."""


class APIError(AimlBgeError):
    """A request to the embeddings endpoint failed."""

    status_code: int | None = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.request_id = request_id
        self.body = body

    def __str__(self) -> str:
        parts = [self.message]
        if self.status_code is not None:
            parts.insert(0, f"HTTP {self.status_code}:")
        if self.request_id:
            parts.append(f"(request id {self.request_id})")
        return " ".join(parts)


class APIConnectionError(APIError):
    """No usable reply: the connection was refused, reset or dropped mid-response."""


class APITimeoutError(APIConnectionError):
    """The request timed out, or the call's overall deadline ran out."""


class APIStatusError(APIError):
    """The server answered with an HTTP error status."""


class BadRequestError(APIStatusError):
    """400: the server refused the request body."""

    status_code = 400


class ItemRejectedError(BadRequestError):
    """The server refused one input; ``index`` is its position in the caller's list."""

    def __init__(self, message: str, *, index: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.index = index


class AuthenticationError(APIStatusError):
    """401: the API key is missing or wrong."""

    status_code = 401


class PermissionDeniedError(APIStatusError):
    """403: the key is valid but not allowed."""

    status_code = 403


class InsufficientCreditsError(PermissionDeniedError):
    """403: the account is out of credits."""


class NotFoundError(APIStatusError):
    """404: unknown endpoint (check ``base_url``: requests go to ``{base_url}/embeddings``)."""

    status_code = 404


class ModelNotFoundError(NotFoundError):
    """404 for the model: retired by the vendor or not served by this server."""


class RequestTooLargeError(APIStatusError):
    """413: the request was too large even after splitting."""

    status_code = 413


class UnprocessableEntityError(APIStatusError):
    """422: the body was well formed but refused."""

    status_code = 422


class RateLimitError(APIStatusError):
    """429: rate or concurrency limit; retried with backoff honouring Retry-After."""

    status_code = 429


class QuotaExceededError(RateLimitError):
    """429 for a used-up quota (the AI/ML API free tier's hourly limit): not retried.

    Retrying within minutes only burns time; the message says when the quota resets where the
    reply says so. ``retry_after`` is the seconds until then and ``resets_at`` the moment (UTC),
    both ``None`` when the reply does not say.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        resets_at: datetime | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after
        self.resets_at = resets_at


class InternalServerError(APIStatusError):
    """5xx: the server failed; retried."""


class ModelMismatchWarning(UserWarning):
    """The server answered with another model than the one asked for (said once per client).

    Servers that host a single model (infinity, TEI) answer any model name with their own
    vectors; the reply's ``model`` field is then the only sign that the vectors, and the query
    instruction put in front of queries, are not those of the model in the settings.
    """


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: RequestTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status: int) -> type[APIStatusError]:
    """The exception class for an HTTP error status."""
    if status >= 500:
        return InternalServerError
    return _BY_STATUS.get(status, APIStatusError)
