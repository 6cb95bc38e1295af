"""The clients' constants, in one place: retries, requests in flight, reply bounds, identity.

The settings' defaults (batch size, concurrency, timeout...) are defined with the settings
themselves in ``_settings``; what is here is fixed, not configurable.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_VECTOR_DIMENSION",
    "ERROR_BODY_LIMIT",
    "INITIAL_DELAY",
    "IN_FLIGHT_FACTOR",
    "LOOPBACK_HOSTS",
    "MAX_DELAY",
    "MAX_RETRY_AFTER",
    "MAX_VALIDATION_RETRIES",
    "RATE_LIMIT_INITIAL_DELAY",
    "RATE_LIMIT_MAX_DELAY",
    "REPLY_BYTES_PER_INPUT",
    "REPLY_MARGIN",
    "RETRYABLE_STATUSES",
    "USER_AGENT",
    "batches_in_flight",
    "error_body_limit",
    "reply_bytes_per_number",
]

# -- retries ----------------------------------------------------------------------------------

INITIAL_DELAY = 0.5
"""Seconds before the first retry of a server error, connection error or timeout."""
MAX_DELAY = 8.0
"""Cap on one backoff delay for those."""
RATE_LIMIT_INITIAL_DELAY = 1.0
"""Seconds before the first retry of a 429 that carries no Retry-After."""
RATE_LIMIT_MAX_DELAY = 30.0
"""Cap for 429 backoff: six retries then span about a minute, the window of per-minute limits."""
MAX_RETRY_AFTER = 60.0
"""The longest Retry-After honoured; a longer one is capped to this."""
MAX_VALIDATION_RETRIES = 2
"""How often a 200 reply that fails validation is asked for again before ResponseValidationError."""
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
"""Statuses retried. Any other 5xx is retried too; 400/401/403/404/413/422 never are."""

# -- requests in flight -------------------------------------------------------------------------

IN_FLIGHT_FACTOR = 2
"""Batches submitted, worker threads and pooled connections per request allowed in flight: a
reply whose body is still being read (or parsed) has already given its slot back, and the
next request goes out meanwhile."""


def batches_in_flight(limit: int) -> int:
    """Batches (threads, connections) to keep going for ``limit`` requests in flight."""
    return IN_FLIGHT_FACTOR * limit


# -- reply bounds -------------------------------------------------------------------------------

DEFAULT_VECTOR_DIMENSION = 8192
"""The dimension assumed for the bound on a reply when the model's is not known (the largest
embedding models in use have 4,096)."""
REPLY_MARGIN = 64 * 1024
"""Bytes allowed in a reply beyond its vectors (usage, model name, whitespace)."""
REPLY_BYTES_PER_INPUT = 256
"""Bytes per vector beyond its numbers (``{"object": "embedding", "index": ...}``)."""
ERROR_BODY_LIMIT = 64 * 1024
"""Bytes read of an error reply beyond what it may echo of the request (see ``error_body_limit``)."""


def error_body_limit(request_bytes: int) -> int:
    """The most bytes read of an error reply to a request of ``request_bytes``; the rest is not read.

    Validation errors echo what was sent (infinity's 422 for a text over its limit carries the
    whole text in ``detail[].input``), so the bound grows with the request: twice its size (JSON
    escapes) plus ``ERROR_BODY_LIMIT``.
    """
    return ERROR_BODY_LIMIT + 2 * request_bytes


def reply_bytes_per_number(encoding_format: str | None) -> int:
    """The most bytes one vector component takes on the wire in ``encoding_format``.

    base64 float32: 4 bytes written as 16/3 characters. A JSON float: at most 24 characters
    (``-1.2345678901234567e-123``) and a comma; servers that write float32s write fewer.
    """
    return 6 if encoding_format == "base64" else 26


# -- identity -----------------------------------------------------------------------------------

USER_AGENT = "aiml-bge-integrations/0.1"
"""The ``User-Agent`` of every request."""
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
"""Hosts the key may be sent to over plain http without ``allow_insecure_http``."""
