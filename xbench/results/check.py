"""Regression check against a stored reference (`baselines/*.json`).

An entry regresses when |mean_now - mean_ref| > max(floor, k * std_ref). The floor absorbs the
run-to-run noise of deterministic CPU runs on different hardware (BLAS order), k * std the seed
variance where a reference has several seeds. Both numbers are stored in the reference file so a
review of `xbench baseline update` shows them. Scores are fractions: floor 0.01 is one point.

A method whose encoder build is not repeatable on a fresh cache (TreLM: eflomal takes no seed) gets
its own floor, `tolerance.method_floors`, sized from builds measured apart; the seed std of a
reference cannot see that variance, since every seed fine-tunes the same build.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbench import __version__
from xbench.errors import DataFormatError
from xbench.results.aggregate import aggregate, group_sets
from xbench.results.validate import is_number

DEFAULT_FLOOR = 0.01
DEFAULT_K = 2.0
REFERENCE_SCHEMA = "xbench-reference/1"


def _entries(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per unit, and `avg` for the card average (xbench/results/averages.py) over the units of every
    row shown in one leaderboard table, so the check tests the number the leaderboard shows."""
    rows = aggregate(results)
    groups: dict[tuple[str, ...], list[Any]] = {}
    for (task, protocol, profile, _method, model), row in rows.items():
        groups.setdefault((task, protocol, profile, model, row.metric), []).append(row)
    card_units = {key: group_sets(grp).get("card", []) for key, grp in groups.items()}
    out = []
    for key, row in sorted(rows.items()):
        task, protocol, profile, method, model = key
        base = {"task": task, "protocol": protocol, "profile": profile, "method": method, "model": model,
                "metric": row.metric}
        averaged = card_units[(task, protocol, profile, model, row.metric)]
        for lang in [*sorted(row.per_lang), "avg"]:
            stat = row.average(averaged) if lang == "avg" else row.stats(lang)
            if stat is None:
                continue
            out.append({**base, "lang": lang, "mean": round(stat.mean, 6), "std": round(stat.std, 6),
                        "n_seeds": stat.n, "seeds": list(stat.seeds)})
    return out


def entry_id(e: dict[str, Any]) -> str:
    return "/".join(str(e[k]) for k in ("task", "protocol", "profile", "method", "model", "lang", "metric"))


def make_reference(results: list[dict[str, Any]], floor: float = DEFAULT_FLOOR, k: float = DEFAULT_K,
                   method_floors: dict[str, float] | None = None) -> dict[str, Any]:
    tolerance: dict[str, Any] = {"floor": floor, "k": k,
                                 "rule": "fail when |mean - ref_mean| > max(floor, k * ref_std)"}
    if method_floors:
        tolerance["method_floors"] = dict(sorted(method_floors.items()))
        tolerance["rule"] = "fail when |mean - ref_mean| > max(method_floors[method] or floor, k * ref_std)"
    return {"schema": REFERENCE_SCHEMA, "xbench_version": __version__, "created": time.strftime("%Y-%m-%d"),
            "tolerance": tolerance, "entries": _entries(results)}


_ENTRY_STR = ("task", "protocol", "profile", "method", "model", "lang", "metric")


def load_reference(path: Path) -> dict[str, Any]:
    """A reference, fully checked: a malformed or empty one is an XbenchError (exit 2), never a
    traceback and never a pass or a regression (exit 1 means the results moved)."""
    from xbench.results.schema import read_json

    ref = read_json(path, "a file written by `xbench baseline update`", missing="reference file not found")
    if not isinstance(ref, dict) or ref.get("schema") != REFERENCE_SCHEMA:
        raise DataFormatError(path, "not an xbench reference", field="schema", expected=REFERENCE_SCHEMA)
    if not isinstance(ref.get("entries"), list):
        raise DataFormatError(path, "missing or not a list", field="entries", expected="a list of reference entries")
    if not ref["entries"]:
        raise DataFormatError(path, "the reference has no entries, so it would pass any results", field="entries",
                              expected="entries written by `xbench baseline update` from real results")
    tol = ref.get("tolerance", {})
    if not isinstance(tol, dict):
        raise DataFormatError(path, f"got {type(tol).__name__}", field="tolerance", expected="an object with floor and k")
    for k in ("floor", "k"):
        if k in tol and not (is_number(tol[k]) and tol[k] >= 0):
            raise DataFormatError(path, f"got {tol[k]!r}", field=f"tolerance.{k}", expected="a non-negative number")
    floors = tol.get("method_floors", {})
    if not isinstance(floors, dict):
        raise DataFormatError(path, f"got {type(floors).__name__}", field="tolerance.method_floors",
                              expected="an object of method name to floor")
    for name, value in floors.items():
        if not (is_number(value) and value >= 0):
            raise DataFormatError(path, f"got {value!r}", field=f"tolerance.method_floors.{name}",
                                  expected="a non-negative number")
    seen: set[str] = set()
    for i, e in enumerate(ref["entries"]):
        where = f"entries[{i}]"
        if not isinstance(e, dict):
            raise DataFormatError(path, f"got {type(e).__name__}", field=where, expected="an object")
        missing = [k for k in (*_ENTRY_STR, "mean", "std") if k not in e]
        if missing:
            raise DataFormatError(path, f"entry {i} lacks {', '.join(missing)}", field=where)
        for k in _ENTRY_STR:
            if not isinstance(e[k], str):
                raise DataFormatError(path, f"got {e[k]!r}", field=f"{where}.{k}", expected="a string")
        for k in ("mean", "std"):
            if not is_number(e[k]) or (k == "std" and e[k] < 0):
                raise DataFormatError(path, f"got {e[k]!r}", field=f"{where}.{k}",
                                      expected="a finite number" + (" >= 0" if k == "std" else ""))
        eid = entry_id(e)
        if eid in seen:
            raise DataFormatError(path, f"{eid} appears twice", field=where, expected="one entry per id")
        seen.add(eid)
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
    # --floor overrides the default floor only: a method's own floor stands for variance it has and others lack
    method_floors = tol.get("method_floors", {})
    now = {entry_id(e): e for e in _entries(results)}
    rows = []
    for ref in reference["entries"]:
        eid = entry_id(ref)
        threshold = max(method_floors.get(ref["method"], floor), k * float(ref["std"]))
        cur = now.get(eid)
        if cur is None:
            rows.append(CheckRow(eid, ref["mean"], ref["std"], None, threshold, "missing"))
            continue
        delta = cur["mean"] - ref["mean"]
        status = "ok" if abs(delta) <= threshold else ("regressed" if delta < 0 else "improved")
        rows.append(CheckRow(eid, ref["mean"], ref["std"], cur["mean"], threshold, status))
    return rows
