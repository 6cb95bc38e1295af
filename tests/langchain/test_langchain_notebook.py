"""``notebooks/langchain_quickstart.ipynb`` runs top to bottom and shows no key.

The notebook is executed in a temporary copy with AIMLAPI_* unset, so it starts its own local
server (as it tells the reader). A cell appended to the copy writes the key that server
handed out to a file, never to the output, and no output of the notebook may contain it.
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

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "langchain_quickstart.ipynb"

pytestmark = pytest.mark.slow


def _texts(outputs: list[Any]) -> list[str]:
    found = []
    for out in outputs:
        if "text" in out:
            found.append(out["text"])
        for mime, value in out.get("data", {}).items():
            if mime.startswith("text/"):
                found.append(value if isinstance(value, str) else "".join(value))
        if out.get("output_type") == "error":
            found.append("\n".join(out.get("traceback", [])))
    return found


def _looks_like_a_key(text: str) -> list[str]:
    # Long runs of key material: letters and digits mixed, 24+ characters, or sk-... tokens.
    candidates = re.findall(r"(?:sk-[A-Za-z0-9_\-]{8,})|[A-Za-z0-9_\-]{24,}", text)
    return [c for c in candidates if re.search(r"\d", c) and re.search(r"[A-Za-z]", c)]


def test_notebook_runs_top_to_bottom_without_showing_a_key(tmp_path: Path) -> None:
    copy = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    nb = nbformat.read(copy, as_version=4)
    original_cells = len(nb.cells)
    key_file = tmp_path / "key.json"
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import json as _json, pathlib as _pathlib\n"
            f"_pathlib.Path({str(key_file)!r}).write_text(_json.dumps("
            "local_server.api_key if local_server is not None else None))"
        )
    )

    NotebookClient(
        nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    key = json.loads(key_file.read_text())
    assert key, "the notebook should have started the local server (AIMLAPI_API_KEY is unset)"
    cells = nb.cells[:original_cells]
    outputs = [out for cell in cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    texts = _texts(outputs)
    joined = "\n".join(texts)
    assert key not in joined
    assert _looks_like_a_key(joined) == []
    # It said it started the local server, retrieved, drew the heatmap and reported usage.
    assert "started the local server" in joined
    assert "-> [4] Espresso" in joined
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert re.search(r"requests=\d+ retries=0", joined)


def test_committed_notebook_has_outputs_and_no_key() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code)
    outputs = [out for cell in code for out in cell.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert _looks_like_a_key("\n".join(_texts(outputs))) == []
