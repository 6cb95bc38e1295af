"""LangChain adapter: ``AimlBgeEmbeddings``, a drop-in ``Embeddings`` for chains, vector stores and caches.

Settings and delegation only. Batching, concurrency, retries, reply checks, the long-text
policy and usage totals all live in the request core (``EmbeddingsClient`` and
``AsyncEmbeddingsClient``); this module turns LangChain's interface into calls on one client of
each kind, built from the adapter's settings and sharing one rate limiter.

Install with ``pip install "aiml-bge-integrations[langchain]"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import httpx
from langchain_core.embeddings import Embeddings
from langchain_core.load.serializable import Serializable
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator
from pydantic.json_schema import SkipJsonSchema
from typing_extensions import Self

from ._adapter import (
    AdapterMixin,
    CoreClients,
    raising_configuration_errors,
    setting_field,
    validate_settings,
)
from ._settings import API_KEY_ENV, aliases_for
from .client import RateLimiter

__all__ = ["AimlBgeEmbeddings"]


def _tqdm() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError as err:
        raise ImportError(
            "show_progress=True needs tqdm: pip install tqdm (or aiml-bge-integrations[cli])"
        ) from err
    return tqdm


class AimlBgeEmbeddings(AdapterMixin, Serializable, Embeddings):
    """BGE embeddings over the AI/ML API, or any OpenAI-compatible server, for LangChain.

    ``embed_query`` embeds the query side, ``embed_documents`` the document side: each gets its
    own prefix (``query_instruction``, ``document_instruction``; by default the model's, such as
    the BGE retrieval instruction on queries only) and, if set, its own ``input_type`` field. Batching, bounded concurrency, retries with backoff, reply checks and usage
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
        document_instruction:
            Prefix for documents only (unset: the model's default, as e5's ``"passage: "``).
        query_input_type, document_input_type:
            The request field ``input_type`` per side (``None``, the default: not sent).
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

    See the field list for every setting; the names, defaults and checks are those of the core
    clients (one definition, ``docs/settings-notes.md``), and a bad value raises the core's
    ``ConfigurationError``, as does any other bad argument. The peers' names are accepted too
    (the same on both adapters): ``openai_api_key`` (``api_key``), ``api_base`` and
    ``openai_api_base`` (``base_url``), ``model_name`` (``model``), ``chunk_size``
    (``batch_size``), ``request_timeout`` (``timeout``), ``show_progress_bar``
    (``show_progress``).

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

    # Defaults, descriptions and checks: one definition for every surface (_settings).
    api_key: SecretStr | None = setting_field("api_key")
    base_url: str = setting_field("base_url")
    model: str = setting_field("model")
    batch_size: int = setting_field("batch_size")
    max_concurrency: int = setting_field("max_concurrency")
    adaptive_concurrency: bool = setting_field("adaptive_concurrency")
    discover_limits: bool = setting_field("discover_limits")
    max_retries: int = setting_field("max_retries")
    timeout: float = setting_field("timeout")
    deadline: float | None = setting_field("deadline")
    query_instruction: str | None = setting_field("query_instruction")
    document_instruction: str | None = setting_field("document_instruction")
    query_input_type: str | None = setting_field("query_input_type")
    document_input_type: str | None = setting_field("document_input_type")
    allow_blank_texts: bool = setting_field("allow_blank_texts")
    default_headers: Mapping[str, str] | None = setting_field("default_headers")
    encoding_format: Literal["float", "base64"] | None = setting_field("encoding_format")
    long_text: Literal["truncate", "error", "none"] = setting_field("long_text")
    allow_insecure_http: bool = setting_field("allow_insecure_http")
    requests_per_minute: float | None = setting_field("requests_per_minute")
    tokens_per_minute: float | None = setting_field("tokens_per_minute")
    max_response_bytes: int | None = setting_field("max_response_bytes")
    cache: str | None = setting_field("cache")
    trace_requests: bool = setting_field("trace_requests")
    show_progress: bool = setting_field("show_progress")
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
        with raising_configuration_errors([*type(self).model_fields, *aliases_for("langchain")]):
            super().__init__(**kwargs)

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        return validate_settings(data, "langchain")

    @model_validator(mode="after")
    def _check_key_and_progress(self) -> Self:
        # Every setting was checked before (validate_settings); the clients are built on
        # first use from the checked values.
        self._check_key()
        if self.show_progress:
            _tqdm()
        return self

    def _core_rate_limiter(self) -> RateLimiter | None:
        return self.rate_limiter

    # -- LangChain interface ------------------------------------------------------------

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order: the document side (never the query instruction)."""
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
        """Always write the instructions: ``None`` (disabled) must survive a round trip."""
        return {
            "query_instruction": self.query_instruction,
            "document_instruction": self.document_instruction,
        }
