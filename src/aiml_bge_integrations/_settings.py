"""Every default and environment variable of the package, in one place."""

from __future__ import annotations

import re

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "BGE_QUERY_INSTRUCTION",
    "DEFAULT_BASE_URL",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MODEL",
    "DEFAULT_TIMEOUT",
    "KNOWN_DIMENSIONS",
    "LONG_TEXT_POLICIES",
    "MODEL_ENV",
    "default_query_instruction",
    "expected_dimension",
    "is_bge_model",
]

API_KEY_ENV = "AIMLAPI_API_KEY"
"""Environment variable holding the API key."""
BASE_URL_ENV = "AIMLAPI_BASE_URL"
"""Environment variable overriding the base URL."""
MODEL_ENV = "AIMLAPI_EMBEDDING_MODEL"
"""Environment variable overriding the default model."""

DEFAULT_BASE_URL = "https://api.aimlapi.com/v1"
DEFAULT_MODEL = "BAAI/bge-base-en-v1.5"
DEFAULT_BATCH_SIZE = 128
"""Inputs per request. No cap is published for the AI/ML API; servers that have one are learned."""
DEFAULT_MAX_CONCURRENCY = 16
"""The most requests in flight per client; below it, the client keeps what the server sustains."""
DEFAULT_MAX_RETRIES = 6
DEFAULT_TIMEOUT = 60.0
"""Seconds for one HTTP request (connect, write, read, pool)."""

BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "
"""The retrieval instruction from the BGE English model card; queries only, never passages."""

LONG_TEXT_POLICIES = ("truncate", "error", "none")
"""What the core does with a BGE input over 512 tokens (see README, "Long texts")."""

BGE_MAX_TOKENS = 512

KNOWN_DIMENSIONS: dict[str, int] = {
    "BAAI/bge-small-en-v1.5": 384,
    "BAAI/bge-base-en-v1.5": 768,
    "BAAI/bge-large-en-v1.5": 1024,
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
"""Dimensions checked in every response for these models (others: one dimension throughout)."""

_BGE_RE = re.compile(r"(^|/)bge-[a-z]+-en(-v1\.5)?$", re.IGNORECASE)


_TAG_ALIASES = {"bge-large": "BAAI/bge-large-en-v1.5", "bge-base": "BAAI/bge-base-en-v1.5"}
"""Short names some servers use (Ollama's library tag ``bge-large``) for the BGE English models."""


def _bare(model: str) -> str:
    # Servers such as Ollama name models "bge-large:latest" or "org/bge-base-en-v1.5".
    name = model.split(":", 1)[0]
    return _TAG_ALIASES.get(name, name)


def is_bge_model(model: str) -> bool:
    """True for the BGE English models (bge-small/base/large-en, v1 or v1.5), under any org prefix."""
    return bool(_BGE_RE.search(_bare(model)))


def default_query_instruction(model: str) -> str | None:
    """The query instruction a model gets when the caller does not choose one."""
    return BGE_QUERY_INSTRUCTION if is_bge_model(model) else None


def expected_dimension(model: str) -> int | None:
    """The vector length a model is known to return, if known."""
    bare = _bare(model)
    if bare in KNOWN_DIMENSIONS:
        return KNOWN_DIMENSIONS[bare]
    tail = bare.rsplit("/", 1)[-1].lower()
    for name, dim in KNOWN_DIMENSIONS.items():
        if name.rsplit("/", 1)[-1].lower() == tail:
            return dim
    return None
