"""``python -m aiml_bge_integrations.server [options]``: the same as ``aiml-bge serve``."""

from __future__ import annotations

import sys

from .runner import serve_main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(serve_main())
