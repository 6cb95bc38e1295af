"""LlamaIndex adapter: ``AimlBgeEmbedding``, a drop-in ``BaseEmbedding`` for indices and pipelines.

Settings and delegation only. Batching into requests, bounded concurrency, retries, reply
checks, the long-text policy and usage totals all live in the request core
(``EmbeddingsClient`` and ``AsyncEmbeddingsClient``); this module turns LlamaIndex's six
embedding hooks into calls on one client of each kind, built from the adapter's settings and
sharing one rate limiter.

How LlamaIndex's ``embed_batch_size`` and the core's ``batch_size`` fit together:
LlamaIndex cuts its input into chunks of ``embed_batch_size`` texts and hands each chunk to
the adapter (one callback event, one cache lookup per chunk); the core cuts each chunk into
requests of at most ``batch_size`` texts and runs up to ``max_concurrency`` of them at once.
So a request carries ``min(embed_batch_size, batch_size)`` texts at most: the smaller one wins,
and neither ever merges or re-splits what the other decided. Left unset, ``embed_batch_size``
is ``4 * batch_size * max_concurrency`` (at most 2048, LlamaIndex's cap): one chunk fills
every concurrency slot four times over even on LlamaIndex's sequential sync path, so the
slots drain at a chunk boundary only once every four rounds of requests.

Install with ``pip install "aiml-bge-integrations[llama-index]"``.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import httpx
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    model_validator,
)

# Both re-exported without __all__ (from llama-index-instrumentation in recent versions).
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.events.base import BaseEvent  # type: ignore[attr-defined]
from pydantic.json_schema import SkipJsonSchema
from typing_extensions import Self

from ._adapter import (
    AdapterMixin,
    CoreClients,
    raising_configuration_errors,
    setting_field,
    validate_settings,
)
from ._settings import DEFAULT_MODEL, aliases_for
from ._tally import Tally, collect_calls
from ._usage import Usage
from .client import RateLimiter
from .errors import ConfigurationError

__all__ = ["AimlBgeEmbedding", "EmbeddingUsageEvent"]

_MAX_EMBED_BATCH_SIZE = 2048
"""LlamaIndex's own upper bound on ``embed_batch_size``."""

_CHUNK_ROUNDS = 4
"""Rounds of ``max_concurrency`` requests in one default LlamaIndex chunk."""

_UNSET_MODEL_NAME = "unknown"
"""``BaseEmbedding.model_name``'s placeholder default."""


dispatcher = get_dispatcher(__name__)


class EmbeddingUsageEvent(BaseEvent):
    """What one of the adapter's embedding calls cost, with its token counts.

    LlamaIndex's ``EmbeddingEndEvent`` has no field for them, so the adapter fires this
    event of its own (LlamaIndex's instrumentation takes any ``BaseEvent``) at the end of
    each hook call, just before LlamaIndex fires the ``EmbeddingEndEvent`` of the same call:
    in the same thread or task, in the call's span or in the span of the hook inside it.
    """

    model_name: str
    """The model asked for."""
    texts: int
    """Vectors returned."""
    prompt_tokens: int
    """Tokens the server billed (``usage.prompt_tokens``)."""
    total_tokens: int
    requests: int
    """HTTP requests sent, retries included."""
    credits: float
    """AI/ML API credits, when the server said."""
    cache_hits: int
    """Texts answered from the embedding cache (no request, no tokens)."""

    @classmethod
    def class_name(cls) -> str:
        """The event's name in LlamaIndex's instrumentation."""
        return "EmbeddingUsageEvent"


def _frozen(name: str, **extra: Any) -> Any:
    # Core settings are fixed once the adapter exists: the clients are built from them, so a
    # later assignment would silently not apply. Make a new adapter (or model_copy) instead.
    return setting_field(name, frozen=True, **extra)


class AimlBgeEmbedding(AdapterMixin, BaseEmbedding):
    """BGE embeddings over the AI/ML API, or any OpenAI-compatible server, for LlamaIndex.

    Queries (``get_query_embedding`` and its async twin) get the BGE retrieval instruction in
    front of them; texts and nodes never do. Requests, concurrency, retries, reply checks and
    usage totals come from the request core: nothing is retried or re-batched here.

    Setup:
        ```bash
        pip install -U "aiml-bge-integrations[llama-index]"
        export AIMLAPI_API_KEY="your-api-key"
        ```
        ``AIMLAPI_BASE_URL`` points it at any other OpenAI-compatible server, such as the
        bundled local one (``aiml-bge serve``).

    Key init args:
        model: model name (default ``BAAI/bge-base-en-v1.5``, or ``AIMLAPI_EMBEDDING_MODEL``);
            ``model_name`` is LlamaIndex's name for the same thing and always equals it.
        api_key: read from ``AIMLAPI_API_KEY`` when not given; never serialised or pickled.
        base_url: ``AIMLAPI_BASE_URL``, else ``https://api.aimlapi.com/v1``.
        batch_size, max_concurrency: texts per request; requests in flight (per client).
        embed_batch_size: texts LlamaIndex hands over per call; default
            ``4 * batch_size * max_concurrency``, at most 2048 (see the module docstring).
        query_instruction, document_instruction: the prefix of each side (queries: the
            ``get_query_embedding`` path; documents: the text paths); unset, the model's
            default; ``None`` disables it.
        query_input_type, document_input_type: the request field ``input_type`` per side
            (``None``, the default: not sent).
        max_retries, timeout, deadline, long_text, encoding_format, default_headers,
        allow_insecure_http, requests_per_minute, tokens_per_minute: as in the core.
        rate_limiter: this package's ``RateLimiter`` paces requests and can be shared with
            other clients; a LlamaIndex rate limiter keeps LlamaIndex's meaning (one
            ``acquire()`` per LlamaIndex call, however many requests the call makes).
        http_client, http_async_client: your own httpx clients (never serialised or pickled).

        Names, defaults and checks are the core clients' (one definition,
        ``docs/settings-notes.md``); a bad value raises the core's ``ConfigurationError``,
        as does any other bad argument. The peers' names are accepted too (the same on both
        adapters): ``openai_api_key`` (``api_key``), ``api_base`` and ``openai_api_base``
        (``base_url``), ``chunk_size`` (``batch_size``), ``request_timeout`` (``timeout``).

    Instantiate:
        ```python
        from llama_index.core import Settings, VectorStoreIndex
        from aiml_bge_integrations.llama_index import AimlBgeEmbedding

        Settings.embed_model = AimlBgeEmbedding()  # key from AIMLAPI_API_KEY
        index = VectorStoreIndex.from_documents(documents)
        nodes = index.as_retriever(similarity_top_k=3).retrieve("what is BGE?")
        ```

    Embed directly:
        ```python
        embed = AimlBgeEmbedding(batch_size=64)
        query = embed.get_query_embedding("Which model turns text into vectors?")
        texts = embed.get_text_embedding_batch(["first passage", "second passage"])
        texts = await embed.aget_text_embedding_batch(["first passage", "second passage"])
        print(embed.usage.requests, embed.usage.prompt_tokens, embed.usage.credits)
        ```
    """

    model_config = ConfigDict(
        extra="forbid",
        # A pydantic error would otherwise print the arguments, the API key among them.
        hide_input_in_errors=True,
    )

    model_name: str = Field(
        default=DEFAULT_MODEL,
        description="The embedding model; always equal to `model` (LlamaIndex's name for it).",
        frozen=True,
    )
    # Defaults, descriptions and checks: one definition for every surface (_settings).
    api_key: SecretStr | None = _frozen("api_key", exclude=True, repr=False)
    base_url: str = _frozen("base_url")
    model: str = _frozen("model")
    batch_size: int = _frozen("batch_size")
    max_concurrency: int = _frozen("max_concurrency")
    adaptive_concurrency: bool = _frozen("adaptive_concurrency")
    discover_limits: bool = _frozen("discover_limits")
    max_retries: int = _frozen("max_retries")
    timeout: float = _frozen("timeout")
    deadline: float | None = _frozen("deadline")
    query_instruction: str | None = _frozen("query_instruction")
    document_instruction: str | None = _frozen("document_instruction")
    query_input_type: str | None = _frozen("query_input_type")
    document_input_type: str | None = _frozen("document_input_type")
    allow_blank_texts: bool = _frozen("allow_blank_texts")
    default_headers: Mapping[str, str] | None = _frozen("default_headers")
    encoding_format: Literal["float", "base64"] | None = _frozen("encoding_format")
    long_text: Literal["truncate", "error", "none"] = _frozen("long_text")
    allow_insecure_http: bool = _frozen("allow_insecure_http")
    requests_per_minute: float | None = _frozen("requests_per_minute")
    tokens_per_minute: float | None = _frozen("tokens_per_minute")
    max_response_bytes: int | None = _frozen("max_response_bytes")
    cache: str | None = _frozen("cache")
    trace_requests: bool = _frozen("trace_requests")
    http_client: SkipJsonSchema[httpx.Client | None] = Field(
        default=None,
        exclude=True,
        repr=False,
        frozen=True,
        description="Your own httpx.Client for the sync path (never serialised or pickled).",
    )
    http_async_client: SkipJsonSchema[httpx.AsyncClient | None] = Field(
        default=None,
        exclude=True,
        repr=False,
        frozen=True,
        description="Your own httpx.AsyncClient for the async path (never serialised or pickled).",
    )

    _clients: CoreClients = PrivateAttr(default_factory=CoreClients)
    _shared_rate_limiter: RateLimiter | None = PrivateAttr(default=None)

    # -- construction -------------------------------------------------------------------

    def __init__(self, **data: Any) -> None:
        """Build from keyword settings; a bad setting raises the core's ``ConfigurationError``."""
        with raising_configuration_errors([*type(self).model_fields, *aliases_for("llama_index")]):
            super().__init__(**data)

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialises this class under."""
        return "AimlBgeEmbedding"

    @model_validator(mode="before")
    @classmethod
    def _resolve_model_and_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        # to_dict() adds the class name; accept it back (from_dict drops it too).
        if data.get("class_name") == cls.class_name():
            del data["class_name"]
        model = data.get("model")
        # LlamaIndex's own field for the model (written by to_dict beside model): not an alias.
        name = data.pop("model_name", None)
        if name == _UNSET_MODEL_NAME:
            name = None
        if model is None:
            model = name
        elif name is not None and name != model:
            raise ConfigurationError(
                f"model={model!r} and model_name={name!r} disagree: give one of them"
            )
        data["model"] = model
        data = validate_settings(data, "llama_index")
        data["model_name"] = data["model"]
        return data

    @model_validator(mode="after")
    def _check_key_and_limits(self) -> Self:
        if isinstance(self.rate_limiter, RateLimiter):
            # The core's limiter paces requests and is shared with whoever else holds it.
            # LlamaIndex would call ``acquire()`` on anything left in its own field.
            self._shared_rate_limiter = self.rate_limiter
            self.rate_limiter = None
        if "embed_batch_size" not in self.model_fields_set:
            self.embed_batch_size = min(
                _MAX_EMBED_BATCH_SIZE, _CHUNK_ROUNDS * self.batch_size * self.max_concurrency
            )
        # Every setting was checked before (validate_settings); the clients are built on
        # first use from the checked values. A missing key fails now, not mid-ingestion.
        self._check_key()
        return self

    def _core_rate_limiter(self) -> RateLimiter | None:
        return self._shared_rate_limiter

    # -- LlamaIndex hooks: each is one call on the core ------------------------------------
    # Every path goes through these: BaseEmbedding's public methods do the chunking into
    # embed_batch_size, the events, callbacks, the embeddings cache and LlamaIndex's own rate
    # limiter; the core does the requests, concurrency and retries within each hook call.

    def _get_query_embedding(self, query: str) -> Embedding:
        """The query's vector, with ``query_instruction`` in front of it."""
        with self._reporting():
            return self.client.embed_query(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        """Async ``_get_query_embedding``, on the core's async client."""
        with self._reporting():
            return await self.async_client.embed_query(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        """One text's vector: the document side (never the query instruction)."""
        with self._reporting():
            return self.client.embed_documents([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        """Async ``_get_text_embedding``, on the core's async client."""
        with self._reporting():
            return (await self.async_client.embed_documents([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        """One chunk of LlamaIndex's batch: the core sends it in requests of ``batch_size``."""
        with self._reporting():
            return self.client.embed_documents(texts)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        """Async ``_get_text_embeddings``; requests in flight stay within ``max_concurrency``
        however many chunks LlamaIndex gathers at once."""
        with self._reporting():
            return await self.async_client.embed_documents(texts)

    @contextlib.contextmanager
    def _reporting(self) -> Iterator[None]:
        # Fires EmbeddingUsageEvent with the figures of the core calls made inside (this
        # context's own, whatever else runs on the same clients).
        with collect_calls() as calls:
            yield
        dispatcher.event(_usage_event(self.model, calls))

    # -- observability, usage and lifecycle ------------------------------------------------

    def to_payload(self) -> dict[str, Any]:
        """What callback and instrumentation events show of this model: no key, no headers.

        LlamaIndex 0.14.23 and later put this in its events; earlier ones put ``to_dict()``,
        which leaves out the key and the injected objects too.
        """
        return {
            "class_name": self.class_name(),
            "model_name": self.model_name,
            "embed_batch_size": self.embed_batch_size,
            "batch_size": self.batch_size,
            "max_concurrency": self.max_concurrency,
        }

    # -- pickling --------------------------------------------------------------------------

    def _pickled_fields(self) -> dict[str, Any]:
        # As BaseComponent does, what cannot be pickled (a callback handler holding a lock,
        # say) is left behind and the copy gets the field's default; unlike it, this never
        # deletes attributes of the live object.
        fields: dict[str, Any] = {}
        for name, value in vars(self).items():
            try:
                pickle.dumps(value)
            except Exception:
                info = type(self).model_fields.get(name)
                value = info.get_default(call_default_factory=True) if info else None
            fields[name] = value
        return fields


def _usage_event(model: str, calls: list[Tally]) -> EmbeddingUsageEvent:
    u = sum((call.usage.snapshot(0, 0) for call in calls), Usage())
    return EmbeddingUsageEvent(
        model_name=model,
        texts=u.texts,
        prompt_tokens=u.prompt_tokens,
        total_tokens=u.total_tokens,
        requests=u.requests,
        credits=u.credits,
        cache_hits=sum(call.cache_hits or 0 for call in calls),
    )
