"""The AI/ML API's model deprecation feed, as the local server serves it (pure).

The vendor publishes ``GET /v1/models/deprecations`` (also ``/models/deprecations`` and
``/api/v1/models/deprecations``; ``deprecated`` works for ``deprecations``), public, with
``Cache-Control: public, max-age=300`` and a weak ETag. Each entry has ``id``, ``aliases``,
``status`` (``deprecated``: still served, retirement announced; ``superseded``: folded into
another model, the id still resolves; ``withdrawn``: gone, requests 404), ``deprecated_at``,
``shutdown_at``, ``replaced_by`` (or ``null``) and ``reason``; the query parameters
``status`` and ``since`` filter it.

``RECORDED_FEED`` holds entries built from those documented fields: the BGE models the
vendor's model list retired on 2026-03-30, with illustrative replacements and dates where the
vendor's own are not known. The server serves the record as its configuration makes it true:
a model it serves is left out, and every retired model it answers 404 for is listed as
``withdrawn`` (from the record when it is there).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

__all__ = ["FEED_HEADERS", "RECORDED_FEED", "feed_entries", "feed_reply"]

RECORDED_FEED: tuple[Mapping[str, Any], ...] = (
    {
        "id": "BAAI/bge-base-en-v1.5",
        "aliases": ["bge-base-en-v1.5"],
        "status": "withdrawn",
        "deprecated_at": "2026-03-30",
        "shutdown_at": "2026-03-30",
        "replaced_by": "text-embedding-3-small",
        "reason": "provider_delisted",
    },
    {
        "id": "BAAI/bge-large-en-v1.5",
        "aliases": ["bge-large-en-v1.5"],
        "status": "withdrawn",
        "deprecated_at": "2026-03-30",
        "shutdown_at": "2026-03-30",
        "replaced_by": "text-embedding-3-large",
        "reason": "provider_delisted",
    },
    {
        "id": "togethercomputer/m2-bert-80M-32k-retrieval",
        "aliases": [],
        "status": "withdrawn",
        "deprecated_at": "2026-03-30",
        "shutdown_at": "2026-04-15",
        "replaced_by": None,
        "reason": "provider_delisted",
    },
    {
        "id": "text-embedding-ada-002",
        "aliases": [],
        "status": "deprecated",
        "deprecated_at": "2026-06-01",
        "shutdown_at": "2027-01-01",
        "replaced_by": "text-embedding-3-small",
        "reason": "superseded_by_newer_model",
    },
    {
        "id": "alibaba/qwen-text-embedding-v3",
        "aliases": ["qwen-text-embedding-v3"],
        "status": "superseded",
        "deprecated_at": "2026-07-01",
        "shutdown_at": None,
        "replaced_by": "alibaba/qwen-text-embedding-v4",
        "reason": "provider_update",
    },
)
"""The recorded feed (see the module docstring)."""

FEED_HEADERS: Mapping[str, str] = {"cache-control": "public, max-age=300"}
"""Headers of every feed reply besides its ETag."""


def feed_entries(
    served: Sequence[str],
    retired: Sequence[str],
    record: Iterable[Mapping[str, Any]] = RECORDED_FEED,
) -> list[dict[str, Any]]:
    """The feed as this server's models make it true: served models left out, every retired
    one ``withdrawn`` (from ``record`` when it is there, else with no dates or replacement)."""
    served_set = set(served)
    entries: list[dict[str, Any]] = []
    for entry in record:
        if entry["id"] in served_set:
            continue
        if entry["id"] in retired:
            entry = {**entry, "status": "withdrawn"}
        entries.append(dict(entry))
    listed = {e["id"] for e in entries}
    for model in retired:
        if model not in listed and model not in served_set:
            entries.append(
                {
                    "id": model,
                    "aliases": [],
                    "status": "withdrawn",
                    "deprecated_at": None,
                    "shutdown_at": None,
                    "replaced_by": None,
                    "reason": "retired",
                }
            )
    return entries


def feed_reply(
    entries: Sequence[Mapping[str, Any]], status: str | None = None, since: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one feed reply: ``{"object": "list", "data": [...]}``, filtered
    by ``status`` and by ``since`` (entries deprecated on or after that ISO date)."""
    chosen = [
        e
        for e in entries
        if (status is None or e["status"] == status)
        and (since is None or (e["deprecated_at"] or "") >= since)
    ]
    body = orjson.dumps({"object": "list", "data": chosen})
    etag = 'W/"' + hashlib.sha256(body).hexdigest()[:16] + '"'
    return body, {**FEED_HEADERS, "etag": etag}
