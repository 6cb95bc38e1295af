"""notebooks/llamaindex_quickstart.ipynb runs top to bottom and shows no key.

The notebook is executed in a temporary copy with nbclient: once with ``AIMLAPI_API_KEY``
unset (it starts its own local server and must say so), once with the key and base URL of the
test server in the environment (so the exact key can be searched for in every output).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "llamaindex_quickstart.ipynb"

# Keys the local server makes ("local-" + 32 URL-safe characters) and common API key shapes.
KEY_LIKE = re.compile(r"local-[A-Za-z0-9_-]{16,}|\bsk-[A-Za-z0-9_-]{16,}|Bearer\s+\S+")

pytestmark = pytest.mark.slow


def _outputs_text(nb: Any) -> str:
    return "\n".join(
        json.dumps(cell.get("outputs", [])) for cell in nb.cells if cell.cell_type == "code"
    )


def _execute(tmp_path: Path) -> Any:
    copy = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    nb = nbformat.read(copy, as_version=4)
    for cell in nb.cells:  # start from a clean slate: the committed outputs must not count
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(nb, timeout=120, kernel_name="python3").execute(cwd=str(tmp_path))
    return nb


def _assert_ran_clean(nb: Any) -> str:
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code)
    text = _outputs_text(nb)
    assert '"output_type": "error"' not in text
    assert "Traceback" not in text
    assert "10 of 10 questions found their passage first" in text
    assert '"image/png"' in text  # the plot
    assert not KEY_LIKE.search(text), KEY_LIKE.search(text)
    return text


def test_notebook_starts_its_own_server_without_a_key(tmp_path: Path) -> None:
    nb = _execute(tmp_path)
    text = _assert_ran_clean(nb)
    assert "AIMLAPI_API_KEY is not set: started the local stand-in server" in text
    assert "local server stopped" in text


def test_notebook_with_a_key_in_the_environment_never_shows_it(
    tmp_path: Path, server_env: Any
) -> None:
    nb = _execute(tmp_path)
    text = _assert_ran_clean(nb)
    assert "AIMLAPI_API_KEY is set" in text
    assert server_env.api_key not in text
    assert server_env.api_key not in json.dumps(nb)
    assert server_env.stats.requests > 0  # it really used the server from the environment


def test_committed_notebook_is_executed_and_keyless() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    text = _assert_ran_clean(nb)
    assert "AIMLAPI_API_KEY is not set" in text
