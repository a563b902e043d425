"""Shared fixtures: real data comes from XBENCH_DATA; tests that need it skip with a reason."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _data_root() -> Path | None:
    raw = os.environ.get("XBENCH_DATA")
    if not raw:
        return None
    p = Path(raw)
    return p if p.is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if root is None:
        pytest.skip("real benchmark data not available: set XBENCH_DATA to the shared data folder (e.g. ../shared/data)")
    return root
