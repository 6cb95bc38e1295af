"""The job's plan, decided before anything is sent or written: scan, dry run, identity, verdict.

Nothing here writes a file or opens a connection. ``scan`` and ``dry_run`` read the input
through its ``InputSource``; ``run_identity`` says what a run is (so that a resume can tell
whether a checkpoint belongs to this command); ``long_text_verdict`` applies the long-text
policy to what the scan found.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._batching import effective_long_text
from .._models import policy_window
from .._settings import DEFAULT_MODEL
from ..errors import InputFileError
from .sources import InputSource, Passage, PassageId

__all__ = [
    "DISTINCT_REMEMBERED",
    "DryRunReport",
    "ScanResult",
    "credits_for_request",
    "difference",
    "dry_run",
    "long_text_verdict",
    "run_identity",
    "scan",
    "text_key",
]

_EXAMPLES = 20
_SCAN_CHUNK = 1024
DISTINCT_REMEMBERED = 1_000_000
"""Distinct texts a run (and its dry run) remembers, to send each once (about 125 bytes each)."""


def text_key(text: str) -> bytes:
    """What identifies a passage's text within a run: 16 bytes of its BLAKE2b hash."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass
class ScanResult:
    """What one checking pass over the input found."""

    total: int = 0
    """Passages."""
    fingerprint: str = ""
    """SHA-256 of the bytes read (for a directory: of each relative path and its contents)."""
    over_limit: int = 0
    """Passages over the model's token window (only counted for BGE models)."""
    over_examples: list[tuple[PassageId, int]] = field(default_factory=list)
    """The first few of them, with their token counts."""


def _chunks(records: Iterator[Passage], size: int) -> Iterator[list[Passage]]:
    chunk: list[Passage] = []
    for rec in records:
        chunk.append(rec)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def scan(source: InputSource, *, window: int | None) -> ScanResult:
    """Read every record once: count, fingerprint, and find the passages over ``window``
    tokens (None: none looked for).

    Only texts that could be over the window are tokenized (as the core does), so this pass
    is cheap for short passages.
    """
    hasher = hashlib.sha256()
    result = ScanResult()
    for chunk in _chunks(source.records(hasher), _SCAN_CHUNK):
        result.total += len(chunk)
        if window is not None:
            from ..tokens import truncate_texts

            over = truncate_texts([p.text for p in chunk], window, cut=False).over_limit
            result.over_limit += len(over)
            for i, n in over.items():
                if len(result.over_examples) < _EXAMPLES:
                    result.over_examples.append((chunk[i].id, n))
    result.fingerprint = hasher.hexdigest()
    return result


def credits_for_request(tokens: int) -> int:
    """Estimated credits for one request of ``tokens`` BGE tokens: ``max(1, ceil(tokens / 1000))``.

    The local server bills with this formula; it matches the one documented sample (7 tokens,
    1 credit). The AI/ML API publishes no formula, so treat it as an estimate.
    """
    return max(1, math.ceil(tokens / 1000))


@dataclass
class DryRunReport:
    """Token counts and estimates for a job, computed without sending anything."""

    total: int = 0
    """Passages."""
    tokens: int = 0
    """BGE tokens of every passage as written, ``[CLS]`` and ``[SEP]`` included."""
    billed_tokens: int = 0
    """Tokens after the long-text policy (over-long passages counted at ``window`` when truncated)."""
    max_tokens: int = 0
    """The longest passage, in tokens."""
    window: int | None = None
    """The model's token window, where the package counts its tokens exactly (else None)."""
    over_limit: int = 0
    """Passages over ``window`` tokens."""
    over_examples: list[tuple[PassageId, int]] = field(default_factory=list)
    """The first few of them, with their token counts."""
    long_text: str = "truncate"
    """The policy the run applies to them: the one asked for where ``window`` is known, else ``"none"``."""
    repeated: int = 0
    """Passages whose text is that of an earlier one: the run does not send them again."""
    requests: int = 0
    """Requests at the given batch size (repeated passages are not sent)."""
    credits: int = 0
    """Estimated credits: ``credits_for_request`` summed over the planned requests."""


def dry_run(
    source: InputSource,
    *,
    batch_size: int,
    long_text: str = "truncate",
    model: str = DEFAULT_MODEL,
) -> DryRunReport:
    """Count tokens for every passage and estimate requests and credits.

    Nothing is sent. Batches are planned as the real run plans them (``batch_size``
    consecutive passages per request, a passage that repeats an earlier one's text left
    out), and each planned request is estimated with ``credits_for_request``. The long-text
    policy is applied as the run applies it: only where the model's window is known and its
    tokens are counted exactly (``effective_long_text``); elsewhere the counts are those of
    bert-base-uncased's WordPiece, an estimate.
    """
    from ..tokens import count_tokens_batch

    window = policy_window(model)
    report = DryRunReport(long_text=effective_long_text(model, long_text), window=window)
    batch_tokens = 0
    in_batch = 0
    seen: set[bytes] = set()
    for chunk in _chunks(source.records(), _SCAN_CHUNK):
        counts = count_tokens_batch([p.text for p in chunk])
        for passage, n in zip(chunk, counts, strict=True):
            report.total += 1
            report.tokens += n
            report.max_tokens = max(report.max_tokens, n)
            billed = n
            if window is not None and n > window:
                report.over_limit += 1
                if len(report.over_examples) < _EXAMPLES:
                    report.over_examples.append((passage.id, n))
                if report.long_text == "truncate":
                    billed = window
            key = text_key(passage.text)
            if key in seen:
                report.repeated += 1
                continue
            if len(seen) < DISTINCT_REMEMBERED:
                seen.add(key)
            report.billed_tokens += billed
            batch_tokens += billed
            in_batch += 1
            if in_batch == batch_size:
                report.requests += 1
                report.credits += credits_for_request(batch_tokens)
                batch_tokens = in_batch = 0
    if in_batch:
        report.requests += 1
        report.credits += credits_for_request(batch_tokens)
    return report


def long_text_verdict(
    scanned: ScanResult,
    *,
    source: InputSource,
    model: str,
    long_text: str,
    recorded: bool = False,
) -> str | None:
    """What the policy makes of the over-long passages the scan found.

    ``long_text`` is the effective policy (``effective_long_text``). Raises
    ``InputFileError`` naming them under ``"error"`` (unless ``recorded``: the run writes
    them with their error, ``--on-error record``, and this says so); returns the notice to
    show under ``"truncate"``; ``None`` when there is nothing to say.
    """
    if not scanned.over_limit:
        return None
    label = source.id_label
    if long_text == "error" and recorded:
        return (
            f"{scanned.over_limit} passage(s) over {policy_window(model)} tokens will be written with "
            f"an error instead of a vector (--long-text error, --on-error record; {label} "
            f"{', '.join(str(i) for i, _ in scanned.over_examples[:5])}"
            f"{' ...' if scanned.over_limit > 5 else ''})"
        )
    if long_text == "error":
        named = ", ".join(f"{label} {i} ({n} tokens)" for i, n in scanned.over_examples)
        more = scanned.over_limit - len(scanned.over_examples)
        raise InputFileError(
            f"{source.path}: {scanned.over_limit} passage(s) exceed the {policy_window(model)}-token "
            f"window of {model}: {named}{f' and {more} more' if more > 0 else ''}; "
            "split them, or use --long-text truncate",
            path=source.path,
        )
    if long_text != "truncate":
        return None
    return (
        f"{scanned.over_limit} passage(s) over {policy_window(model)} tokens will be truncated "
        f"to fit ({label} {', '.join(str(i) for i, _ in scanned.over_examples[:5])}"
        f"{' ...' if scanned.over_limit > 5 else ''})"
    )


def run_identity(
    source: InputSource, scanned: ScanResult, *, model: str, long_text: str, **output: Any
) -> dict[str, Any]:
    """What makes a run the same run: the input (path, format, contents), model, policy, output.

    ``output`` adds the output's own settings (format, dtype). A checkpoint whose identity
    differs from this command's belongs to another run (``difference`` says how).
    """
    return {
        **source.settings(),
        "input": str(Path(source.path).resolve()),
        "fingerprint": scanned.fingerprint,
        "total": scanned.total,
        "model": model,
        "long_text": long_text,
        **output,
    }


_ABSENT = {"on_error": "stop"}
"""What an identity without the key means."""


def difference(
    before: dict[str, Any], now: dict[str, Any], whose: str = "the unfinished run's"
) -> list[str]:
    """How two identities differ, each way said for a user (empty when they are the same).

    ``whose`` names the run ``before`` describes, in the messages.
    """
    said = []
    # A key only one side has counts too (``on_error`` is in an identity only when recording).
    for key in [*now, *(k for k in before if k not in now)]:
        old, new = before.get(key, _ABSENT.get(key)), now.get(key, _ABSENT.get(key))
        if old == new:
            continue
        if key == "fingerprint":
            said.append("the input's contents changed (its SHA-256 fingerprint differs)")
        elif key == "total":
            said.append(f"the input has {new} passages, {whose} had {old}")
        else:
            said.append(f"{key} is {new!r}, {whose} was {old!r}")
    return said
