"""The clients' settings are typed keyword parameters: mypy flags a misspelled or mistyped one.

Runs mypy (``mypy.api.run``) on a small file that uses the clients as a user would; the
package is read from the same sources the tests import.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import aiml_bge_integrations

mypy_api = pytest.importorskip("mypy.api")

USER_CODE = """\
from aiml_bge_integrations import AsyncEmbeddingsClient, EmbeddingsClient

good = EmbeddingsClient(api_key="k", batch_size=3, long_text="error", timeout=5)
agood = AsyncEmbeddingsClient(model="BAAI/bge-small-en-v1.5", deadline=None)
EmbeddingsClient(bach_size=3)
AsyncEmbeddingsClient(timeout="5")
EmbeddingsClient(long_text="chop")
"""


def test_mypy_names_a_misspelled_or_mistyped_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = tmp_path / "user_code.py"
    user.write_text(USER_CODE, encoding="utf-8")
    monkeypatch.setenv("MYPYPATH", str(Path(aiml_bge_integrations.__file__).parents[1]))
    monkeypatch.chdir(tmp_path)  # no project configuration: mypy's defaults, as a user has
    out, err, status = mypy_api.run(
        [
            str(user),
            "--follow-imports=silent",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--no-error-summary",
            "--show-error-codes",
        ]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    by_line = {int(m.group(1)): line for line in errors if (m := re.search(r":(\d+): error", line))}
    assert status == 1, (out, err)
    assert sorted(by_line) == [5, 6, 7], out  # the first two calls are fine
    assert 'Unexpected keyword argument "bach_size"' in by_line[5]
    assert '"timeout"' in by_line[6] and '"float"' in by_line[6]
    assert '"long_text"' in by_line[7] and "'chop'" in by_line[7]
    assert os.environ.get("AIMLAPI_API_KEY") is None  # nothing here needed a key
