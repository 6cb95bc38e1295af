"""The wire format: request bodies, reply parsing and validation, usage, error bodies."""

from __future__ import annotations

import base64
import gc
import json
import random
import struct
import weakref
from typing import Any

import orjson
import pytest

from aiml_bge_integrations._wire import (
    WireError,
    batch_limit_in_message,
    build_request_body,
    item_index_in_message,
    parse_embeddings_response,
    parse_error_body,
    says_batch_too_large,
    says_input_too_long,
)


def vec(i: int, dim: int = 4) -> list[float]:
    """A distinct, exactly representable vector per index (float32-exact too)."""
    return [float(i) + k / 8 for k in range(dim)]


def reply(items: list[dict[str, Any]], **extra: Any) -> bytes:
    return orjson.dumps({"object": "list", "data": items, "model": "m", **extra})


def item(index: Any, embedding: Any) -> dict[str, Any]:
    return {"object": "embedding", "index": index, "embedding": embedding}


def b64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


# -- request body ---------------------------------------------------------------------------


def test_request_body_sends_texts_exactly_as_given_in_a_list() -> None:
    texts = ["  leading space", "tab\tand\nnewline", "ünïcödé ✓", "Laura is a DJ."]
    body = json.loads(build_request_body("BAAI/bge-base-en-v1.5", texts))
    assert body == {"model": "BAAI/bge-base-en-v1.5", "input": texts}


def test_request_body_single_text_is_still_a_list() -> None:
    body = json.loads(build_request_body("m", ("one",)))
    assert body["input"] == ["one"]


@pytest.mark.parametrize("fmt", ["float", "base64"])
def test_request_body_carries_encoding_format_only_when_set(fmt: str) -> None:
    assert "encoding_format" not in json.loads(build_request_body("m", ["a"]))
    assert json.loads(build_request_body("m", ["a"], fmt))["encoding_format"] == fmt


# -- parsing and validation -----------------------------------------------------------------


def test_order_is_restored_from_a_shuffled_reply() -> None:
    n = 50
    items = [item(i, vec(i)) for i in range(n)]
    random.Random(7).shuffle(items)
    assert [it["index"] for it in items] != list(range(n))
    parsed = parse_embeddings_response(reply(items), n)
    assert parsed.vectors == [vec(i) for i in range(n)]


def test_whole_number_vectors_become_python_floats() -> None:
    # JavaScript serialisers write 0.0 as 0 and 1.0 as 1; orjson reads those as ints.
    parsed = parse_embeddings_response(
        reply([item(0, [0, 1, 0, 0]), item(1, [0, 0.5, -1, 0.25])]), 2
    )
    assert parsed.vectors == [[0.0, 1.0, 0.0, 0.0], [0.0, 0.5, -1.0, 0.25]]
    assert all(type(x) is float for x in parsed.vectors[0])


def test_base64_vectors_decode_to_python_floats_in_order() -> None:
    items = [item(1, b64(vec(1))), item(0, b64(vec(0)))]
    parsed = parse_embeddings_response(reply(items), 2)
    assert parsed.vectors == [vec(0), vec(1)]
    assert all(type(x) is float for v in parsed.vectors for x in v)


def test_vectors_are_ordinary_lists_of_floats_the_cycle_collector_sees() -> None:
    # No reach into the interpreter: a vector a caller builds a cycle through is collected.
    items = [item(i, vec(i, 768)) for i in range(3)]
    parsed = parse_embeddings_response(reply(items), 3)
    assert parsed.vectors == [vec(i, 768) for i in range(3)]
    assert all(type(v) is list and gc.is_tracked(v) for v in parsed.vectors)

    class Note:
        vector: list[Any]

    note = Note()
    note.vector = parsed.vectors[0]
    parsed.vectors[0].append(note)  # type: ignore[arg-type]  # a cycle through the vector
    probe = weakref.ref(note)
    del note, parsed
    gc.collect()
    assert probe() is None


def test_base64_float32_rounding_is_within_float32_tolerance() -> None:
    values = [0.1, -0.2, 1 / 3, 0.7071067811865476]
    parsed = parse_embeddings_response(reply([item(0, b64(values))]), 1)
    assert parsed.vectors[0] == pytest.approx(values, rel=1e-6, abs=1e-7)


def test_768_dimensions_accepted_for_bge_base() -> None:
    parsed = parse_embeddings_response(reply([item(0, vec(0, 768))]), 1, expected_dim=768)
    assert len(parsed.vectors[0]) == 768


@pytest.mark.parametrize(
    ("items", "count", "dim", "words"),
    [
        pytest.param([item(0, vec(0))], 2, None, "1 embeddings for 2", id="too-few"),
        pytest.param(
            [item(0, vec(0)), item(1, vec(1)), item(2, vec(2))],
            2,
            None,
            "3 embeddings for 2",
            id="too-many",
        ),
        pytest.param(
            [item(0, vec(0)), item(2, vec(2))], 2, None, "index 2", id="index-out-of-range"
        ),
        pytest.param([item(-1, vec(0)), item(1, vec(1))], 2, None, "index -1", id="negative-index"),
        pytest.param(
            [item(1, vec(0)), item(1, vec(1))], 2, None, "more than once", id="duplicate-index"
        ),
        pytest.param([item("0", vec(0))], 1, None, "index '0'", id="string-index"),
        pytest.param([item(0.0, vec(0))], 1, None, "index 0.0", id="float-index"),
        pytest.param([item(True, vec(0))], 1, None, "index True", id="bool-index"),
        pytest.param([item(None, vec(0))], 1, None, "index None", id="missing-index"),
        pytest.param([{"embedding": vec(0)}], 1, None, "index None", id="no-index-key"),
        pytest.param(
            [item(0, vec(0, 4)), item(1, vec(1, 5))],
            2,
            None,
            "5 dimensions, expected 4",
            id="inconsistent-dim",
        ),
        pytest.param(
            [item(0, vec(0, 767))], 1, 768, "767 dimensions, expected 768", id="767-for-bge-base"
        ),
        pytest.param(
            [item(0, vec(0, 1024))], 1, 768, "1024 dimensions, expected 768", id="1024-for-bge-base"
        ),
        pytest.param([item(0, [])], 1, None, "empty", id="empty-vector"),
        pytest.param([item(0, None)], 1, None, "not a list", id="null-embedding"),
        pytest.param([item(0, [0.1, "x", 0.3])], 1, None, "not a number", id="string-in-vector"),
        pytest.param([item(0, [0.1, None, 0.3])], 1, None, "not a number", id="null-in-vector"),
        pytest.param([item(0, [[0.1], [0.2]])], 1, None, "not a number", id="nested-vector"),
        pytest.param([item(0, [1, "2", 3])], 1, None, "not a number", id="string-in-int-vector"),
        pytest.param([item(0, [True, False])], 1, None, "not a number", id="bool-vector"),
        pytest.param([item(0, "!!!not base64!!!")], 1, None, "base64", id="bad-base64"),
        pytest.param(
            [item(0, base64.b64encode(b"12345").decode())],
            1,
            None,
            "float32",
            id="base64-odd-bytes",
        ),
        pytest.param(["not an object"], 1, None, "not an object", id="item-not-object"),
    ],
)
def test_each_validation_failure_is_a_wire_error(
    items: list[Any], count: int, dim: int | None, words: str
) -> None:
    with pytest.raises(WireError, match=None) as info:
        parse_embeddings_response(reply(items), count, expected_dim=dim)
    assert words in str(info.value)


_NOT_NUMBERS: list[Any] = [None, "x", "", True, False, [0.5], [], {"a": 1}, "1.5"]


def _spellings(doc: dict[str, Any]) -> list[bytes]:
    """One reply as different servers write it: compact, indented, escaped slashes, \\u escapes."""
    compact = orjson.dumps(doc)
    return [
        compact,
        json.dumps(doc, indent=2).encode(),
        compact.replace(b"/", b"\\/"),
        json.dumps({**doc, "model": "bge-\u00e9"}, ensure_ascii=True).encode(),
    ]


def test_a_non_number_anywhere_in_any_vector_is_named_however_the_reply_is_spelled() -> None:
    rng = random.Random(11)
    for _ in range(60):
        count, dim = rng.randint(1, 6), rng.randint(1, 9)
        vectors = [[rng.uniform(-1, 1) for _ in range(dim)] for _ in range(count)]
        bad_index, bad_pos = rng.randrange(count), rng.randrange(dim)
        bad = rng.choice(_NOT_NUMBERS)
        vectors[bad_index][bad_pos] = bad
        doc = {"object": "list", "data": [item(i, v) for i, v in enumerate(vectors)]}
        doc["model"] = "BAAI/bge-base-en-v1.5"
        for content in _spellings(doc):
            with pytest.raises(WireError) as info:
                parse_embeddings_response(content, count)
            assert f"index {bad_index} " in str(info.value), (bad, content[:200])


def test_numbers_pass_however_the_reply_is_spelled() -> None:
    rng = random.Random(12)
    vectors = [[rng.uniform(-1, 1) for _ in range(8)] for _ in range(5)]
    vectors[1] = [0, 1, 0, 2, 0, 0, 0, 3]  # whole numbers only: made floats
    vectors[2][0] = 0  # a leading whole number: the vector is made floats
    vectors[3] = [1e-7, -2.5e3, 1e30, -0.0, 5e-324, 0.1, 2.0, -1]
    doc = {"object": "list", "data": [item(i, v) for i, v in enumerate(vectors)]}
    doc["model"] = "BAAI/bge-base-en-v1.5"
    doc["usage"] = {"prompt_tokens": 7, "total_tokens": 7}
    for content in _spellings(doc):
        parsed = parse_embeddings_response(content, 5)
        assert parsed.vectors == [[float(x) for x in v] for v in vectors]
        assert all(type(x) is float for x in parsed.vectors[1] + parsed.vectors[2])


def test_the_one_pass_check_clears_ordinary_replies_and_refers_the_rest() -> None:
    from aiml_bge_integrations._wire import _vectors_hold_only_numbers

    def clears(doc: dict[str, Any], content: bytes) -> bool:
        return _vectors_hold_only_numbers(content, doc, doc["data"])

    doc = {"object": "list", "data": [item(0, [0.5, -1.0]), item(1, [2, 3e-5])], "model": "a/b"}
    compact, indented, slashes, escaped = _spellings(doc)
    assert clears(doc, compact) and clears(doc, indented) and clears(doc, slashes)
    assert not clears({**doc, "model": "bge-\u00e9"}, escaped)  # checked item by item instead
    for bad in _NOT_NUMBERS:
        spoiled = {**doc, "data": [item(0, [0.5, bad]), item(1, [2, 3e-5])]}
        assert not clears(spoiled, orjson.dumps(spoiled)), bad


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"data": [', "not valid JSON"),
        (b"<html>502 Bad Gateway</html>", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"object": "list"}', "no 'data' list"),
        (b'{"data": {"0": [0.1]}}', "no 'data' list"),
    ],
)
def test_malformed_replies_are_wire_errors(content: bytes, words: str) -> None:
    with pytest.raises(WireError) as info:
        parse_embeddings_response(content, 1)
    assert words in str(info.value)


# -- usage ----------------------------------------------------------------------------------


def test_usage_from_the_documented_body() -> None:
    content = reply(
        [item(0, vec(0))],
        usage={"prompt_tokens": 7, "total_tokens": 7, "completion_tokens": 0},
        meta={"usage": {"credits_used": 3}},
    )
    usage = parse_embeddings_response(content, 1).usage
    assert (usage.prompt_tokens, usage.total_tokens, usage.credits) == (7, 7, 3.0)


def test_credits_and_usd_from_headers_when_the_body_has_none() -> None:
    content = reply([item(0, vec(0))], usage={"prompt_tokens": 9})
    headers = {"x-aimlapi-credits-used": "5", "x-aimlapi-usd-spent": "0.0025"}
    usage = parse_embeddings_response(content, 1, headers=headers).usage
    assert (usage.prompt_tokens, usage.total_tokens, usage.credits, usage.usd) == (
        9,
        9,
        5.0,
        0.0025,
    )


def test_missing_or_garbage_usage_counts_zero() -> None:
    content = reply([item(0, vec(0))], usage={"prompt_tokens": "many"}, meta=None)
    usage = parse_embeddings_response(content, 1, headers={"x-aimlapi-credits-used": "n/a"}).usage
    assert (usage.prompt_tokens, usage.total_tokens, usage.credits, usage.usd) == (0, 0, 0.0, 0.0)


# -- error bodies ---------------------------------------------------------------------------


def test_error_body_aiml_documented_shape() -> None:
    body = {
        "message": "Body validation error! Expected string, received number",
        "path": "/v1/embeddings",
        "requestId": "req-123",
        "statusCode": 400,
        "timestamp": "2026-01-01T00:00:00Z",
    }
    info = parse_error_body(orjson.dumps(body))
    assert info.message == body["message"]
    assert info.request_id == "req-123"


def test_error_body_problem_json_shape() -> None:
    body = {
        "title": "Forbidden",
        "status": 403,
        "message": "You have run out of credits",
        "instance": "/v1/embeddings",
        "requestId": "req-9",
        "timestamp": "2026-01-01T00:00:00Z",
        "error": {"name": "InsufficientCredits", "message": "Out of credits"},
    }
    info = parse_error_body(orjson.dumps(body))
    assert "run out of credits" in info.message
    assert info.request_id == "req-9"
    assert info.kind == "InsufficientCredits"


def test_error_body_tei_shape() -> None:
    body = {"error": "batch size 64 > maximum allowed batch size 32", "error_type": "Validation"}
    info = parse_error_body(orjson.dumps(body))
    assert info.message == body["error"]
    assert info.kind == "Validation"


def test_error_body_openai_shape() -> None:
    body = {
        "error": {
            "message": "Incorrect API key provided",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }
    info = parse_error_body(orjson.dumps(body))
    assert info.message == "Incorrect API key provided"
    assert info.kind == "invalid_request_error"


def test_error_body_vllm_shape() -> None:
    body = {
        "object": "error",
        "message": "The model `x` does not exist.",
        "type": "NotFoundError",
        "param": None,
        "code": 404,
    }
    info = parse_error_body(orjson.dumps(body))
    assert info.message == "The model `x` does not exist."
    assert info.kind == "NotFoundError"


def test_error_body_fastapi_detail_list() -> None:
    body = {"detail": [{"loc": ["body", "input"], "msg": "field required"}]}
    assert parse_error_body(orjson.dumps(body)).message == "field required"


def test_error_body_request_id_header_wins_over_body() -> None:
    info = parse_error_body(
        b'{"message": "x", "requestId": "body-id"}', {"x-inference-id": "hdr-id"}
    )
    assert info.request_id == "hdr-id"


@pytest.mark.parametrize("content", [b"<html>Bad Gateway</html>", b"", b"null", b"[]"])
def test_error_body_that_is_not_an_object_gives_an_excerpt(content: bytes) -> None:
    info = parse_error_body(content)
    assert info.message
    if content.startswith(b"<html>"):
        assert "Bad Gateway" in info.message


# -- message reading ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "index"),
    [
        ("input[3] is too long", 3),
        ("item 5 has 9000 characters", 5),
        ("invalid input 12", 12),
        ("nothing", None),
    ],
)
def test_item_index_in_message(message: str, index: int | None) -> None:
    assert item_index_in_message(message) == index


def test_size_refusals_are_recognised() -> None:
    assert says_batch_too_large(413, "whatever")
    assert says_batch_too_large(400, "batch size 64 > maximum allowed batch size 32")
    assert batch_limit_in_message("batch size 64 > maximum allowed batch size 32") == 32
    assert batch_limit_in_message("too many inputs: 40 > maximum allowed batch size 16") == 16
    assert batch_limit_in_message("at most 8 inputs per request") == 8
    # Sizes in other units are not item limits.
    assert batch_limit_in_message("request body too large: 5000 bytes > maximum 4096 bytes") is None
    assert batch_limit_in_message("text too long: at most 100 characters") is None
    assert batch_limit_in_message("the limit is 512 tokens") is None
    assert not says_batch_too_large(400, "Body validation error! Expected string, received number")
    assert not says_batch_too_large(401, "payload too large")


AIML_BODY_ERROR = (
    "Body validation error! input must not be empty. Expected string (minLength 1) | "
    "array<string> (minItems 1), Received []"
)


def test_length_refusals_are_recognised() -> None:
    assert says_input_too_long("input is too long: 9000 characters")
    assert says_input_too_long("input[2] has 600 tokens; at most 512 are allowed")
    assert says_input_too_long(
        "Input validation error: `inputs` must have less than 512 tokens. Given: 600"
    )
    assert says_input_too_long("Input length exceeds the model's context length")
    assert not says_input_too_long("Body validation error! Expected string, received number")
    # "minLength" in a schema hint is not an input's length.
    assert not says_input_too_long(AIML_BODY_ERROR)
    assert not says_batch_too_large(400, AIML_BODY_ERROR)
    assert item_index_in_message(AIML_BODY_ERROR) is None


def test_fast_base64_decoder_agrees_with_the_standard_library() -> None:
    import binascii
    import random

    from aiml_bge_integrations import _wire

    rng = random.Random(3)
    for n in (0, 4, 3072, 3076):
        raw = bytes(rng.randrange(256) for _ in range(n))
        text = base64.b64encode(raw).decode()
        assert _wire._b64decode(text, validate=True) == base64.b64decode(text, validate=True)
    # Each is refused (binascii.Error is a ValueError), as a malformed reply must be; the fast
    # decoder is stricter than the standard library about surplus padding ("AAAA====").
    for bad in ("!!!!", "AAA", "AAAA\n", "AA=A", "AAAA====", "ÄÄÄÄ"):
        with pytest.raises(ValueError):
            _wire._b64decode(bad, validate=True)
    assert issubclass(binascii.Error, ValueError)


# -- every vector finite and within float32 ------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_base64_nan_or_infinity_is_refused(value: float) -> None:
    import struct

    vector = base64.b64encode(struct.pack("<3f", 0.5, value, 1.0)).decode()
    content = orjson.dumps({"data": [{"index": 0, "embedding": vector}]})
    with pytest.raises(WireError, match="finite float32"):
        parse_embeddings_response(content, 1)


@pytest.mark.parametrize(
    "text", ["1e39", "-3.5e38", "1E+39", "340282366920938463463374607431768211456000"]
)
def test_a_json_number_beyond_float32_is_refused(text: str) -> None:
    content = b'{"data": [{"index": 0, "embedding": [0.25, ' + text.encode() + b"]}]}"
    with pytest.raises(WireError, match="finite float32"):
        parse_embeddings_response(content, 1)


def test_the_largest_float32_values_pass() -> None:
    top = 3.4028234663852886e38
    content = orjson.dumps({"data": [{"index": 0, "embedding": [top, -top, top]}]})
    assert parse_embeddings_response(content, 1).vectors == [[top, -top, top]]
