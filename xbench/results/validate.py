"""Type checks of the result-file fields that leaderboards and the check read.

A result file is user input to `xbench leaderboard`, `check` and `baseline update` (it may be
copied, hand-edited or truncated), so each field they use is checked once when the file is
loaded, and a bad one is one message naming the file and the field instead of a traceback deep
inside the aggregation.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xbench.errors import DataFormatError

_MISSING = object()


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_str(v: Any) -> bool:
    return isinstance(v, str)


def is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _get(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


def _stage_totals_ok(v: Any) -> bool:
    if isinstance(v, str):  # "external" / "unused"
        return True
    return (isinstance(v, dict) and is_int(v.get("stages"))
            and all(is_number(v.get(k)) for k in ("flops_est", "tokens_seen", "wall_seconds")))


def _stage_list_ok(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(s, dict) and isinstance(s.get("device", {}), dict) for s in v)


# (field, check, what was expected, required)
_FIELDS: list[tuple[str, Callable[[Any], bool], str, bool]] = [
    ("task", lambda v: isinstance(v, dict), "an object", True),
    ("task.name", is_str, "a string", True),
    ("task.version", is_int, "an integer", True),
    ("task.data_hash", is_str, "a string", False),
    ("method", lambda v: isinstance(v, dict), "an object", True),
    ("method.name", is_str, "a string", True),
    ("method.kind", lambda v: v in ("transfer", "baseline"), "'transfer' or 'baseline'", False),
    ("method.compared_with", is_str, "a string", False),
    ("method.finetune_changes", is_str_list, "a list of strings", False),
    ("model", lambda v: isinstance(v, dict), "an object", True),
    ("model.name", is_str, "a string", True),
    ("run", lambda v: isinstance(v, dict), "an object", True),
    ("run.protocol", is_str, "a string", True),
    ("run.variant", is_str, "a string", False),
    ("run.profile", is_str, "a string", True),
    ("run.seed", lambda v: is_int(v) and v >= 0, "a non-negative integer", True),
    ("run.eval_split", lambda v: v is None or is_str(v), "a string", False),
    ("scores", lambda v: isinstance(v, dict), "an object", True),
    ("scores.metric", is_str, "a string", True),
    ("scores.metrics", lambda v: is_str_list(v) and bool(v), "a non-empty list of metric names", False),
    ("scores.per_language", lambda v: isinstance(v, dict) and bool(v)
     and all(isinstance(x, dict) for x in v.values()), "an object of per-unit score objects", True),
    ("scores.averaged_over", is_str_list, "a list of unit names", False),
    ("scores.average_excludes", is_str_list, "a list of languages", False),
    ("compute", lambda v: isinstance(v, dict), "an object", True),
    ("compute.transfer_total", _stage_totals_ok, "stage totals (stages, flops_est, tokens_seen, wall_seconds)", False),
    ("compute.source_pretraining_total", _stage_totals_ok, "stage totals or 'external'/'unused'", False),
    ("compute.transfer", _stage_list_ok, "a list of stage records", False),
    ("compute.source_pretraining", _stage_list_ok, "a list of stage records", False),
    ("flags", lambda v: isinstance(v, dict), "an object", False),
    ("flags.transductive", is_str_list, "a list of strings", False),
    ("flags.warnings", is_str_list, "a list of strings", False),
    ("flags.data_setting", lambda v: v is None or is_str(v), "a string", False),
    ("environment", lambda v: isinstance(v, dict), "an object", True),
    ("environment.git", lambda v: v is None or isinstance(v, dict), "an object", False),
    ("environment.git.commit", lambda v: v is None or is_str(v), "a string", False),
    ("xbench_version", is_str, "a string", False),
    ("report", lambda v: v is None or isinstance(v, dict), "an object", False),
]


def check_result(path: str | Path, data: dict[str, Any]) -> None:
    """Raise DataFormatError naming `path` and the first field the aggregation cannot use."""
    for name, ok, expected, required in _FIELDS:
        value = _get(data, name)
        if value is _MISSING:
            if required:
                raise DataFormatError(path, "missing", field=name, expected=expected)
            continue
        if not ok(value):
            raise DataFormatError(path, f"got {_short(value)}", field=name, expected=expected)
    scores = data["scores"]
    metrics = [scores["metric"], *scores.get("metrics", [])]
    for unit, values in scores["per_language"].items():
        for m in metrics:
            if m in values and not is_number(values[m]):
                raise DataFormatError(path, f"got {_short(values[m])}", field=f"scores.per_language.{unit}.{m}",
                                      expected="a finite number (a fraction)")
    report = data.get("report") or {}
    for k in ("english", "target_mean", "transfer_gap"):
        if report.get(k) is not None and not is_number(report[k]):
            raise DataFormatError(path, f"got {_short(report[k])}", field=f"report.{k}", expected="a number")
    retrieval = report.get("retrieval", {})
    if not isinstance(retrieval, dict) or not all(isinstance(x, dict) and is_number(x.get("mean"))
                                                  for x in retrieval.values()):
        raise DataFormatError(path, "malformed", field="report.retrieval", expected="per language an object with a numeric 'mean'")


def _short(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '…' if len(text) > 60 else text}"
