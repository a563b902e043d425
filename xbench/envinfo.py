"""What a result needs to be reproduced: code version, libraries, device."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from xbench import __version__

LIBRARIES = ("torch", "transformers", "tokenizers", "accelerate", "datasets", "numpy", "seqeval", "udtools", "conllu")
REPO_ROOT = Path(__file__).resolve().parent.parent


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    def _git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            versions[lib] = None
    return versions


def cpu_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"


def device_description() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        return {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": n,
                "bf16": torch.cuda.is_bf16_supported()}
    return {"type": "cpu", "name": cpu_description(), "count": 1, "threads": torch.get_num_threads(), "bf16": False}


def environment() -> dict[str, Any]:
    return {
        "xbench_version": __version__,
        "git": git_state(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": library_versions(),
        "device": device_description(),
    }
