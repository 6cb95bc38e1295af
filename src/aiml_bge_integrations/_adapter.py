"""What both framework adapters share: their pair of core clients, built from their settings.

The adapters hold configuration only; this holder turns it into one ``EmbeddingsClient`` and
one ``AsyncEmbeddingsClient`` that share one rate limiter, and adds up their usage. It imports
no framework, so LangChain and LlamaIndex stay optional.
"""

from __future__ import annotations

import threading
from typing import Any

from ._secrets import SecretKey, resolve_key
from .client import AsyncEmbeddingsClient, EmbeddingsClient, RateLimiter, Usage
from .errors import AimlBgeError

__all__ = ["CORE_SETTINGS", "CoreClients", "core_error"]

CORE_SETTINGS = (
    "api_key",
    "base_url",
    "model",
    "batch_size",
    "max_concurrency",
    "max_retries",
    "timeout",
    "deadline",
    "query_instruction",
    "default_headers",
    "encoding_format",
    "long_text",
    "allow_insecure_http",
    "requests_per_minute",
    "tokens_per_minute",
)
"""The core settings every adapter carries under the same names."""


class CoreClients:
    """An adapter's core clients (the sync one built on first use) and their shared rate limiter.

    A copy (``copy``, ``deepcopy``, ``model_copy``, pickle) starts without clients, so a copy
    with changed settings never reuses clients built from the old ones, never shares
    connection pools or usage totals with its original. A pickle of the adapter carries its
    key here, as a ``SecretKey``: only the key's fingerprint is written, and the key is found
    again when the pickle is loaded (see ``_secrets``), or the copy says on first use why not.
    """

    __slots__ = ("async_client", "key", "lock", "rate_limiter", "sync_client")

    def __init__(self, key: SecretKey | None = None) -> None:
        self.sync_client: EmbeddingsClient | None = None
        self.async_client: AsyncEmbeddingsClient | None = None
        self.rate_limiter: RateLimiter | None = None
        self.lock = threading.Lock()
        self.key = key
        """The key a pickle carried, when the adapter's ``api_key`` field could not be restored."""

    def fresh(self) -> CoreClients:
        """No clients, the same key: what a copy of the adapter starts with."""
        return CoreClients(self.key)

    def for_pickle(self, api_key: Any) -> CoreClients:
        """What a pickle carries in place of the clients: the key, written as its fingerprint."""
        return CoreClients(resolve_key(api_key) if api_key is not None else self.key)

    def restored_key(self) -> str | None:
        """The key an unpickled adapter's ``api_key`` field gets back, if this process has it."""
        return self.key.get() if self.key is not None and self.key.available else None

    def __deepcopy__(self, memo: dict[int, Any]) -> CoreClients:
        return self.fresh()

    def __reduce__(self) -> tuple[type[CoreClients], tuple[SecretKey | None]]:
        return (CoreClients, (self.key,))

    def settings(self, adapter: object, shared_limiter: RateLimiter | None) -> dict[str, Any]:
        """The core keyword arguments for ``adapter``'s settings, with one limiter for both clients."""
        values = {name: getattr(adapter, name) for name in CORE_SETTINGS}
        if values["api_key"] is None and self.key is not None:
            values["api_key"] = self.key  # never None here: the core would read the environment
        if self.rate_limiter is None:
            rpm, tpm = values["requests_per_minute"], values["tokens_per_minute"]
            self.rate_limiter = shared_limiter or (RateLimiter(rpm, tpm) if rpm or tpm else None)
        values["rate_limiter"] = self.rate_limiter
        return values

    def build_async(
        self, adapter: object, shared_limiter: RateLimiter | None, http_client: Any
    ) -> AsyncEmbeddingsClient:
        """Build (again) the async client; it checks every setting and opens no connection."""
        self.async_client = AsyncEmbeddingsClient(
            http_client=http_client, **self.settings(adapter, shared_limiter)
        )
        return self.async_client

    def sync(
        self, adapter: object, shared_limiter: RateLimiter | None, http_client: Any
    ) -> EmbeddingsClient:
        """The sync client, built on first use."""
        with self.lock:
            if self.sync_client is None:
                self.sync_client = EmbeddingsClient(
                    http_client=http_client, **self.settings(adapter, shared_limiter)
                )
            return self.sync_client

    def async_(
        self, adapter: object, shared_limiter: RateLimiter | None, http_client: Any
    ) -> AsyncEmbeddingsClient:
        """The async client, built on first use."""
        with self.lock:
            if self.async_client is None:
                return self.build_async(adapter, shared_limiter, http_client)
            return self.async_client

    @property
    def usage(self) -> Usage:
        """Totals of both clients."""
        total = Usage()
        for core in (self.sync_client, self.async_client):
            if core is not None:
                total = total + core.usage
        return total

    def reset_usage(self) -> Usage:
        """Both clients' totals so far; both start counting from zero."""
        total = Usage()
        for core in (self.sync_client, self.async_client):
            if core is not None:
                total = total + core.reset_usage()
        return total

    def close(self) -> None:
        """Close the sync client's connection pool and worker threads."""
        if self.sync_client is not None:
            self.sync_client.close()

    async def aclose(self) -> None:
        """Close the async client's pool for this event loop, then the sync client."""
        if self.async_client is not None:
            await self.async_client.aclose()
        self.close()


def core_error(err: Exception) -> AimlBgeError | None:
    """The core's own error, when it is what made a pydantic validation fail."""
    errors = getattr(err, "errors", None)
    if errors is None:
        return None
    details = errors(include_url=False, include_input=False)
    if len(details) == 1:
        cause = details[0].get("ctx", {}).get("error")
        if isinstance(cause, AimlBgeError):
            return cause
    return None
