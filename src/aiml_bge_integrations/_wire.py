"""The wire format, pure: request bodies, response parsing and validation, usage, error bodies.

Nothing here does I/O, so all of it is tested without a socket.
"""

from __future__ import annotations

import base64
import math
import re
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

try:  # SIMD base64: six times the standard library's speed (see pyproject.toml)
    from pybase64 import b64decode as _b64decode
except ImportError:  # pragma: no cover - a dependency, but the fallback is exact too
    _b64decode = base64.b64decode  # type: ignore[assignment]

__all__ = [
    "ErrorInfo",
    "ParsedEmbeddings",
    "ResponseUsage",
    "WireError",
    "batch_limit_in_message",
    "build_request_body",
    "item_index_in_message",
    "parse_embeddings_response",
    "parse_error_body",
    "says_batch_too_large",
    "says_input_too_long",
]


class WireError(ValueError):
    """A reply that does not satisfy the contract (turned into ResponseValidationError by the client)."""


def build_request_body(
    model: str, texts: Sequence[str], encoding_format: str | None = None
) -> bytes:
    """The JSON body of ``POST /embeddings``: texts are sent exactly as given, always as a list."""
    body: dict[str, Any] = {"model": model, "input": list(texts)}
    if encoding_format is not None:
        body["encoding_format"] = encoding_format
    return orjson.dumps(body)


@dataclass(frozen=True)
class ResponseUsage:
    """What one reply says it cost."""

    prompt_tokens: int = 0
    total_tokens: int = 0
    credits: float = 0.0
    usd: float = 0.0


@dataclass(frozen=True)
class ParsedEmbeddings:
    """A validated reply: ``vectors[i]`` is the embedding of input ``i`` of the request."""

    vectors: list[list[float]]
    usage: ResponseUsage
    model: str | None


def _decode_base64(value: str) -> list[float]:
    try:
        raw = _b64decode(value, validate=True)
    except ValueError as err:  # binascii.Error
        raise WireError(f"embedding is not valid base64 ({err})") from None
    if len(raw) % 4:
        raise WireError(f"base64 embedding of {len(raw)} bytes is not a whole number of float32")
    arr = array("f")
    arr.frombytes(raw)
    if sys.byteorder != "little":  # the wire format is little-endian float32
        arr.byteswap()
    vec = arr.tolist()
    if not _finite_float32(raw):
        bad = next((x for x in vec if not math.isfinite(x)), None)
        if bad is not None:
            raise WireError(f"base64 embedding holds {bad!r}, which is not a finite float32")
    return vec


_NUMBER_TEXT = b"0123456789+-.eE, \t\n\r"
"""What the inside of a JSON array of numbers is written with: digits, sign, point, exponent,
commas and whitespace."""


def _vectors_hold_only_numbers(content: bytes, doc: dict[str, Any], data: list[Any]) -> bool:
    """Whether nothing but numbers is written between the brackets of every embedding.

    The reply is written back by orjson with each embedding emptied to ``[]``; once every
    number character is deleted from both, the two are equal exactly when the embeddings
    held only numbers (a string, ``null``, ``true``, a nested list or an object would leave
    quotes, letters or brackets behind). One pass over the bytes, 3-4 ms per 1,000 vectors,
    where collecting the type of every item costs about 40 ms and ``sum()`` (which would let
    ``true`` through) 9 ms. Escaped slashes (``BAAI\\/bge``, as PHP writes them) are undone
    before comparing; anything else orjson would spell differently (``\\u`` escapes,
    repeated keys) gives False, and every item is checked. Kept for its measured worth
    (docs/internals.md).
    """
    try:
        emptied = {**doc, "data": [{**item, "embedding": []} for item in data]}
        rewritten = orjson.dumps(emptied).translate(None, _NUMBER_TEXT)
    except (TypeError, orjson.JSONEncodeError):  # an item that is not an object, a huge int
        return False
    received = content.translate(None, _NUMBER_TEXT)
    return rewritten == received or rewritten == received.replace(b"\\/", b"/")


def _numbers_as_floats(vec: list[Any]) -> list[float]:
    # Every item is a JSON number, so orjson made it a float, or an int where it was written
    # without a point or an exponent. A vector that starts with a float is taken as it is.
    if not vec or type(vec[0]) is float:
        return vec
    return [float(x) for x in vec]


def _checked_floats(vec: list[Any], idx: int) -> list[float]:
    # For a reply the one-pass check could not clear: the item types, collected in C (about
    # 40 ms per 1,000 vectors). JSON true is not a number, though Python's bool is an int.
    kinds = set(map(type, vec))
    if kinds == _FLOAT:
        return vec
    if kinds <= _FLOAT_OR_INT:
        return [float(x) for x in vec]
    bad = next(x for x in vec if type(x) not in _FLOAT_OR_INT)
    raise WireError(f"embedding for index {idx} holds {bad!r}, which is not a number")


_FLOAT32_MAX = 3.4028234663852886e38


def _check_range(vec: list[float], idx: int) -> None:
    # Every vector is finite and fits float32, whatever the encoding: a NaN or an infinity
    # silently poisons an index, and a JSON 1e39 becomes one in a float32 store. One pass in
    # C: the norm is at least every item's size, and NaN when one is NaN (infinite when one
    # is infinite). Only a norm past the range (rare: items near it) looks at the items.
    if math.hypot(*vec) <= _FLOAT32_MAX:
        return
    bad = next((x for x in vec if not -_FLOAT32_MAX <= x <= _FLOAT32_MAX), None)
    if bad is not None:
        raise WireError(f"embedding for index {idx} holds {bad!r}, which is not a finite float32")


def _finite_float32(raw: bytes) -> bool:
    """Whether no little-endian float32 in ``raw`` is NaN or infinite (exponent bits all set).

    Those, and only finite values of 2**127 or more, have 0x7f or 0xff as their top byte: a
    slice and two searches in C, where the exact check runs only when one is found.
    """
    top = raw[3::4]
    return b"\x7f" not in top and b"\xff" not in top


_FLOAT = {float}
_FLOAT_OR_INT = {float, int}


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def _usage(doc: Mapping[str, Any], headers: Mapping[str, str]) -> ResponseUsage:
    usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    prompt = int(_number(usage.get("prompt_tokens")))
    total = int(_number(usage.get("total_tokens"))) or prompt
    credits = 0.0
    meta = doc.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("usage"), dict):
        credits = _number(meta["usage"].get("credits_used"))
    if not credits:
        credits = _header_number(headers, "x-aimlapi-credits-used")
    usd = _header_number(headers, "x-aimlapi-usd-spent")
    return ResponseUsage(prompt, total, credits, usd)


def _header_number(headers: Mapping[str, str], name: str) -> float:
    raw = headers.get(name)
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def parse_embeddings_response(
    content: bytes | str,
    expected_count: int,
    *,
    expected_dim: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> ParsedEmbeddings:
    """Parse and check a 200 reply for a request of ``expected_count`` inputs.

    Each vector is placed by its ``index``. Raises ``WireError`` unless there is exactly one
    vector per input, every index is an int in range and unique, and every vector has one
    dimension (``expected_dim`` when given). Vectors may be JSON floats or base64 float32.
    """
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError as err:
        raise WireError(f"reply is not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise WireError(f"reply is a JSON {type(doc).__name__}, not an object")
    data = doc.get("data")
    if not isinstance(data, list):
        raise WireError("reply has no 'data' list")
    if len(data) != expected_count:
        raise WireError(f"reply has {len(data)} embeddings for {expected_count} inputs")
    slots: list[list[float] | None] = [None] * expected_count
    dim = expected_dim
    first = data[0] if data else None
    numbers_only = (
        isinstance(content, bytes)
        and isinstance(first, dict)
        and isinstance(first.get("embedding"), list)
        and _vectors_hold_only_numbers(content, doc, data)
    )
    for pos, item in enumerate(data):
        if not isinstance(item, dict):
            raise WireError(f"data[{pos}] is not an object")
        idx = item.get("index")
        if type(idx) is not int or not 0 <= idx < expected_count:
            raise WireError(f"data[{pos}] has index {idx!r}, outside 0..{expected_count - 1}")
        if slots[idx] is not None:
            raise WireError(f"index {idx} appears more than once")
        vec = item.get("embedding")
        if isinstance(vec, str):
            vec = _decode_base64(vec)  # checked there: float32 by construction
        elif isinstance(vec, list):
            vec = _numbers_as_floats(vec) if numbers_only else _checked_floats(vec, idx)
            _check_range(vec, idx)
        else:
            raise WireError(f"embedding for index {idx} is not a list or base64 string")
        if dim is None:
            dim = len(vec)
            if dim == 0:
                raise WireError(f"embedding for index {idx} is empty")
        elif len(vec) != dim:
            raise WireError(f"embedding for index {idx} has {len(vec)} dimensions, expected {dim}")
        slots[idx] = vec
    model = doc.get("model") if isinstance(doc.get("model"), str) else None
    # Every slot is filled: count matched, indices were in range and unique.
    return ParsedEmbeddings(slots, _usage(doc, headers or {}), model)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ErrorInfo:
    """What an error body says, whatever its dialect."""

    message: str
    request_id: str | None = None
    kind: str | None = None
    """The server's own error class or type, if it gives one (``error_type``, ``type``, ``name``)."""
    item_index: int | None = None
    """The input a FastAPI-style 422 names by its ``detail[].loc`` (``[..., "input", ..., 27]``)."""


def _item_in_detail(detail: Any) -> int | None:
    # FastAPI/pydantic validation errors (infinity, and other servers built on FastAPI) locate
    # each problem: ["body", "input", 3] or ["body", "text", "input", "list[constrained-str]", 3].
    if not isinstance(detail, list):
        return None
    for entry in detail:
        loc = entry.get("loc") if isinstance(entry, dict) else None
        if isinstance(loc, list) and len(loc) >= 2 and type(loc[-1]) is int and "input" in loc[:-1]:
            return int(loc[-1])
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, list) and value:
        parts = [
            p if isinstance(p, str) else (p.get("msg") if isinstance(p, dict) else None)
            for p in value
        ]
        joined = "; ".join(str(p) for p in parts if p)
        return joined or None
    return None


def parse_error_body(content: bytes, headers: Mapping[str, str] | None = None) -> ErrorInfo:
    """Read an error reply in any known shape.

    AI/ML API: ``{"message", "path", "requestId", "statusCode", "timestamp"}`` or problem+json
    ``{"title", "status", "message", "error": {"name", "message"}, "requestId"}``; TEI
    ``{"error": str, "error_type"}``; OpenAI, infinity, Ollama ``{"error": {"message", "type", "code"}}``;
    vLLM ``{"object": "error", "message", "type", "code"}``; FastAPI ``{"detail": ...}``.
    Anything else becomes a short excerpt of the body.
    """
    headers = headers or {}
    request_id = headers.get("x-inference-id") or headers.get("x-request-id")
    try:
        doc = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        excerpt = content[:300].decode("utf-8", "replace").strip() if content else ""
        return ErrorInfo(excerpt or "(empty error body)", request_id)
    rid = doc.get("requestId") or doc.get("request_id")
    if isinstance(rid, str) and rid:
        request_id = request_id or rid
    err = doc.get("error")
    kind: str | None = None
    message: str | None = None
    if isinstance(err, dict):
        message = _text(err.get("message"))
        raw_kind = err.get("type") or err.get("name") or err.get("code")
        kind = str(raw_kind) if raw_kind is not None else None
    elif isinstance(err, str):
        message = _text(err)
        kind = doc.get("error_type") if isinstance(doc.get("error_type"), str) else None
    top = _text(doc.get("message"))
    if top and (message is None or len(top) > len(message)):
        message = top
    if kind is None and isinstance(doc.get("type"), str):
        kind = doc["type"]
    message = message or _text(doc.get("detail")) or _text(doc.get("title"))
    if message is None:
        message = orjson.dumps(doc)[:300].decode("utf-8", "replace")
    return ErrorInfo(message, request_id, kind, _item_in_detail(doc.get("detail")))


_ITEM_RE = re.compile(
    r"input\s*\[\s*(\d+)\s*\]|(?:item|index|input)\s+(?:#|at index\s+)?(\d+)", re.I
)
_SIZE_RE = re.compile(
    r"too (?:large|many|long)|batch size|max(?:imum)?[_ ]client[_ ]batch|payload|"
    r"request entity|body (?:is )?too|at most \d+ (?:items|inputs)",
    re.I,
)
_LIMIT_RE = re.compile(
    r"(?:maximum allowed batch size|max_client_batch_size|at most|maximum(?: of)?|limit(?: is| of)?)\s*[:=]?\s*(\d+)\b"
    # A number of bytes, characters or tokens is not a number of inputs.
    r"(?!\s*(?:bytes?|b\b|kb|mb|char|characters?|tokens?))",
    re.I,
)


def item_index_in_message(message: str) -> int | None:
    """The batch position an error message names (``input[3]``, ``item 3``), if any."""
    m = _ITEM_RE.search(message)
    if not m:
        return None
    return int(m.group(1) or m.group(2))


def says_batch_too_large(status: int, message: str) -> bool:
    """Whether a refusal is about the request's size, so a smaller batch may pass."""
    return status == 413 or (status in (400, 422) and bool(_SIZE_RE.search(message)))


def batch_limit_in_message(message: str) -> int | None:
    """The item limit a server names when it refuses a batch (TEI: 'maximum allowed batch size 32')."""
    m = _LIMIT_RE.search(message)
    return int(m.group(1)) if m else None


# Whole words only: the AI/ML API's schema hint "string (minLength 1)" is about the request
# as a whole, not about one input's length.
_TOO_LONG_RE = re.compile(r"\b(?:too long|tokens?|length|characters?|exceeds? the)\b", re.I)


def says_input_too_long(message: str) -> bool:
    """Whether a refusal blames the length of an input rather than the request as a whole."""
    return bool(_TOO_LONG_RE.search(message))
