"""The AI/ML API as it is, pure: its free-tier quota reply and its model deprecation feed.

Free tier: a free key gets a few requests an hour; past them every request is answered 429
with the message ``Free-tier limit: You've reached your free limit for the hour. Get AI/ML
Subscription to use API, visit https://aimlapi.com/app/billing/ !`` (the vendor's documented
body, ``{"message", "path", "requestId", "statusCode", "timestamp"}``, with no
``Retry-After``). Retrying that for minutes only burns time, so the client raises
:class:`~aiml_bge_integrations.errors.QuotaExceededError` at once, saying when the quota
resets where the reply says so.

Deprecations: ``GET {base_url}/models/deprecations`` (public, no key) lists retired and
retiring models: ``id``, ``aliases``, ``status`` (``deprecated``: still served, retirement
announced; ``superseded``: folded into another model; ``withdrawn``: gone, requests 404),
``deprecated_at``, ``shutdown_at``, ``replaced_by`` and ``reason``. After a 404 for a model
the client reads it, when reachable, to name the replacement.

Nothing here does I/O; the client fetches, this module reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from ._retry import parse_retry_after
from .errors import QuotaExceededError

__all__ = [
    "BILLING_URL",
    "FEED_BYTES_LIMIT",
    "FEED_TIMEOUT",
    "DeprecationEntry",
    "deprecation_feed_url",
    "find_deprecation",
    "free_tier_quota_error",
    "is_free_tier_quota",
    "parse_deprecation_feed",
    "quota_reset_after",
    "replacement_message",
]

BILLING_URL = "https://aimlapi.com/app/billing/"
"""Where an AI/ML API account gets a paid subscription."""
FEED_TIMEOUT = 3.0
"""Seconds the client gives the deprecation feed after a 404 (it only adds to an error)."""
FEED_BYTES_LIMIT = 1 << 20
"""The most bytes of the feed the client reads; a longer one is ignored."""

# "Free-tier limit: You've reached your free limit for the hour" and close rewordings.
_FREE_TIER_RE = re.compile(r"\bfree[\s-]*(?:tier[\s-]*)?limit\b", re.I)
# "try again in 23 minutes", "resets in 1 hour", "retry after 90 seconds"
_RESET_IN_RE = re.compile(
    r"\b(?:in|after)\s+(\d+(?:\.\d+)?)\s*(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b",
    re.I,
)
# "resets at 2025-03-11T08:00:00Z" (an ISO 8601 moment after "at", "after" or "until")
_RESET_AT_RE = re.compile(
    r"\b(?:at|after|until)\s+(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)",
    re.I,
)
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def is_free_tier_quota(status: int, message: str) -> bool:
    """Whether a reply is the AI/ML API free tier's used-up hourly quota, not a passing rate limit."""
    return status == 429 and bool(_FREE_TIER_RE.search(message or ""))


def _parse_moment(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment


def quota_reset_after(
    headers: Mapping[str, str], message: str, *, now: datetime | None = None
) -> float | None:
    """Seconds until a quota resets, if the reply says: ``Retry-After`` (or ``retry-after-ms``),
    else a phrase in the message (``in 23 minutes``, ``at 2025-03-11T08:00:00Z``); else ``None``.

    ``headers`` must be case-insensitive as httpx's are (or use lower-case names).
    """
    now = now or datetime.now(timezone.utc)
    waited = parse_retry_after(headers, now.timestamp())
    if waited is not None:
        return waited
    m = _RESET_AT_RE.search(message or "")
    if m:
        moment = _parse_moment(m.group(1))
        if moment is not None:
            return max(0.0, (moment - now).total_seconds())
    m = _RESET_IN_RE.search(message or "")
    if m:
        return float(m.group(1)) * _UNIT_SECONDS[m.group(2)[0].lower()]
    return None


def free_tier_quota_error(
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    request_id: str | None = None,
    body: Any = None,
    now: datetime | None = None,
) -> QuotaExceededError:
    """The error for a free-tier 429 (``message`` is the server's own words), with its reset time."""
    now = now or datetime.now(timezone.utc)
    retry_after = quota_reset_after(headers or {}, message, now=now)
    resets_at = now + timedelta(seconds=retry_after) if retry_after is not None else None
    if resets_at is not None:
        when = f"It resets at {resets_at:%Y-%m-%d %H:%M} UTC (in {_duration(retry_after or 0)})."
    else:
        when = "The reply does not say when it resets; the free tier counts requests per hour."
    text = (
        "The AI/ML API free tier's request quota for this key is used up, so the request was "
        f"not retried (waiting minutes does not clear it). {when} Use a key with a paid "
        f"subscription ({BILLING_URL}) or run again later. The server said: {message!r}"
    )
    return QuotaExceededError(
        text,
        status_code=429,
        request_id=request_id,
        body=body,
        retry_after=retry_after,
        resets_at=resets_at,
    )


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{max(0, round(seconds))} s"
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes / 60:.1f} h"


@dataclass(frozen=True)
class DeprecationEntry:
    """One model in the AI/ML API's deprecation feed."""

    id: str
    """The model's id, as requests name it."""
    aliases: tuple[str, ...] = ()
    """Other names that resolve to the same model."""
    status: str = "deprecated"
    """``deprecated`` (still served), ``superseded`` (folded into another) or ``withdrawn`` (404)."""
    deprecated_at: str | None = None
    """When the retirement was announced (as the feed writes it, ISO 8601)."""
    shutdown_at: str | None = None
    """When the model stops, or stopped, being served."""
    replaced_by: str | None = None
    """The model the vendor names instead, if any."""
    reason: str | None = None
    """Why, in the feed's words (``provider_delisted``)."""

    def names(self) -> tuple[str, ...]:
        """The id and the aliases."""
        return (self.id, *self.aliases)


def deprecation_feed_url(base_url: str) -> str:
    """Where the feed is for a base URL: ``{base_url}/models/deprecations``."""
    return base_url.rstrip("/") + "/models/deprecations"


def _str(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def parse_deprecation_feed(content: bytes) -> tuple[DeprecationEntry, ...]:
    """The entries of a deprecation feed reply; never raises (a feed it cannot read is empty).

    Accepts a JSON list of entries or an object holding it under ``data``, ``deprecations``,
    ``models`` or ``items``; entries without a string ``id`` are skipped.
    """
    try:
        doc = orjson.loads(content)
    except (orjson.JSONDecodeError, TypeError):
        return ()
    items: Any = doc
    if isinstance(doc, dict):
        items = next(
            (
                doc[k]
                for k in ("data", "deprecations", "models", "items")
                if isinstance(doc.get(k), list)
            ),
            [],
        )
    if not isinstance(items, list):
        return ()
    entries: list[DeprecationEntry] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        model_id = _str(item.get("id")) or _str(item.get("model"))
        if model_id is None:
            continue
        raw_aliases = item.get("aliases")
        aliases = (
            tuple(a for a in (_str(x) for x in raw_aliases) if a)
            if isinstance(raw_aliases, list)
            else ()
        )
        replaced = item.get("replaced_by")
        if isinstance(replaced, dict):  # {"id": ...} in some feeds
            replaced = replaced.get("id")
        entries.append(
            DeprecationEntry(
                id=model_id,
                aliases=aliases,
                status=(_str(item.get("status")) or "deprecated").lower(),
                deprecated_at=_str(item.get("deprecated_at")),
                shutdown_at=_str(item.get("shutdown_at")),
                replaced_by=_str(replaced),
                reason=_str(item.get("reason")),
            )
        )
    return tuple(entries)


def find_deprecation(model: str, entries: Iterable[DeprecationEntry]) -> DeprecationEntry | None:
    """The entry for a model by id or alias (case-insensitive), else by the name after its vendor prefix."""
    entries = list(entries)
    wanted = model.strip().casefold()
    for entry in entries:
        if any(name.casefold() == wanted for name in entry.names()):
            return entry
    short = wanted.rsplit("/", 1)[-1]
    for entry in entries:
        if any(name.casefold().rsplit("/", 1)[-1] == short for name in entry.names()):
            return entry
    return None


def _final_replacement(entry: DeprecationEntry, entries: list[DeprecationEntry]) -> str | None:
    """Follow ``replaced_by`` past replacements that are withdrawn too; ``None`` if it loops."""
    seen = {entry.id.casefold()}
    current = entry.replaced_by
    for _ in range(len(entries) + 1):  # a chain longer than the feed is a loop
        if current is None or current.casefold() in seen:
            return None
        nxt = find_deprecation(current, entries)
        if nxt is None or nxt.status != "withdrawn" or nxt.replaced_by is None:
            return current
        seen.add(current.casefold())
        seen.add(nxt.id.casefold())
        current = nxt.replaced_by
    return None


def replacement_message(model: str, entries: Iterable[DeprecationEntry]) -> str | None:
    """What to tell a user whose model got a 404, from the feed; ``None`` if the feed does not list it."""
    entries = list(entries)
    entry = find_deprecation(model, entries)
    if entry is None:
        return None
    state = {
        "withdrawn": "has been withdrawn",
        "superseded": "has been superseded",
    }.get(entry.status, f"is {entry.status}")
    parts = [f"The AI/ML API lists {model!r} as a model that {state}"]
    if entry.shutdown_at:
        parts.append(f" (shut down {entry.shutdown_at})")
    elif entry.deprecated_at:
        parts.append(f" (deprecated {entry.deprecated_at})")
    if entry.reason:
        parts.append(f", reason: {entry.reason.replace('_', ' ')}")
    parts.append(".")
    replacement = _final_replacement(entry, entries)
    if replacement:
        parts.append(
            f" Its replacement is {replacement!r}: set model={replacement!r}. Its vectors are "
            "not comparable with the old model's, so re-embed the documents already indexed."
        )
    else:
        parts.append(
            " The feed names no replacement: choose another embedding model, or serve BGE "
            "yourself (any OpenAI-compatible server, see the self-hosting guide)."
        )
    return "".join(parts)
