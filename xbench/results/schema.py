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
  3: the averages are named and defined once (xbench/results/averages.py): scores.averages
     ({"xlt", "gxlt", "card"} -> value of the primary metric), scores.average_units (the units each
     is taken over) and scores.average_excludes (the card's excluded languages); scores.average is
     the card average. flags.transductive entries are "<task>:<lang>" (evaluation data of that
     task and language was in pretraining text) and only name the task evaluated; flags.warnings
     (strings) and run.eval_split are always present. Older files are upgraded on load
     (`upgrade`): excludes are inferred from averaged_over, and the averages recomputed.
  4: method.finetune_changes: what the method changed in the shared fine-tuning, as short strings
     ("head: <name>", "extra loss: <name>", "train transform: <name>"; docs/methods/README.md,
     "Shaping fine-tuning"), [] when it fine-tuned like every baseline; the leaderboard flags rows
     that have any. Older files read as [] (no method could change fine-tuning before).
The full field reference is in README.md ("Result files").
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from xbench.errors import DataFormatError, XbenchError

SCHEMA_VERSION = 4
REQUIRED = ("schema_version", "task", "method", "model", "run", "scores", "compute", "config_hash", "environment")


def model_slug(model: str) -> str:
    """One safe folder name for a hub name or local path: `xbench/tiny-en-bert` -> `xbench--tiny-en-bert`.

    Runs of dots become `--` and leading or trailing dots and dashes go, so `..` or `../x` can
    never name a folder outside the output tree (nor a hidden one).
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", model.strip("/"))
    return re.sub(r"\.{2,}", "--", slug).strip(".-") or "model"


_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._,=;+-]*")


def path_component_problem(what: str, value: Any) -> str | None:
    """Why `value` cannot be one folder or file name of a result path (None when it can).

    Task, protocol, variant, profile, method, model slug and seed all become path components;
    one check for all of them keeps a name from any source (a card, a profile, a result file)
    from reaching outside the chosen folder.
    """
    if what == "seed":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return None if ok else f"seed {value!r}: seeds are non-negative integers"
    text = str(value)
    if not isinstance(value, str) or not _COMPONENT.fullmatch(text) or ".." in text or len(text) > 200:
        return (f"{what} {text!r} cannot be part of a file path: use letters, digits and . _ - "
                f"(not starting with . or -, no '..', no path separators)")
    return None


def protocol_dir(protocol: str, variant: str = "") -> str:
    """The protocol folder of a result path: `zero-shot`, or `zero-shot+treebank=pud` with task options."""
    return f"{protocol}+{re.sub(r'[^A-Za-z0-9._,=;-]+', '-', variant)}" if variant else protocol


def result_path(root: Path, task: str, protocol: str, profile: str, method: str, model: str, seed: int,
                variant: str = "") -> Path:
    """`<task>/<protocol>[+<variant>]/<profile>/<method>/<model>/seed-<n>.json`; refuses unsafe components."""
    proto = protocol_dir(protocol, variant)
    parts = {"task": task, "protocol": proto, "profile": profile, "method": method, "model": model_slug(model),
             "seed": seed}
    problems = [p for p in (path_component_problem(k, v) for k, v in parts.items()) if p]
    if problems:
        raise XbenchError("; ".join(problems))
    return Path(root) / task / proto / profile / method / parts["model"] / f"seed-{seed}.json"


def protocol_label(result: dict[str, Any]) -> str:
    """The protocol a result is grouped under: the protocol, plus its task-option variant if any."""
    run = result["run"]
    return f"{run['protocol']} ({run['variant']})" if run.get("variant") else run["protocol"]


def read_json(path: Path, what: str, *, missing: str = "file not found") -> Any:
    """A JSON file a user handed in (result, reference): any way it can be unreadable is one
    DataFormatError naming the file, never a traceback."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, missing, expected=what) from None
    except OSError as exc:
        raise DataFormatError(path, f"cannot be read ({exc.strerror})") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, f"not UTF-8 text (byte {exc.start})", expected=f"{what} (JSON)") from None
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"not valid JSON ({exc.msg})", line=exc.lineno) from None
    except RecursionError:
        raise DataFormatError(path, "JSON nested too deeply", expected=what) from None


def load_result(path: Path) -> dict[str, Any]:
    """A result file of any schema version, type-checked and upgraded to the current one."""
    from xbench.results.validate import check_result

    data = read_json(path, "an xbench result file")
    if not isinstance(data, dict):
        raise DataFormatError(path, "expected a JSON object at the top level")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise DataFormatError(path, f"missing key(s) {', '.join(missing)}", expected="an xbench result file")
    version = data["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DataFormatError(path, f"got {version!r}", field="schema_version", expected="a positive integer")
    if version > SCHEMA_VERSION:
        raise DataFormatError(path, f"schema_version {version!r} is newer than this xbench reads ({SCHEMA_VERSION}); upgrade xbench",
                              field="schema_version")
    check_result(path, data)
    problem = path_component_problem("task name", data["task"]["name"])
    if problem:  # it names the leaderboard file
        raise DataFormatError(path, problem, field="task.name")
    return upgrade(data)


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """Fill in, in place, what a file of an older schema version lacks (the one place that knows)."""
    from xbench.results.averages import infer_excludes, named_averages, unit_sets

    method, run, scores = data["method"], data["run"], data["scores"]
    flags = data.setdefault("flags", {})
    method.setdefault("kind", "transfer")
    # Version 1 predates compared_with: a transfer method was compared with plain scratch.
    method.setdefault("compared_with", "scratch" if method["kind"] == "transfer" else "")
    method.setdefault("finetune_changes", [])
    run.setdefault("variant", "")
    run.setdefault("eval_split", flags.get("eval_split"))
    flags.setdefault("transductive", [])
    flags.setdefault("warnings", [])
    units = list(scores["per_language"])
    if "average_excludes" not in scores:
        scores["average_excludes"] = infer_excludes(units, scores.get("averaged_over") or units)
    if "average_units" not in scores:
        scores["average_units"] = unit_sets(units, scores["average_excludes"])
    if "averages" not in scores:
        metric = scores["metric"]
        values = {u: v[metric] for u, v in scores["per_language"].items() if metric in v}
        scores["averages"] = named_averages(values, scores["average_units"])
    return data


def iter_results(root: Path, task: str | None = None) -> list[dict[str, Any]]:
    root = Path(root)
    problem = path_component_problem("task", task) if task else None
    if problem:
        raise XbenchError(problem)
    pattern = f"{task}/**/seed-*.json" if task else "**/seed-*.json"
    out = []
    for path in sorted(root.glob(pattern)):
        if ".work" in path.parts:
            continue
        r = load_result(path)
        r["_path"] = str(path)
        # Messages about a result's files name them from here, so a committed leaderboard shows no
        # machine's absolute paths.
        r["_root"] = str(root)
        out.append(r)
    return out
