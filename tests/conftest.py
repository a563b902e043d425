"""Shared fixtures: real data comes from XBENCH_DATA; tests that need it skip with a reason."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Under pytest-xdist every worker is one process per core: a worker (and the xbench commands it starts)
# with torch's default of one thread per core would put two threads on each core and slow both.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


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
