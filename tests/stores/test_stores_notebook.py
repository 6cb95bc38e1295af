"""``notebooks/persistent_rag.ipynb`` runs top to bottom, offline, and shows no key.

A copy is executed in a temporary directory with AIMLAPI_* unset, so it starts its own local
server. Two cells are added to the copy only: a first one that refuses (and records) every
connection or name lookup outside loopback in the kernel, and a last one that writes the
server's key and those records to a file, never to the output.
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
NOTEBOOK = ROOT / "notebooks" / "persistent_rag.ipynb"
STORES = ("LangChain Chroma", "LangChain FAISS", "LlamaIndex Chroma", "LlamaIndex storage")

pytestmark = pytest.mark.slow

GUARD_CELL = """\
import socket as _socket
_ATTEMPTS = []
_real_connect, _real_getaddrinfo = _socket.socket.connect, _socket.getaddrinfo
def _local(host):
    return str(host) in ("localhost", "::1") or str(host).startswith("127.")
def _connect(self, address):
    if isinstance(address, tuple) and not _local(address[0]):
        _ATTEMPTS.append(f"connect {address!r}")
        raise OSError("network access outside loopback refused")
    return _real_connect(self, address)
def _getaddrinfo(host, *args, **kwargs):
    if host is not None and not _local(host):
        _ATTEMPTS.append(f"getaddrinfo {host!r}")
        raise _socket.gaierror("name lookup refused")
    return _real_getaddrinfo(host, *args, **kwargs)
_socket.socket.connect, _socket.getaddrinfo = _connect, _getaddrinfo
"""


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
    # Long runs of key material (letters and digits mixed, 24+ characters) or sk-... tokens.
    candidates = re.findall(r"(?:sk-[A-Za-z0-9_\-]{8,})|[A-Za-z0-9_\-]{24,}", text)
    return [c for c in candidates if re.search(r"\d", c) and re.search(r"[A-Za-z]", c)]


def _code_outputs(nb: Any) -> list[Any]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def test_notebook_persists_reloads_and_shows_no_key(tmp_path: Path) -> None:
    copy = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    nb = nbformat.read(copy, as_version=4)
    original = len(nb.cells)
    report = tmp_path / "report.json"
    nb.cells.insert(0, nbformat.v4.new_code_cell(GUARD_CELL))
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import json as _json, pathlib as _pathlib\n"
            f"_pathlib.Path({str(report)!r}).write_text(_json.dumps({{"
            "'key': local_server.api_key if local_server is not None else None, "
            "'attempts': _ATTEMPTS}))"
        )
    )

    NotebookClient(
        nb, timeout=90, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    facts = json.loads(report.read_text())
    key = facts["key"]
    assert key, "the notebook should have started the local server (AIMLAPI_API_KEY is unset)"
    assert facts["attempts"] == []
    cells = nb.cells[1 : 1 + original]  # the notebook's own cells, without the two added
    outputs = [out for cell in cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    joined = "\n".join(_texts(outputs))
    assert key not in joined
    assert _looks_like_a_key(joined) == []
    assert "started the local server" in joined
    for store in STORES:
        assert re.search(rf"{store}\s+expected passage first for 10/10 queries", joined), store
    assert "stored == embed_documents(passage): True" in joined
    assert "stored == embed_query(passage):     False" in joined
    assert "passages embedded again: 0" in joined
    assert not (tmp_path / "persistent_rag_data").exists()  # it cleaned up after itself


def test_committed_notebook_has_outputs_and_no_key() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    unrun = [cell.source.splitlines()[0] for cell in code if not cell.outputs]
    assert unrun == [
        '# %pip install -U "aiml-bge-integrations[langchain,llama-index]" '
        "langchain-chroma langchain-community faiss-cpu "
        "llama-index-vector-stores-chroma"
    ]
    outputs = _code_outputs(nb)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    joined = "\n".join(_texts(outputs))
    assert _looks_like_a_key(joined) == []
    assert "local-" not in joined  # the local server's generated keys start so
    for store in STORES:
        assert re.search(rf"{store}\s+expected passage first for 10/10 queries", joined), store
