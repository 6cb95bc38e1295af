"""LangChain adapter: ``AimlBgeEmbeddings``, a drop-in ``Embeddings`` for chains, vector stores and caches.

Settings and delegation only. Batching, concurrency, retries, reply checks, the long-text
policy and usage totals all live in the request core (``EmbeddingsClient`` and
``AsyncEmbeddingsClient``); this module turns LangChain's interface into calls on one client of
each kind, built from the adapter's settings and sharing one rate limiter.

Install with ``pip install "aiml-bge-integrations[langchain]"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import httpx
from langchain_core.embeddings import Embeddings
from langchain_core.load.serializable import Serializable
from langchain_core.utils.utils import secret_from_env
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, model_validator
from pydantic.json_schema import SkipJsonSchema
from typing_extensions import Self

from ._adapter import CoreClients, core_error
from ._settings import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT,
    MODEL_ENV,
    default_query_instruction,
)
from .client import AsyncEmbeddingsClient, EmbeddingsClient, RateLimiter, Usage

__all__ = ["AimlBgeEmbeddings"]

_INJECTED = ("http_client", "http_async_client", "rate_limiter")
"""Caller-supplied objects: shared, never serialised, pickled or deep-copied."""


def _env_or(name: str, default: str) -> Callable[[], str]:
    # An empty variable counts as unset, as in the core.
    def factory() -> str:
        return os.environ.get(name) or default

    return factory


def _tqdm() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError as err:
        raise ImportError(
            "show_progress=True needs tqdm: pip install tqdm (or aiml-bge-integrations[cli])"
        ) from err
    return tqdm


class AimlBgeEmbeddings(Serializable, Embeddings):
    """BGE embeddings over the AI/ML API, or any OpenAI-compatible server, for LangChain.

    Queries (``embed_query``) get the BGE retrieval instruction in front of them; documents
    never do. Batching, bounded concurrency, retries with backoff, reply checks and usage
    totals come from the request core (``EmbeddingsClient`` / ``AsyncEmbeddingsClient``).

    Setup:
        Install ``aiml-bge-integrations`` with the ``langchain`` extra and set the environment
        variable ``AIMLAPI_API_KEY`` (``AIMLAPI_BASE_URL`` points at another OpenAI-compatible
        server, such as the bundled local one: ``aiml-bge serve``).

        ```bash
        pip install -U "aiml-bge-integrations[langchain]"
        export AIMLAPI_API_KEY="your-api-key"
        ```

    Key init args — embedding params:
        model:
            Model name (default ``BAAI/bge-base-en-v1.5``, or ``AIMLAPI_EMBEDDING_MODEL``).
        query_instruction:
            Prefix for queries only. Unset: the model's default (the BGE retrieval
            instruction for BGE English models); ``None`` disables it.
        batch_size:
            Texts per request.
        long_text:
            BGE inputs over 512 tokens: ``"truncate"`` (default), ``"error"`` or ``"none"``.

    Key init args — client params:
        api_key:
            API key; read from ``AIMLAPI_API_KEY`` when not given.
        base_url:
            Root of the OpenAI-compatible API; ``AIMLAPI_BASE_URL``, else the AI/ML API.
        max_concurrency:
            Requests in flight at once.
        max_retries:
            Retries per request for 429, 5xx, timeouts and dropped connections.
        timeout, deadline:
            Seconds per HTTP request, and for one whole call across retries.
        requests_per_minute, tokens_per_minute:
            An optional client-side pace, shared by the sync and async methods.

    See the field list for every setting; the names are those of the core clients.

    Instantiate:
        ```python
        from aiml_bge_integrations.langchain import AimlBgeEmbeddings

        embeddings = AimlBgeEmbeddings(
            model="BAAI/bge-base-en-v1.5",
            # api_key="...",   # else AIMLAPI_API_KEY
            # base_url="...",  # else AIMLAPI_BASE_URL, else https://api.aimlapi.com/v1
            batch_size=64,
        )
        ```

    Embed single text:
        ```python
        vector = embeddings.embed_query("Which model turns text into vectors?")
        print(len(vector))
        ```
        ```python
        768
        ```

    Embed multiple texts:
        ```python
        vectors = embeddings.embed_documents(
            ["BGE is a family of text embedding models.", "Paris is the capital of France."]
        )
        print(len(vectors), len(vectors[0]))
        ```
        ```python
        2 768
        ```

    Async:
        ```python
        vector = await embeddings.aembed_query("Which model turns text into vectors?")
        vectors = await embeddings.aembed_documents(["first passage", "second passage"])
        print(len(vector), len(vectors))
        ```
        ```python
        768 2
        ```

    Usage and cost:
        ```python
        usage = embeddings.usage  # requests, retries, texts, prompt_tokens, credits, usd
        print(usage.requests, usage.texts)
        ```
        ```python
        4 6
        ```
    """

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        arbitrary_types_allowed=True,
        # The one-line docstrings under the fields become their descriptions.
        use_attribute_docstrings=True,
        # A pydantic error would otherwise print the arguments, the API key among them.
        hide_input_in_errors=True,
    )

    api_key: SecretStr | None = Field(default_factory=secret_from_env(API_KEY_ENV, default=None))
    """API key (Bearer); read from ``AIMLAPI_API_KEY`` when not given."""
    base_url: str = Field(default_factory=_env_or(BASE_URL_ENV, DEFAULT_BASE_URL))
    """Root of the OpenAI-compatible API: ``AIMLAPI_BASE_URL``, else the AI/ML API."""
    model: str = Field(default_factory=_env_or(MODEL_ENV, DEFAULT_MODEL))
    """Model name sent with every request: ``AIMLAPI_EMBEDDING_MODEL``, else bge-base-en-v1.5."""
    batch_size: int = DEFAULT_BATCH_SIZE
    """Texts per request (lowered automatically when a server states a smaller limit)."""
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    """Requests awaiting their reply at once, per client (the sync and the async one each)."""
    max_retries: int = DEFAULT_MAX_RETRIES
    """Retries per request for retryable failures (429, 5xx, 408/409, connection, timeout)."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds for one HTTP request."""
    deadline: float | None = None
    """Seconds for one whole call across retries (``None``: no overall limit)."""
    query_instruction: str | None = None
    """Prefix for queries only; unset means the model's default, ``None`` disables it."""
    default_headers: dict[str, str] | None = None
    """Extra headers on every request (cannot replace ``Authorization``)."""
    encoding_format: Literal["float", "base64"] | None = None
    """``None`` (not sent), ``"float"`` or ``"base64"`` (where the server supports it)."""
    long_text: Literal["truncate", "error", "none"] = "truncate"
    """BGE inputs over 512 tokens: cut to fit (warning), raise ``TextTooLongError``, or send as is."""
    allow_insecure_http: bool = False
    """Allow sending the key over plain http to a host outside loopback."""
    requests_per_minute: float | None = None
    """Client-side request pace, shared by the sync and async methods (``None``: no pace)."""
    tokens_per_minute: float | None = None
    """Client-side token pace, shared by the sync and async methods (``None``: no pace)."""
    show_progress: bool = False
    """Show a tqdm progress bar that advances per batch in ``embed_documents`` (needs tqdm)."""
    http_client: SkipJsonSchema[httpx.Client | None] = Field(default=None, exclude=True, repr=False)
    """Your own ``httpx.Client`` for the sync methods (never serialised or pickled)."""
    http_async_client: SkipJsonSchema[httpx.AsyncClient | None] = Field(
        default=None, exclude=True, repr=False
    )
    """Your own ``httpx.AsyncClient`` for the async methods (never serialised or pickled)."""
    rate_limiter: SkipJsonSchema[RateLimiter | None] = Field(default=None, exclude=True, repr=False)
    """A ``RateLimiter`` shared with other clients; overrides the two per-minute settings."""

    _clients: CoreClients = PrivateAttr(default_factory=CoreClients)

    # -- construction -------------------------------------------------------------------

    def __init__(self, **kwargs: Any) -> None:
        """Build from keyword settings; a bad setting raises the core's ``ConfigurationError``."""
        try:
            super().__init__(**kwargs)
        except ValidationError as err:
            cause = core_error(err)
            if cause is None:
                raise
            raise cause from None

    @model_validator(mode="after")
    def _resolve_and_check(self) -> Self:
        if "query_instruction" not in self.model_fields_set:
            self.query_instruction = default_query_instruction(self.model)
        if self.show_progress:
            _tqdm()
        # The async client checks every setting (the key included) and holds no connection
        # until its first request, so building it here costs nothing and fails early.
        self._clients.async_client = self._build_async()
        return self

    def _build_async(self) -> AsyncEmbeddingsClient:
        return self._clients.build_async(self, self.rate_limiter, self.http_async_client)

    @property
    def client(self) -> EmbeddingsClient:
        """The core ``EmbeddingsClient`` behind the sync methods (built on first use)."""
        return self._clients.sync(self, self.rate_limiter, self.http_client)

    @property
    def async_client(self) -> AsyncEmbeddingsClient:
        """The core ``AsyncEmbeddingsClient`` behind the async methods."""
        return self._clients.async_(self, self.rate_limiter, self.http_async_client)

    # -- LangChain interface ------------------------------------------------------------

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order; documents never get the query instruction."""
        if not self.show_progress:
            return self.client.embed_documents(texts)
        with _tqdm()(total=len(texts), desc="Embedding", unit="text") as bar:
            return self.client.embed_documents(texts, progress=bar.update)

    def embed_query(self, text: str) -> list[float]:
        """The vector of one search query, with ``query_instruction`` in front of it."""
        return self.client.embed_query(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async ``embed_documents``, on the core's async client (no threads)."""
        if not self.show_progress:
            return await self.async_client.embed_documents(texts)
        with _tqdm()(total=len(texts), desc="Embedding", unit="text") as bar:
            return await self.async_client.embed_documents(texts, progress=bar.update)

    async def aembed_query(self, text: str) -> list[float]:
        """Async ``embed_query``, on the core's async client (no threads)."""
        return await self.async_client.embed_query(text)

    # -- usage and lifecycle --------------------------------------------------------------

    @property
    def usage(self) -> Usage:
        """Totals of the sync and async methods together: requests, retries, tokens, credits."""
        return self._clients.usage

    def reset_usage(self) -> Usage:
        """Return the totals so far and start counting from zero."""
        return self._clients.reset_usage()

    def close(self) -> None:
        """Close the sync client's connection pool and worker threads."""
        self._clients.close()

    async def aclose(self) -> None:
        """Close the async client's connection pool for this event loop, and the sync client."""
        await self._clients.aclose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- serialisation --------------------------------------------------------------------

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """``dumpd``/``dumps`` write the settings; the key becomes a reference to its variable."""
        return True

    @property
    def lc_secrets(self) -> dict[str, str]:
        """The API key is serialised as a reference to ``AIMLAPI_API_KEY``, never its value."""
        return {"api_key": API_KEY_ENV}

    @property
    def lc_attributes(self) -> dict[str, Any]:
        """Always write ``query_instruction``: ``None`` (disabled) must survive a round trip."""
        return {"query_instruction": self.query_instruction}

    def __getstate__(self) -> dict[Any, Any]:
        # The key travels as its fingerprint only (see CoreClients.for_pickle). Injected
        # clients and limiters belong to this process and are left behind.
        state = super().__getstate__()
        fields = dict(state["__dict__"])
        fields["api_key"] = None
        for name in _INJECTED:
            fields[name] = None
        state["__dict__"] = fields
        private = dict(state.get("__pydantic_private__") or {})
        private["_clients"] = self._clients.for_pickle(self.api_key)
        state["__pydantic_private__"] = private
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        key = self._clients.restored_key()
        self.__dict__["api_key"] = SecretStr(key) if key is not None else None
        self._clients.async_client = self._build_async()

    def __copy__(self) -> Self:
        clone = super().__copy__()
        clone._clients = self._clients.fresh()
        return clone

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        memo = {} if memo is None else memo
        for name in _INJECTED:
            shared = getattr(self, name)
            if shared is not None:
                memo[id(shared)] = shared
        return super().__deepcopy__(memo)
