"""The stream tests run on both write paths (tests/support/write_paths.py)."""

from __future__ import annotations

from tests.support.write_paths import server_on_each_write_path

__all__ = ["server_on_each_write_path"]
