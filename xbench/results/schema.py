"""The result-file schema (one JSON per task x protocol x profile x method x model x seed).

Version history (bump SCHEMA_VERSION on any change a reader could notice; `load_result` keeps
reading every older version, MTEB style):
  1: first version. Top-level keys: schema_version, xbench_version, run_id, created, task, method,
     model, run, scores, selection, compute, flags, config, config_hash, environment.
     Scores are fractions in [0, 1]; leaderboards show them x100.
  2: method.compared_with (the matched baseline a transfer method's gain is measured against) and
     an optional top-level `report` (method-specific quantities, e.g. meta-pretraining's transfer
     gap and retrieval accuracy), and run.variant (the task options that change what is evaluated,
     e.g. "treebank=pud"; "" for none). Version-1 files read as compared_with "scratch" for
     transfer methods, no report and no variant.
The full field reference is in README.md ("Result files").
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from xbench.errors import DataFormatError

SCHEMA_VERSION = 2
REQUIRED = ("schema_version", "task", "method", "model", "run", "scores", "compute", "config_hash", "environment")


def model_slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", model.strip("/")) or "model"


def result_path(root: Path, task: str, protocol: str, profile: str, method: str, model: str, seed: int,
                variant: str = "") -> Path:
    """`<task>/<protocol>[+<variant>]/<profile>/<method>/<model>/seed-<n>.json`."""
    proto = f"{protocol}+{re.sub(r'[^A-Za-z0-9._,=;-]+', '-', variant)}" if variant else protocol
    return Path(root) / task / proto / profile / method / model_slug(model) / f"seed-{seed}.json"


def protocol_label(result: dict[str, Any]) -> str:
    """The protocol a result is grouped under: the protocol, plus its task-option variant if any."""
    run = result["run"]
    return f"{run['protocol']} ({run['variant']})" if run.get("variant") else run["protocol"]


def load_result(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"not valid JSON ({exc.msg})", line=exc.lineno) from None
    if not isinstance(data, dict):
        raise DataFormatError(path, "expected a JSON object at the top level")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise DataFormatError(path, f"missing key(s) {', '.join(missing)}", expected="an xbench result file")
    version = data["schema_version"]
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise DataFormatError(path, f"schema_version {version!r} is newer than this xbench reads ({SCHEMA_VERSION}); upgrade xbench",
                              field="schema_version")
    return data


def iter_results(root: Path, task: str | None = None) -> list[dict[str, Any]]:
    root = Path(root)
    pattern = f"{task}/**/seed-*.json" if task else "**/seed-*.json"
    out = []
    for path in sorted(root.glob(pattern)):
        if ".work" in path.parts:
            continue
        r = load_result(path)
        r["_path"] = str(path)
        out.append(r)
    return out
