"""The API key as a secret: it prints as stars, and copies and pickles keep the same key.

A copy made in memory (``copy.copy``, ``copy.deepcopy``) holds the very same ``SecretKey``.
A pickle never carries the key: it carries the key's fingerprint (the first 16 hex digits of
its SHA-256), and unpickling looks the key up by that fingerprint, first among the keys this
process has already used (so a copy unpickled in the same process, or in a forked worker,
finds it), then in ``AIMLAPI_API_KEY`` if that variable holds the same key. When neither has
it, the copy holds an unavailable key that raises ``MissingAPIKeyError`` on first use, saying
why and how to provide it; it never falls back to another key. The error comes on first use,
not while unpickling, because a worker of a multiprocessing pool that fails to unpickle its
task dies without reporting, and the pool waits for it forever.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

from ._models import missing_key_message
from ._settings import API_KEY_ENV
from .errors import MissingAPIKeyError

__all__ = ["SecretKey", "resolve_key"]

_known: dict[str, SecretKey] = {}
"""Every key this process has used, by fingerprint (``SecretKey`` objects print as stars)."""
_known_lock = threading.Lock()


def _fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


class SecretKey:
    """Holds the API key; prints as stars and pickles as its fingerprint, never its value."""

    __slots__ = ("_value", "fingerprint")

    def __init__(self, value: str | None, fingerprint: str | None = None) -> None:
        self._value = value
        self.fingerprint = _fingerprint(value) if value is not None else fingerprint
        """The first 16 hex digits of the key's SHA-256."""
        if value is not None:
            with _known_lock:
                _known.setdefault(_fingerprint(value), self)

    @property
    def available(self) -> bool:
        """False for a key that did not travel with a pickle and was not found here."""
        return self._value is not None

    def get(self) -> str:
        """The key itself; raises ``MissingAPIKeyError`` when it could not be found."""
        if self._value is None:
            raise MissingAPIKeyError(
                f"this object was unpickled in a process that does not know its API key (key "
                f"fingerprint {self.fingerprint}): a key never travels in a pickle. Set "
                f"{API_KEY_ENV} in this process's environment to the same key the original was "
                "built with (another key is never used in its place), or build the object "
                "here with api_key=..."
            )
        return self._value

    def __repr__(self) -> str:
        return "SecretKey('**********')"

    __str__ = __repr__

    def __copy__(self) -> SecretKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SecretKey:
        return self

    def __reduce__(self) -> tuple[Any, tuple[str | None]]:
        return (_find_key, (self.fingerprint,))


def _find_key(fingerprint: str | None) -> SecretKey:
    """The key with this fingerprint: one this process knows, else ``AIMLAPI_API_KEY`` if it matches."""
    with _known_lock:
        known = _known.get(fingerprint) if fingerprint else None
    if known is not None:
        return known
    env = (os.environ.get(API_KEY_ENV) or "").strip()
    if env and _fingerprint(env) == fingerprint:
        return SecretKey(env)
    return SecretKey(None, fingerprint)


def resolve_key(api_key: object, base_url: str | None = None) -> SecretKey:
    """The key to use: ``api_key`` (a str, a ``SecretStr`` or a ``SecretKey``), else ``AIMLAPI_API_KEY``.

    Raises ``MissingAPIKeyError`` when neither gives one (its message fits ``base_url``).
    """
    if isinstance(api_key, SecretKey):
        return api_key
    if api_key is not None and hasattr(api_key, "get_secret_value"):
        api_key = api_key.get_secret_value()
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV)
    if not isinstance(api_key, str) or not api_key.strip():
        raise MissingAPIKeyError(
            missing_key_message(f"pass api_key=... or set {API_KEY_ENV}", base_url)
        )
    return SecretKey(api_key.strip())
