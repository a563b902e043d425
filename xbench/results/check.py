"""Regression check against a stored reference (`baselines/*.json`).

An entry regresses when |mean_now - mean_ref| > max(floor, k * std_ref). The floor absorbs the
run-to-run noise of deterministic CPU runs on different hardware (BLAS order), k * std the seed
variance where a reference has several seeds. Both numbers are stored in the reference file so a
review of `xbench baseline update` shows them. Scores are fractions: floor 0.01 is one point.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbench import __version__
from xbench.errors import DataFormatError
from xbench.results.aggregate import aggregate

DEFAULT_FLOOR = 0.01
DEFAULT_K = 2.0
REFERENCE_SCHEMA = "xbench-reference/1"


def _entries(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for key, row in sorted(aggregate(results).items()):
        task, protocol, profile, method, model = key
        base = {"task": task, "protocol": protocol, "profile": profile, "method": method, "model": model,
                "metric": row.metric}
        langs = sorted(row.per_lang)
        for lang in [*langs, "avg"]:
            stat = row.average(langs) if lang == "avg" else row.stats(lang)
            if stat is None:
                continue
            mean, std, n = stat
            out.append({**base, "lang": lang, "mean": round(mean, 6), "std": round(std, 6), "n_seeds": n,
                        "seeds": sorted(row.seeds)})
    return out


def entry_id(e: dict[str, Any]) -> str:
    return "/".join(str(e[k]) for k in ("task", "protocol", "profile", "method", "model", "lang", "metric"))


def make_reference(results: list[dict[str, Any]], floor: float = DEFAULT_FLOOR, k: float = DEFAULT_K) -> dict[str, Any]:
    return {"schema": REFERENCE_SCHEMA, "xbench_version": __version__, "created": time.strftime("%Y-%m-%d"),
            "tolerance": {"floor": floor, "k": k, "rule": "fail when |mean - ref_mean| > max(floor, k * ref_std)"},
            "entries": _entries(results)}


def load_reference(path: Path) -> dict[str, Any]:
    try:
        ref = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(path, "reference file not found", expected="a file written by `xbench baseline update`") from None
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"not valid JSON ({exc.msg})", line=exc.lineno) from None
    if not isinstance(ref, dict) or ref.get("schema") != REFERENCE_SCHEMA or not isinstance(ref.get("entries"), list):
        raise DataFormatError(path, "not an xbench reference", field="schema", expected=REFERENCE_SCHEMA)
    for i, e in enumerate(ref["entries"]):
        missing = [k for k in ("task", "protocol", "profile", "method", "model", "lang", "metric", "mean", "std") if k not in e]
        if missing:
            raise DataFormatError(path, f"entry {i} lacks {', '.join(missing)}", field=f"entries[{i}]")
    return ref


@dataclass
class CheckRow:
    id: str
    ref_mean: float
    ref_std: float
    mean: float | None
    threshold: float
    status: str  # "ok", "regressed", "improved", "missing"

    @property
    def delta(self) -> float | None:
        return None if self.mean is None else self.mean - self.ref_mean


def compare(reference: dict[str, Any], results: list[dict[str, Any]], *, floor: float | None = None,
            k: float | None = None) -> list[CheckRow]:
    tol = reference.get("tolerance", {})
    floor = tol.get("floor", DEFAULT_FLOOR) if floor is None else floor
    k = tol.get("k", DEFAULT_K) if k is None else k
    now = {entry_id(e): e for e in _entries(results)}
    rows = []
    for ref in reference["entries"]:
        eid = entry_id(ref)
        threshold = max(floor, k * float(ref["std"]))
        cur = now.get(eid)
        if cur is None:
            rows.append(CheckRow(eid, ref["mean"], ref["std"], None, threshold, "missing"))
            continue
        delta = cur["mean"] - ref["mean"]
        status = "ok" if abs(delta) <= threshold else ("regressed" if delta < 0 else "improved")
        rows.append(CheckRow(eid, ref["mean"], ref["std"], cur["mean"], threshold, status))
    return rows
