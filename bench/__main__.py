"""``uv run python -m bench``: measure the default service against its ceiling."""

from __future__ import annotations

import sys

from bench.harness import main

if __name__ == "__main__":
    sys.exit(main())
