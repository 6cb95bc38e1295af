"""Fixtures for the command-line tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

# The helpers module sits beside this file; pytest's importlib mode does not put it on the path.
sys.path.insert(0, str(Path(__file__).parent))

from cli_helpers import Result

from aiml_bge_integrations.cli import main


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run ``aiml-bge ARGS...`` in this process; returns its exit code, stdout and stderr."""

    def run(*args: object) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
