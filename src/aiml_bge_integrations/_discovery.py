"""What a server publishes about its limits, pure: which URLs to ask, and what the replies say.

Self-hosted servers say what they accept. TEI answers ``GET {root}/info`` (``model_id``,
``max_client_batch_size``: inputs per request, ``max_batch_tokens``: tokens the server
computes in one batch, ``max_input_length``: tokens per input, ``auto_truncate``); vLLM and
infinity answer ``GET {base_url}/models`` (``data[].id``; vLLM adds ``max_model_len``, infinity
its engine's ``stats.batch_size``). ``discovery_urls`` says what to ask, ``parse_replies``
turns the replies into ``ServerLimits``; ``discover`` and ``adiscover`` drive the two with
the caller's own GET, so that the sync and the async client share everything but the I/O.

Nothing is asked of hosted APIs that publish no limits there (the AI/ML API, OpenAI): their
``discovery_urls`` is empty. A reply that is missing, refused, too large, not JSON or not of
the expected shape counts as "not published"; a value that is not a positive integer is
left out. Discovery never fails a call.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ._models import profile_for, same_model

__all__ = [
    "DISCOVERY_TIMEOUT",
    "MAX_REPLY_BYTES",
    "Reply",
    "ServerLimits",
    "adiscover",
    "discover",
    "discovery_urls",
    "parse_replies",
    "planning_note",
]

DISCOVERY_TIMEOUT = 2.0
"""Seconds the caller's GET should allow each discovery request (a server that is slow to
say what it accepts is treated as one that does not say)."""
MAX_REPLY_BYTES = 1 << 20
"""The most of a discovery reply the caller should read; a longer reply is ignored."""

_HOSTED = ("api.aimlapi.com", "aimlapi.com", "api.openai.com")
"""Hosts that publish no limits at these URLs: nothing is asked of them."""

Reply = tuple[int, bytes] | None
"""What the caller's GET gives: ``(status, body)``, or None when there was no reply."""


@dataclass(frozen=True)
class ServerLimits:
    """What a server published about itself; None wherever it published nothing."""

    server: str | None = None
    """``"tei"``, ``"vllm"``, ``"infinity"``, or None when the replies do not say."""
    models: tuple[str, ...] = ()
    """The names of the models it serves."""
    max_batch_size: int | None = None
    """Inputs per request it accepts (TEI's ``max_client_batch_size``)."""
    max_batch_tokens: int | None = None
    """Tokens it computes in one batch (TEI's ``max_batch_tokens``): a request within it
    fills at most one of the server's batches."""
    max_input_tokens: int | None = None
    """Tokens per input it accepts (TEI's ``max_input_length``, vLLM's ``max_model_len``)."""
    truncates: bool | None = None
    """Whether it cuts over-long inputs itself instead of refusing them (TEI's ``auto_truncate``)."""
    engine_batch_size: int | None = None
    """Inputs its engine embeds at once (infinity's ``stats.batch_size``): a hint, not a limit."""
    max_concurrent_requests: int | None = None
    """Requests it takes at once before refusing (TEI's ``max_concurrent_requests``)."""
    sources: tuple[str, ...] = field(default=(), compare=False)
    """The URLs whose replies gave these facts."""

    def serves(self, model: str) -> bool | None:
        """Whether ``model`` is among the served models (None: the server did not say)."""
        if not self.models:
            return None
        return any(same_model(served, model) for served in self.models)

    def describe(self) -> str:
        """One line for a DEBUG log: every fact learned, and where from."""
        facts = [
            f"{name}={value!r}"
            for name, value in (
                ("server", self.server),
                ("models", list(self.models) or None),
                ("max_batch_size", self.max_batch_size),
                ("max_batch_tokens", self.max_batch_tokens),
                ("max_input_tokens", self.max_input_tokens),
                ("truncates", self.truncates),
                ("engine_batch_size", self.engine_batch_size),
                ("max_concurrent_requests", self.max_concurrent_requests),
            )
            if value is not None
        ]
        where = ", ".join(self.sources) or "no reply"
        return ("published " + ", ".join(facts) if facts else "nothing published") + f" ({where})"


def discovery_urls(base_url: str) -> list[str]:
    """What to ask a server at ``base_url``: TEI's ``{root}/info``, then ``{base_url}/models``.

    ``root`` is ``base_url`` without a trailing ``/v1``. Empty for hosted APIs that publish
    no limits there.
    """
    base = base_url.rstrip("/")
    host = (urlsplit(base).hostname or "").lower()
    if any(host == h or host.endswith("." + h) for h in _HOSTED):
        return []
    root = base[: -len("/v1")] if base.endswith("/v1") else base
    return [root + "/info", base + "/models"]


def _count(value: object) -> int | None:
    # A positive integer, or nothing (JSON true is not a count; nor are 0, -1 or 1.5).
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def _json(reply: Reply) -> Any:
    if reply is None:
        return None
    status, body = reply
    if status != 200 or len(body) > MAX_REPLY_BYTES:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _from_info(info: Any) -> dict[str, Any]:
    if not isinstance(info, Mapping) or not isinstance(info.get("model_id"), str):
        return {}
    truncates = info.get("auto_truncate")
    return {
        "server": "tei",
        "models": (info["model_id"],),
        "max_batch_size": _count(info.get("max_client_batch_size")),
        "max_batch_tokens": _count(info.get("max_batch_tokens")),
        "max_input_tokens": _count(info.get("max_input_length")),
        "truncates": truncates if isinstance(truncates, bool) else None,
        "max_concurrent_requests": _count(info.get("max_concurrent_requests")),
    }


def _from_models(listing: Any, model: str | None) -> dict[str, Any]:
    data = listing.get("data") if isinstance(listing, Mapping) else None
    if not isinstance(data, list):
        return {}
    cards = [c for c in data if isinstance(c, Mapping) and isinstance(c.get("id"), str)]
    if not cards:
        return {}
    # The card of the model asked for, if it is served; else the first (one-model servers).
    card = next((c for c in cards if model and same_model(c["id"], model)), cards[0])
    owner = card.get("owned_by")
    stats = card.get("stats")
    facts: dict[str, Any] = {
        "models": tuple(c["id"] for c in cards),
        "max_input_tokens": _count(card.get("max_model_len")),
        "engine_batch_size": _count(stats.get("batch_size"))
        if isinstance(stats, Mapping)
        else None,
    }
    if owner in ("vllm", "infinity"):
        facts["server"] = owner
    return facts


def parse_replies(replies: Mapping[str, Reply], model: str | None = None) -> ServerLimits:
    """The limits the replies to ``discovery_urls`` publish (url -> reply, in that order).

    Facts from TEI's ``/info`` come first; ``/models`` adds what ``/info`` did not say.
    ``model`` picks its card from a ``/models`` listing that serves several.
    """
    merged: dict[str, Any] = {}
    sources: list[str] = []
    for url, reply in replies.items():
        body = _json(reply)
        facts = _from_info(body) if url.endswith("/info") else _from_models(body, model)
        if not facts:
            continue
        sources.append(url)
        for name, value in facts.items():
            if name == "models" and "models" in merged:
                value = tuple(dict.fromkeys(merged["models"] + value))
            elif merged.get(name) is not None:
                continue
            merged[name] = value
    return ServerLimits(**merged, sources=tuple(sources))


def planning_note(
    limits: ServerLimits, batch_size: int, model: str, window: int | None
) -> str | None:
    """What the published ``limits`` change in the plan of a client, one line (None: nothing).

    ``batch_size`` is the client's setting, ``window`` the tokens per input it counts with
    (the model's profile's, else the server's ``max_input_tokens``).
    """
    changes: list[str] = []
    if limits.max_batch_size is not None and limits.max_batch_size < batch_size:
        changes.append(
            f"at most {limits.max_batch_size} inputs per request (batch_size {batch_size})"
        )
    if limits.max_batch_tokens is not None:
        profile = profile_for(model)
        tokenizer = profile.tokenizer if profile else None
        counted = (
            f"counted exactly ({tokenizer})" if tokenizer else "estimated (UTF-8 bytes / 3 + 2)"
        )
        changes.append(f"batches packed to {limits.max_batch_tokens} tokens, {counted}")
        if window is not None:
            changes.append(f"each input counted as at most {window} tokens")
    return "planning " + "; ".join(changes) if changes else None


def discover(
    base_url: str, http_get: Callable[[str], Reply], model: str | None = None
) -> ServerLimits:
    """Ask the server at ``base_url`` with ``http_get`` and parse what it publishes.

    ``http_get(url)`` does one GET (within ``DISCOVERY_TIMEOUT``, reading at most
    ``MAX_REPLY_BYTES``, with the client's headers) and returns ``(status, body)``, or None
    on any failure; it must not raise.
    """
    return parse_replies({url: http_get(url) for url in discovery_urls(base_url)}, model)


async def adiscover(
    base_url: str, http_get: Callable[[str], Awaitable[Reply]], model: str | None = None
) -> ServerLimits:
    """``discover`` for an async ``http_get``."""
    return parse_replies({url: await http_get(url) for url in discovery_urls(base_url)}, model)
