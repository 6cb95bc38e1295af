"""BGE embeddings over the AI/ML API, or any OpenAI-compatible server, for LangChain and LlamaIndex.

The public face of the core: the two clients, their usage record, the rate limiter and the
errors. The adapters live in their own modules so that importing this package loads neither
framework nor the local server::

    from aiml_bge_integrations import EmbeddingsClient
    from aiml_bge_integrations.langchain import AimlBgeEmbeddings      # pip install ...[langchain]
    from aiml_bge_integrations.llama_index import AimlBgeEmbedding     # pip install ...[llama-index]
    from aiml_bge_integrations.server import LocalServer               # pip install ...[server]
"""

from __future__ import annotations

from ._batching import LongTextWarning
from ._settings import BGE_QUERY_INSTRUCTION, DEFAULT_BASE_URL, DEFAULT_MODEL
from .client import AsyncEmbeddingsClient, EmbeddingsClient, RateLimiter, Usage
from .errors import (
    AimlBgeError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    InputTypeError,
    InsufficientCreditsError,
    InternalServerError,
    InvalidInputError,
    ItemRejectedError,
    MissingAPIKeyError,
    ModelMismatchWarning,
    ModelNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
    ResponseTooLargeError,
    ResponseValidationError,
    TextTooLongError,
    UnprocessableEntityError,
)

__version__ = "0.1.0"
"""The package version; the build reads it from here (pyproject.toml, [tool.hatch.version])."""

__all__ = [
    "BGE_QUERY_INSTRUCTION",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AimlBgeError",
    "AsyncEmbeddingsClient",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "EmbeddingsClient",
    "InputTypeError",
    "InsufficientCreditsError",
    "InternalServerError",
    "InvalidInputError",
    "ItemRejectedError",
    "LongTextWarning",
    "MissingAPIKeyError",
    "ModelMismatchWarning",
    "ModelNotFoundError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "RateLimiter",
    "RequestTooLargeError",
    "ResponseTooLargeError",
    "ResponseValidationError",
    "TextTooLongError",
    "UnprocessableEntityError",
    "Usage",
    "__version__",
]
