"""What both framework adapters share, once: their settings, their core clients, copies.

The adapters hold configuration only. From the one definition of every setting
(``_settings.SETTINGS``) come their fields (``setting_field``) and their validation
(``validate_settings``: the peers' names, environment defaults, the same checks and the same
``ConfigurationError`` as the core clients, run once, when the adapter is built; any other
bad argument is a ``ConfigurationError`` too, see ``raising_configuration_errors``). No
client is built to check a setting: ``CoreClients`` turns the checked settings into one
``EmbeddingsClient`` and one ``AsyncEmbeddingsClient`` that share one rate limiter, and
``AdapterMixin`` gives both adapters the same client properties, usage, close, copies and
pickling. It imports pydantic (which both frameworks build on) but no framework, so LangChain
and LlamaIndex stay optional.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, Field, SecretStr, ValidationError

from ._secrets import SecretKey, resolve_key
from ._settings import (
    CLIENT_SETTINGS,
    FROM_MODEL,
    SETTINGS,
    SETTINGS_BY_NAME,
    check_settings,
    rename_aliases,
    unknown_name_message,
)
from .client import AsyncEmbeddingsClient, EmbeddingsClient, RateLimiter, Usage
from .errors import AimlBgeError, ConfigurationError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "CORE_SETTINGS",
    "AdapterMixin",
    "CoreClients",
    "configuration_error",
    "core_error",
    "raising_configuration_errors",
    "setting_field",
    "validate_settings",
]

CORE_SETTINGS = CLIENT_SETTINGS
"""The core settings every adapter carries under the same names."""

_A = TypeVar("_A", bound="AdapterMixin")


def setting_field(name: str, **extra: Any) -> Any:
    """A pydantic field for setting ``name``: its default and description from the definition.

    A default that depends on the environment or the model is filled in by
    ``validate_settings``; the field's own default is then the documented one (or None).
    """
    setting = SETTINGS_BY_NAME[name]
    default = None if setting.default is FROM_MODEL or name == "api_key" else setting.default
    return Field(default=default, description=setting.doc, **extra)


def validate_settings(data: Any, surface: str) -> Any:
    """An adapter's ``mode="before"`` validation: the peers' names, defaults, the core's checks.

    Renames the peers' names (``chunk_size`` -> ``batch_size``, ``openai_api_key`` ->
    ``api_key``...), then checks every setting given with the same check as the core clients
    (so a bad value raises the same ``ConfigurationError``, the two-setting checks included),
    and fills in the settings whose default comes from the environment or from the model.
    """
    if not isinstance(data, dict):
        return data
    data = rename_aliases(data, surface)
    given = {s.name: data[s.name] for s in SETTINGS if s.name in data}
    for name, value in check_settings(given, surface).items():
        setting = SETTINGS_BY_NAME[name]
        if name in given or setting.env is not None or setting.default is FROM_MODEL:
            data[name] = value
    return data


@contextlib.contextmanager
def raising_configuration_errors(names: Iterable[str]) -> Iterator[None]:
    """Turn pydantic's ``ValidationError`` into the package's ``ConfigurationError``.

    The core's own error when it is what failed (the same as the clients give), else one
    naming each bad argument (``names``: the arguments the adapter takes, for a misspelling).
    """
    try:
        yield
    except ValidationError as err:
        raise configuration_error(err, names) from None


def configuration_error(err: ValidationError, names: Iterable[str]) -> AimlBgeError:
    """The ``ConfigurationError`` for a failed validation; never shows the values given."""
    cause = core_error(err)
    if cause is not None:
        return cause
    known = set(names)
    said = []
    for detail in err.errors(include_url=False, include_input=False, include_context=False):
        name = ".".join(str(part) for part in detail["loc"]) or "the arguments"
        if detail["type"] == "extra_forbidden":
            said.append(unknown_name_message(name, known))
        else:
            said.append(f"{name}: {detail['msg']}")
    return ConfigurationError("; ".join(said))


class AdapterMixin:
    """The clients, usage, lifecycle, copies and pickling both adapters have alike.

    Put first among an adapter's bases. The adapter declares the fields ``api_key``,
    ``http_client`` and ``http_async_client``, the private attribute ``_clients`` (a
    ``CoreClients``), and says where its shared core rate limiter is (``_core_rate_limiter``).
    """

    if TYPE_CHECKING:
        _clients: CoreClients
        api_key: SecretStr | None
        http_client: httpx.Client | None
        http_async_client: httpx.AsyncClient | None

    def _core_rate_limiter(self) -> RateLimiter | None:
        raise NotImplementedError

    def _check_key(self) -> None:
        """Raise ``MissingAPIKeyError`` now when there is no key (the settings are checked)."""
        resolve_key(self.api_key)

    def _pickled_fields(self) -> dict[str, Any]:
        """The field values a pickle writes (before the key and shared objects are left out)."""
        return dict(vars(self))

    def _shared_objects(self) -> list[object]:
        # What the caller passed in: copies share it, pickles leave it behind.
        shared = (self.http_client, self.http_async_client, self._core_rate_limiter())
        return [obj for obj in shared if obj is not None]

    @property
    def client(self) -> EmbeddingsClient:
        """The core ``EmbeddingsClient`` behind the sync methods (built on first use)."""
        return self._clients.sync(self, self._core_rate_limiter(), self.http_client)

    @property
    def async_client(self) -> AsyncEmbeddingsClient:
        """The core ``AsyncEmbeddingsClient`` behind the async methods."""
        return self._clients.async_(self, self._core_rate_limiter(), self.http_async_client)

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

    def __enter__(self: _A) -> _A:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self: _A) -> _A:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- copies and pickles ---------------------------------------------------------------
    # A copy has the same settings and the same key, and its own clients (pools, usage from
    # zero). copy and deepcopy share what the caller passed in (http clients, a rate limiter);
    # a pickle leaves those behind and carries the key as its fingerprint only (see _secrets).

    def __copy__(self: _A) -> _A:
        clone: _A = super().__copy__()  # type: ignore[misc]
        clone._clients = self._clients.fresh()
        return clone

    def __deepcopy__(self: _A, memo: dict[int, Any] | None = None) -> _A:
        memo = {} if memo is None else memo
        for shared in self._shared_objects():
            memo[id(shared)] = shared
        clone: _A = super().__deepcopy__(memo)  # type: ignore[misc]
        return clone

    def __getstate__(self) -> dict[Any, Any]:
        # Pydantic's own state, with the key and what the caller shared left out: the key
        # travels as its fingerprint, inside the CoreClients that replace the clients.
        state = dict(BaseModel.__getstate__(self))  # type: ignore[arg-type]
        shared = {id(obj) for obj in self._shared_objects()}
        state["__dict__"] = {
            name: None if name == "api_key" or id(value) in shared else value
            for name, value in self._pickled_fields().items()
        }
        private = {
            name: None if id(value) in shared else value
            for name, value in (state["__pydantic_private__"] or {}).items()
        }
        private["_clients"] = self._clients.for_pickle(self.api_key)
        state["__pydantic_private__"] = private
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        BaseModel.__setstate__(self, state)  # type: ignore[arg-type]
        key = self._clients.restored_key()
        vars(self)["api_key"] = SecretStr(key) if key is not None else None


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
                self.async_client = AsyncEmbeddingsClient(
                    http_client=http_client, **self.settings(adapter, shared_limiter)
                )
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
