"""Helpers for the command-line tests: run ``aiml-bge`` in-process or as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "aiml_bge_integrations.cli"]
"""The command as a process (the same ``main`` the ``aiml-bge`` script runs)."""


@dataclass
class Result:
    """Exit code and output of one in-process run."""

    code: int
    out: str
    err: str


def child_env(server: Any | None = None, **extra: str) -> dict[str, str]:
    """This environment without any AIMLAPI_* variable, plus the server's key and URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMLAPI_")}
    env["TOKENIZERS_PARALLELISM"] = "false"
    if server is not None:
        env["AIMLAPI_API_KEY"] = server.api_key
        env["AIMLAPI_BASE_URL"] = server.base_url
    env.update(extra)
    return env


def run_process(
    args: Sequence[str | Path], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``aiml-bge ARGS...`` as a child process and wait for it."""
    return subprocess.run(
        [*CLI, *(str(a) for a in args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    """Write ``lines`` as a UTF-8 text file, one per line."""
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def error_lines(err: str) -> list[str]:
    """The ``aiml-bge: error:`` lines of stderr."""
    return [line for line in err.splitlines() if line.startswith("aiml-bge: error:")]
