"""The AI/ML API's free-tier quota reply and its deprecation feed, read from recorded replies."""

from __future__ import annotations

import json
import pickle
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiml_bge_integrations._deprecations import (
    DeprecationEntry,
    deprecation_feed_url,
    find_deprecation,
    free_tier_quota_error,
    is_free_tier_quota,
    parse_deprecation_feed,
    quota_reset_after,
    replacement_message,
)
from aiml_bge_integrations._wire import parse_error_body
from aiml_bge_integrations.errors import QuotaExceededError, RateLimitError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "aimlapi"
NOW = datetime(2025, 3, 11, 7, 13, 27, tzinfo=timezone.utc)


def recorded(name: str) -> tuple[int, httpx.Headers, bytes]:
    doc: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return doc["status"], httpx.Headers(doc["headers"]), json.dumps(doc["body"]).encode()


def test_the_documented_free_tier_reply_is_a_quota_error_that_says_what_to_do() -> None:
    status, headers, content = recorded("free_tier_429.json")
    info = parse_error_body(content, headers)
    assert is_free_tier_quota(status, info.message)

    error = free_tier_quota_error(
        info.message, headers=headers, request_id=info.request_id, body=content, now=NOW
    )
    assert isinstance(error, QuotaExceededError) and isinstance(error, RateLimitError)
    assert error.status_code == 429
    assert error.request_id == "798b860e-98c2-4e8e-8c50-550bcfc2eccc"
    assert error.retry_after is None and error.resets_at is None
    text = str(error)
    assert text.startswith("HTTP 429:")
    assert "not retried" in text and "does not say when it resets" in text
    assert "https://aimlapi.com/app/billing/" in text
    assert "You've reached your free limit for the hour" in text  # the server's own words


def test_an_ordinary_rate_limit_is_not_a_quota() -> None:
    status, headers, content = recorded("rate_limit_429.json")
    assert not is_free_tier_quota(status, parse_error_body(content, headers).message)


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (429, "Free-tier limit: You've reached your free limit for the hour.", True),
        (429, "free tier limit reached", True),
        (429, "You've reached your FREE LIMIT for the hour", True),
        (429, "Too Many Requests", False),
        (429, "", False),
        (403, "Free-tier limit: You've reached your free limit for the hour.", False),
        (429, "rate limit for the free model", False),
    ],
)
def test_what_counts_as_the_free_tier_quota(status: int, message: str, expected: bool) -> None:
    assert is_free_tier_quota(status, message) is expected


@pytest.mark.parametrize(
    ("headers", "message", "seconds"),
    [
        ({"retry-after": "120"}, "Free-tier limit", 120.0),
        ({"retry-after-ms": "1500"}, "Free-tier limit", 1.5),
        ({"retry-after": "Tue, 11 Mar 2025 08:00:00 GMT"}, "Free-tier limit", 46 * 60 + 33),
        ({}, "free limit reached, try again in 23 minutes", 23 * 60.0),
        ({}, "free limit reached; resets in 1 hour", 3600.0),
        ({}, "free limit reached, retry after 90 seconds", 90.0),
        ({}, "free limit; resets at 2025-03-11T08:00:00Z", 46 * 60 + 33),
        ({}, "free limit; resets at 2025-03-11T08:00:00+01:00", 0.0),  # already past
        ({}, "Free-tier limit: You've reached your free limit for the hour.", None),
    ],
)
def test_the_reset_time_when_the_reply_says(
    headers: dict[str, str], message: str, seconds: float | None
) -> None:
    got = quota_reset_after(httpx.Headers(headers), message, now=NOW)
    if seconds is None:
        assert got is None
    else:
        assert got == pytest.approx(seconds, abs=1)


def test_a_known_reset_time_is_in_the_error() -> None:
    error = free_tier_quota_error(
        "free limit reached", headers=httpx.Headers({"retry-after": "1800"}), now=NOW
    )
    assert error.retry_after == 1800
    assert error.resets_at == NOW + timedelta(minutes=30)
    assert "resets at 2025-03-11 07:43 UTC (in 30 min)" in str(error)


def test_the_quota_error_survives_pickling() -> None:
    error = free_tier_quota_error(
        "free limit", headers=httpx.Headers({"retry-after": "60"}), request_id="r1", now=NOW
    )
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is QuotaExceededError
    assert (copy.retry_after, copy.resets_at, copy.request_id, copy.status_code) == (
        60,
        NOW + timedelta(minutes=1),
        "r1",
        429,
    )
    assert str(copy) == str(error)


def feed() -> tuple[DeprecationEntry, ...]:
    _, _, content = recorded("deprecations.json")
    return parse_deprecation_feed(content)


def test_the_recorded_feed_is_read_and_bad_entries_are_skipped() -> None:
    entries = feed()
    assert len(entries) == 9  # the nameless entry and the string are skipped
    bge = entries[0]
    assert bge == DeprecationEntry(
        id="BAAI/bge-base-en-v1.5",
        aliases=("bge-base-en-v1.5",),
        status="withdrawn",
        deprecated_at="2026-03-30",
        shutdown_at="2026-03-30",
        replaced_by="text-embedding-3-small",
        reason="provider_delisted",
    )
    assert entries[1].replaced_by is None


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"null", b"42", b'{"data": "x"}', b'{"other": []}', b"[1, 2]", b"\xff"],
)
def test_a_feed_that_cannot_be_read_is_empty(content: bytes) -> None:
    assert parse_deprecation_feed(content) == ()


def test_a_bare_list_is_a_feed_too() -> None:
    entries = parse_deprecation_feed(
        b'[{"id": "m", "replaced_by": {"id": "n"}, "status": "Withdrawn"}]'
    )
    assert entries == (DeprecationEntry(id="m", status="withdrawn", replaced_by="n"),)


@pytest.mark.parametrize(
    ("model", "found"),
    [
        ("BAAI/bge-base-en-v1.5", "BAAI/bge-base-en-v1.5"),
        ("baai/BGE-base-en-v1.5", "BAAI/bge-base-en-v1.5"),
        ("bge-base-en-v1.5", "BAAI/bge-base-en-v1.5"),  # an alias
        ("qwen-text-embedding-v3", "alibaba/qwen-text-embedding-v3"),
        (
            "other-vendor/bge-large-en-v1.5",
            "BAAI/bge-large-en-v1.5",
        ),  # by the name after the prefix
        ("text-embedding-3-small", None),
    ],
)
def test_finding_a_model_in_the_feed(model: str, found: str | None) -> None:
    entry = find_deprecation(model, feed())
    assert (entry.id if entry else None) == found


def test_the_message_names_the_replacement_and_what_to_do() -> None:
    message = replacement_message("BAAI/bge-base-en-v1.5", feed())
    assert message is not None
    assert "'BAAI/bge-base-en-v1.5' as a model that has been withdrawn" in message
    assert "shut down 2026-03-30" in message and "provider delisted" in message
    assert "set model='text-embedding-3-small'" in message
    assert "re-embed" in message


def test_a_withdrawn_replacement_is_followed_to_the_one_still_served() -> None:
    message = replacement_message("old-embed-1", feed())
    assert message is not None and "set model='text-embedding-3-large'" in message
    # A deprecated (still served) replacement is named as it is.
    message = replacement_message("togethercomputer/m2-bert-80M-32k-retrieval", feed())
    assert message is not None and "set model='text-embedding-ada-002'" in message


def test_a_replacement_loop_names_no_replacement() -> None:
    message = replacement_message("loop-a", feed())
    assert message is not None and "names no replacement" in message


def test_no_replacement_and_no_entry() -> None:
    message = replacement_message("BAAI/bge-large-en-v1.5", feed())
    assert message is not None and "names no replacement" in message and "self-hosting" in message
    assert replacement_message("text-embedding-3-small", feed()) is None
    assert replacement_message("BAAI/bge-base-en-v1.5", ()) is None


def test_the_feed_url_sits_under_the_base_url() -> None:
    assert (
        deprecation_feed_url("https://api.aimlapi.com/v1")
        == "https://api.aimlapi.com/v1/models/deprecations"
    )
    assert (
        deprecation_feed_url("http://127.0.0.1:8000/v1/")
        == "http://127.0.0.1:8000/v1/models/deprecations"
    )
