"""Client CPU per 1,000 768-d vectors spent reading replies, isolated from the network.

Replies are built once exactly as the local server builds them (its stand-in vectors as
float32, the AI/ML dialect's body, JSON floats at float32 precision or base64 float32), for a
batch of 128 texts. Then each parser reads the same bytes many times, in interleaved rounds,
and the process CPU it used is divided by the vectors it produced:

- ``_wire.parse_embeddings_response``: what this project's clients run on every 200 reply;
- ``orjson.loads`` alone: the floor (no checks, no placement by index, base64 not decoded);
- ``json.loads``: the standard library;
- the ``openai`` SDK: ``httpx2.Response.json()`` (stdlib json), ``construct_type`` into
  ``CreateEmbeddingResponse`` and its embeddings post-parser (numpy base64 decode), exactly
  the calls ``client.embeddings.create`` makes (read from the installed SDK);
- langchain-openai's extra ``model_dump()`` on top of the SDK's result.

A second group times whole client calls over an in-process transport (no socket, no server):
request building, headers, response handling and parsing, per 1,000 vectors.

Run alone: ``python benchmarks/bench_parse.py [--json]``; ``bench_throughput.py`` runs it
in a fresh process and folds the figures into its report.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import API_KEY, MODEL, make_passages, markdown_table

__all__ = ["build_bodies", "main", "run"]

BATCH = 128
DIM = 768


def build_bodies(texts: list[str]) -> dict[str, bytes]:
    """The float and base64 200-replies the local server sends for ``texts``, byte for byte.

    The same steps as the server's app: stand-in vectors cast to little-endian float32, the
    AI/ML dialect's items and body, ``orjson.dumps`` with ``OPT_SERIALIZE_NUMPY`` (so JSON
    floats are printed at float32 precision, as real float32 models reply).
    """
    import orjson

    from aiml_bge_integrations.server.backend import HashingEmbedder
    from aiml_bge_integrations.server.dialects import get_dialect

    dialect = get_dialect("aiml")
    vectors = HashingEmbedder(DIM).embed(texts).astype("<f4")
    tokens = 60 * len(texts)

    def body(items: list[Any]) -> bytes:
        data = [dialect.item(i, e) for i, e in enumerate(items)]
        doc = dialect.success_body(MODEL, data, tokens, 1)
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)

    as_float = body(list(vectors))
    as_b64 = body([base64.b64encode(row.tobytes()).decode("ascii") for row in vectors])
    first = orjson.loads(as_float)["data"][0]["embedding"]
    assert len(first) == DIM and all(type(x) is float for x in first)
    return {"float": as_float, "base64": as_b64}


def _timed_rounds(
    entries: list[tuple[str, str, Callable[[], int]]],
    min_vectors: int,
    rounds: int,
    budget: float = 3.0,
) -> list[float]:
    """Best CPU seconds per 1,000 vectors for each entry, over interleaved rounds.

    Every round times each entry in turn (until it has made ``min_vectors`` or spent
    ``budget / rounds`` CPU seconds), so a drift in the machine's speed touches all entries
    alike; an entry's figure is its best round. A very slow entry (the SDK building pydantic
    objects float by float) stops after ``budget`` CPU seconds in all.
    """
    for _, _, fn in entries:
        fn()  # warm caches and lazy imports outside the timing
    best = [float("inf")] * len(entries)
    spent = [0.0] * len(entries)
    for _ in range(rounds):
        for i, (_, _, fn) in enumerate(entries):
            if spent[i] >= budget:
                continue
            gc.collect()
            made = 0
            elapsed = 0.0
            start = time.process_time()
            while made < min_vectors and elapsed < budget / rounds:
                made += fn()
                elapsed = time.process_time() - start
            best[i] = min(best[i], elapsed / made * 1000)
            spent[i] += elapsed
    return best


def _parsers(bodies: dict[str, bytes]) -> list[tuple[str, str, Callable[[], int]]]:
    """(name, body encoding, callable returning the number of vectors it produced)."""
    import httpx2
    import openai
    import orjson
    from openai._types import omit
    from openai.lib._parsing._embeddings import parse_embedding_response
    from openai.types import CreateEmbeddingResponse

    from aiml_bge_integrations._wire import parse_embeddings_response

    sdk = openai.OpenAI(api_key=API_KEY, base_url="http://127.0.0.1:9/v1")
    headers = {"content-type": "application/json"}

    def ours(enc: str) -> Callable[[], int]:
        body = bodies[enc]

        def run() -> int:
            return len(parse_embeddings_response(body, BATCH, expected_dim=DIM).vectors)

        return run

    def floor(enc: str) -> Callable[[], int]:
        body = bodies[enc]

        def run() -> int:
            return len(orjson.loads(body)["data"])

        return run

    def stdlib(enc: str) -> Callable[[], int]:
        body = bodies[enc]

        def run() -> int:
            return len(json.loads(body)["data"])

        return run

    def sdk_objects(enc: str) -> Callable[[], CreateEmbeddingResponse]:
        body = bodies[enc]
        # The SDK asks for base64 unless the caller names a format; with "float" named, its
        # post-parser leaves the floats alone.
        asked: Any = omit if enc == "base64" else "float"

        def run() -> CreateEmbeddingResponse:
            response = httpx2.Response(200, content=body, headers=headers)
            obj = sdk._process_response_data(
                data=response.json(), cast_to=CreateEmbeddingResponse, response=response
            )
            return parse_embedding_response(obj, encoding_format=asked)

        return run

    def sdk_vectors(enc: str) -> Callable[[], int]:
        make = sdk_objects(enc)

        def run() -> int:
            vectors = [d.embedding for d in make().data]  # llama-index, a plain SDK loop
            return len(vectors)

        return run

    def langchain(enc: str) -> Callable[[], int]:
        make = sdk_objects(enc)

        def run() -> int:
            dumped = make().model_dump()  # langchain-openai: response.model_dump()
            return len([r["embedding"] for r in dumped["data"]])

        return run

    return [
        ("this project: _wire.parse_embeddings_response", "float", ours("float")),
        ("this project: _wire.parse_embeddings_response", "base64", ours("base64")),
        ("orjson.loads alone (floor)", "float", floor("float")),
        ("orjson.loads alone (floor, base64 not decoded)", "base64", floor("base64")),
        ("json.loads", "float", stdlib("float")),
        ("openai SDK (encoding_format='float')", "float", sdk_vectors("float")),
        ("openai SDK (default: base64)", "base64", sdk_vectors("base64")),
        ("langchain-openai: SDK + model_dump (default: base64)", "base64", langchain("base64")),
    ]


def _full_calls(
    texts: list[str], bodies: dict[str, bytes]
) -> list[tuple[str, str, Callable[[], int]]]:
    """Whole client calls over an in-process transport, one 128-text batch per call."""
    import httpx
    import httpx2
    import openai

    from aiml_bge_integrations import EmbeddingsClient

    url = "http://127.0.0.1:9/v1"
    headers = {"content-type": "application/json"}

    def reply_for(request_body: bytes) -> bytes:
        asked = json.loads(request_body).get("encoding_format") or "float"
        return bodies[asked]

    def ours_handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=reply_for(request.content), headers=headers)

    def sdk_handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=reply_for(request.read()), headers=headers)

    rows: list[tuple[str, str, Callable[[], int]]] = []
    for enc in ("float", "base64"):
        client = EmbeddingsClient(
            api_key=API_KEY,
            base_url=url,
            model=MODEL,
            batch_size=BATCH,
            encoding_format=None if enc == "float" else "base64",
            http_client=httpx.Client(transport=httpx.MockTransport(ours_handler)),
        )
        rows.append(
            (
                "this project: EmbeddingsClient.embed_documents",
                enc,
                lambda c=client: len(c.embed_documents(texts)),  # type: ignore[misc]
            )
        )
    sdk = openai.OpenAI(
        api_key=API_KEY,
        base_url=url,
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(sdk_handler)),
    )
    rows.append(
        (
            "openai SDK: embeddings.create (default: base64)",
            "base64",
            lambda: len(
                [d.embedding for d in sdk.embeddings.create(input=texts, model=MODEL).data]
            ),
        )
    )
    rows.append(
        (
            "openai SDK: embeddings.create (encoding_format='float')",
            "float",
            lambda: len(
                [
                    d.embedding
                    for d in sdk.embeddings.create(
                        input=texts, model=MODEL, encoding_format="float"
                    ).data
                ]
            ),
        )
    )
    return rows


def run(vectors_per_round: int = 5120, rounds: int = 5, seed: int = 1234) -> dict[str, Any]:
    """Time every parser and client call; returns rows and the ratios the targets use."""
    texts = make_passages(BATCH, seed)
    bodies = build_bodies(texts)
    rows: list[dict[str, Any]] = []
    for group, entries in (
        ("parse", _parsers(bodies)),
        ("call", _full_calls(texts, bodies)),
    ):
        for (name, enc, _), per_1k in zip(
            entries, _timed_rounds(entries, vectors_per_round, rounds), strict=True
        ):
            rows.append({"group": group, "name": name, "body": enc, "cpu_ms_per_1k": per_1k * 1000})

    def find(name: str, enc: str) -> float:
        return float(
            next(r["cpu_ms_per_1k"] for r in rows if r["name"] == name and r["body"] == enc)
        )

    ours_float = find("this project: _wire.parse_embeddings_response", "float")
    ours_b64 = find("this project: _wire.parse_embeddings_response", "base64")
    floor_float = find("orjson.loads alone (floor)", "float")
    sdk_b64 = find("openai SDK (default: base64)", "base64")
    sdk_float = find("openai SDK (encoding_format='float')", "float")
    for r in rows:
        r["ratio_to_floor"] = r["cpu_ms_per_1k"] / floor_float
    ratios = {
        "ours_float_vs_orjson_floor": ours_float / floor_float,
        "ours_base64_vs_orjson_floor": ours_b64 / floor_float,
        "ours_float_vs_sdk_default_base64": ours_float / sdk_b64,
        "ours_base64_vs_sdk_default_base64": ours_b64 / sdk_b64,
        "ours_float_vs_sdk_float": ours_float / sdk_float,
        "call_ours_float_vs_sdk_default": find(
            "this project: EmbeddingsClient.embed_documents", "float"
        )
        / find("openai SDK: embeddings.create (default: base64)", "base64"),
        "call_ours_base64_vs_sdk_default": find(
            "this project: EmbeddingsClient.embed_documents", "base64"
        )
        / find("openai SDK: embeddings.create (default: base64)", "base64"),
    }
    return {
        "batch": BATCH,
        "dim": DIM,
        "body_bytes": {k: len(v) for k, v in bodies.items()},
        "vectors_per_round": vectors_per_round,
        "rounds": rounds,
        "rows": rows,
        "ratios": ratios,
    }


def render(result: dict[str, Any]) -> str:
    """The parse figures as a Markdown table."""
    table = markdown_table(
        ["what reads the reply", "body", "CPU ms / 1k vectors", "x orjson floor"],
        [
            (
                ("call: " if r["group"] == "call" else "") + r["name"],
                r["body"],
                f"{r['cpu_ms_per_1k']:.1f}",
                f"{r['ratio_to_floor']:.2f}",
            )
            for r in result["rows"]
        ],
    )
    sizes = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in result["body_bytes"].items())
    return f"{table}\n\nOne reply = {result['batch']} vectors of {result['dim']} ({sizes}); best of {result['rounds']} rounds."


def main(argv: list[str] | None = None) -> int:
    """Command line: print the table, or the JSON with ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--vectors", type=int, default=5120, help="vectors per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (the best counts)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    result = run(args.vectors, args.rounds)
    print(json.dumps(result) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
