"""Helpers of the vector-store tests (imported by name): fresh processes and distance functions."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from aiml_bge_integrations._settings import API_KEY_ENV, BASE_URL_ENV, MODEL_ENV

__all__ = ["CHILD", "SCORES", "child_env", "cosine", "finish_child", "sq_l2", "start_child"]

CHILD = Path(__file__).with_name("store_child.py")
"""The script that builds or reloads the stores in a process of its own."""

Vector = list[float]


def sq_l2(a: Vector, b: Vector) -> float:
    """Squared Euclidean distance: what Chroma's default ``l2`` space and FAISS ``IndexFlatL2`` report."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(d @ d)


def cosine(a: Vector, b: Vector) -> float:
    """Cosine similarity: what LlamaIndex's default ``SimpleVectorStore`` reports."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


SCORES: dict[tuple[str, str], Callable[[Vector, Vector], float]] = {
    ("langchain", "chroma"): sq_l2,
    ("langchain", "faiss"): sq_l2,
    # llama-index-vector-stores-chroma turns Chroma's distance into exp(-distance).
    ("llama_index", "chroma"): lambda q, d: math.exp(-sq_l2(q, d)),
    ("llama_index", "storage"): cosine,
}
"""How each store scores a query vector against a stored vector."""


def child_env(server: Any, home: Path) -> dict[str, str]:
    """The environment of a child: the server's URL and key, and a HOME of its own.

    With ``HOME`` (and the cache directories) inside the test's tmp dir, anything a store
    would download or cache (Chroma's default ONNX model lives in ``~/.cache/chroma``) lands
    where the test can see it.
    """
    env = {k: v for k, v in os.environ.items() if k not in (API_KEY_ENV, BASE_URL_ENV, MODEL_ENV)}
    env.update(
        {
            API_KEY_ENV: server.api_key,
            BASE_URL_ENV: server.base_url,
            "HOME": str(home),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "HF_HOME": str(home / ".cache" / "huggingface"),
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    return env


def start_child(framework: str, root: Path, server: Any) -> subprocess.Popen[str]:
    """Start ``store_child.py`` for ``framework`` on the stores under ``root``, in a fresh interpreter."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, str(CHILD), framework, str(root)],
        env=child_env(server, home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_child(proc: subprocess.Popen[str], server: Any, timeout: float = 180) -> dict[str, Any]:
    """Wait for a child and return its report; its output must not contain the key."""
    stdout, stderr = proc.communicate(timeout=timeout)
    output = stdout + stderr
    assert proc.returncode == 0, f"{proc.args} failed:\n{output[-4000:]}"
    assert server.api_key not in output, "the API key appeared in a child's output"
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no RESULT line from {proc.args}:\n{output[-2000:]}"
    report: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return report
