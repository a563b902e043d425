"""What a run writes, and what it may keep: the result document of one seed, the identity check
behind --resume, and the lock that keeps two runs from writing one result file.

The result schema is documented in README.md ("Result files") and xbench/results/schema.py, which
reads result files back and upgrades old ones.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xbench import __version__
from xbench.data.sources import data_hash
from xbench.errors import ConfigError, XbenchError
from xbench.results.schema import SCHEMA_VERSION
from xbench.run.request import ResolvedRun, TrainGroup

@dataclass
class SeedLedger:
    """What one seed's run gathers for its result file, in the order the run meets it."""

    task_type: Any
    groups: list[TrainGroup]
    train_split: str
    select_split: str | None
    eval_split: str
    data: dict[str, Any] = field(default_factory=dict)  # provenance per data item, hashed into task.data_hash
    method_slots: dict[str, Any] = field(default_factory=dict)  # the data slots the method reads
    task_slots: dict[str, Any] = field(default_factory=dict)  # task slots read: filled in as their splits load
    source: dict[str, Any] | None = None  # the text an xbench-built source model learnt from
    finetune_changes: list[str] = field(default_factory=list)
    encoders: dict[str, Any] = field(default_factory=dict)
    compute: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"transfer": [], "finetune": [], "source_pretraining": []})
    uses_source: bool = False
    selection: list[dict[str, Any]] = field(default_factory=list)
    flags: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    diagnostics: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)


def result_document(rr: ResolvedRun, method: Any, seed: int, led: SeedLedger) -> dict[str, Any]:
    """The result file of one seed (schema: xbench/results/schema.py); `_predictions` is written beside it."""
    from xbench.envinfo import environment
    from xbench.results.averages import named_averages, unit_sets
    from xbench.results.transductive import for_result
    from xbench.runner.compute import sum_records

    req, card, task_type, compute, scores = rr.request, rr.card, led.task_type, led.compute, led.scores
    metric = card.metric
    langs = task_type.eval_units(list(req.langs))
    missing = [lang for lang in card.languages if lang not in scores]
    excludes = sorted(card.raw.get("average_excludes") or [])
    average_units = unit_sets(langs, excludes)
    averages = named_averages({u: scores[u][metric] for u in langs}, average_units)
    return {
        "schema_version": SCHEMA_VERSION,
        "xbench_version": __version__,
        "run_id": uuid.uuid4().hex,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "task": {"name": card.name, "version": card.version, "type": card.task_type, "metric": metric,
                 "card_sha256": rr.config["task"]["card_sha256"], "data_hash": data_hash(led.data), "data": led.data,
                 **({"slots": {**led.method_slots, **led.task_slots}} if led.method_slots or led.task_slots else {})},
        "method": {"name": req.method, "kind": method.kind, "params": method.params,
                   "compared_with": method.compared_with or ("scratch" if method.kind == "transfer" else ""),
                   "finetune_changes": led.finetune_changes},
        "model": {"name": rr.model, "source_text_hash": led.source["hash"] if led.source else None,
                  "encoders": list(led.encoders.values()),
                  "parameters": compute["finetune"][0]["params"] if compute["finetune"] else {}},
        "run": {"protocol": rr.protocol, "variant": rr.variant, "profile": rr.profile["name"], "seed": seed,
                "train_langs": sorted({g.train_lang for g in led.groups}), "train_split": led.train_split,
                "select_split": led.select_split, "eval_langs": langs, "eval_split": led.eval_split},
        "scores": {"metric": metric, "metrics": task_type.metrics, "per_language": scores,
                   "average": averages["card"], "averaged_over": average_units["card"], "averages": averages,
                   "average_units": average_units, "average_excludes": excludes,
                   "languages": langs, "missing_languages": missing},
        "scoring": task_type.scoring_info(),
        "selection": led.selection,
        "compute": {**compute, "transfer_total": sum_records(compute["transfer"]),
                    "finetune_total": sum_records(compute["finetune"]),
                    # "external": a public checkpoint whose cost xbench cannot know; "unused": no source weights.
                    "source_pretraining_total": (sum_records(compute["source_pretraining"]) if compute["source_pretraining"]
                                                 else "external" if led.uses_source else "unused"),
                    "wall_seconds_total": round(time.time() - led.started, 3)},
        "flags": {**led.flags, "transductive": for_result(led.flags["transductive"], card.name, langs)},
        "config": rr.config,
        "config_hash": rr.config_hash,
        "environment": environment(),
        "diagnostics": led.diagnostics,
        "_predictions": led.predictions,
    }


def check_existing(rr: ResolvedRun, targets: dict[int, Path]) -> None:
    """Refuse to replace a result without --overwrite, and to keep one under --resume that is not this run's."""
    req = rr.request
    root = Path(req.output_dir).resolve()
    outside = [str(p) for p in targets.values() if not p.resolve().is_relative_to(root)]
    if outside:  # result_path's checked names cannot do this; a symlink inside the output tree can
        raise XbenchError(f"result path(s) {', '.join(outside)} resolve outside --output-dir {req.output_dir}")
    existing = [p for p in targets.values() if p.exists()]
    if not existing or req.overwrite:
        return
    if not req.resume:
        raise XbenchError("result file(s) already exist: " + ", ".join(map(str, existing))
                          + "; pass --overwrite to replace them, --resume to skip them, or choose another --output-dir")
    problems = [d for path in existing for d in resume_differences(rr, path)]
    if problems:
        raise ConfigError(problems + ["--resume keeps only results of the same identity; pass --overwrite to "
                                      "replace them, or choose another --output-dir"], source="xbench run --resume")


def resume_differences(rr: ResolvedRun, path: Path) -> list[str]:
    """How the result at `path` differs from what this run would write (empty: --resume may keep it).

    The identity is the evaluated languages and task options, the resolved config (its hash covers
    the xbench and fine-tuning code versions, settings and overrides) and the data: every file the
    result lists is hashed again, so an edited data file is not taken for the one that was scored.
    """
    from xbench.results.schema import load_result

    old = load_result(path)
    req, run_info = rr.request, old.get("run") or {}
    out: list[str] = []
    try:
        want = rr.card.task_type_impl(req.options).eval_units(list(req.langs))
    except XbenchError:
        want = list(req.langs)
    have = run_info.get("eval_langs") or (old.get("scores") or {}).get("languages") or []
    if sorted(map(str, have)) != sorted(want):
        out.append(f"{path} was made for languages {', '.join(map(str, have)) or '(none)'}, "
                   f"this run asks {', '.join(want)}")
    if run_info.get("variant", "") != rr.variant:
        out.append(f"{path} was made with task options '{run_info.get('variant', '')}', this run has '{rr.variant}'")
    diffs = _config_differences(old.get("config"), rr.config)  # the content, not only the hash it claims
    if diffs or old.get("config_hash") != rr.config_hash:
        shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
        out.append(f"{path}: config differs (result vs this run): {shown or 'config_hash only'}")
    if old.get("xbench_version") != __version__ and not any(d.startswith("xbench_version ") for d in diffs):
        out.append(f"{path} was made by xbench {old.get('xbench_version')}, this is {__version__}")
    out += _data_differences(path, old, req.data_dir)
    return out


def _config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(f"{name} {json.dumps(old.get(key)) if key in old else '(absent)'} vs "
                           f"{json.dumps(new.get(key)) if key in new else '(absent)'}")
            else:
                out += _config_differences(old[key], new[key], name)
        return out
    if old != new:
        return [f"{prefix or 'config'} {json.dumps(old)} vs {json.dumps(new)}"]
    return []


def _data_differences(path: Path, old: dict[str, Any], data_dir: str | None) -> list[str]:
    from xbench.data.sources import data_roots, file_hash

    roots = data_roots(data_dir)
    data = (old.get("task") or {}).get("data") or {}
    out = []
    for split, prov in (data.items() if isinstance(data, dict) else []):
        for rec in (prov.get("files") or []) if isinstance(prov, dict) else []:
            rel, recorded = str(rec.get("path", "")), rec.get("sha256")
            found = Path(rel) if Path(rel).is_absolute() else (roots.find(rel) if roots else None)
            if found is None or not found.is_file():
                out.append(f"{path}: its data file {rel} ({split}) is not in the data roots now")
            elif file_hash(found) != recorded:
                out.append(f"{path}: data file {found} ({split}) changed since the result was made "
                           f"(SHA-256 {str(recorded)[:12]}… vs {file_hash(found)[:12]}…)")
    return out


@contextlib.contextmanager
def result_lock(out_root: Path, path: Path) -> Iterator[None]:
    """Hold an exclusive lock on one result path for a seed's whole run, or refuse at once.

    Two runs of the same identity would otherwise both train and the later silently replace the
    other's file. The lock file carries the holder's pid for the message.
    """
    import fcntl
    import socket

    lock = out_root / ".work" / "locks" / path.relative_to(out_root).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        f = open(lock, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise XbenchError(f"{path} is being written by another xbench run ({holder}); wait for it to finish, "
                              "or choose another --output-dir") from None
        try:  # the previous holder may have removed the file between our open and flock
            same = os.fstat(f.fileno()).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    from xbench.locks import LeaseHeld, lease

    held = contextlib.ExitStack()
    try:
        # Another machine's run of the same result, on a filesystem that does not share flocks.
        held.enter_context(lease(lock, blocking=False))
    except LeaseHeld as exc:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
        raise XbenchError(f"{path} is being written by another xbench run ({exc.holder}); wait for it to finish, "
                          "or choose another --output-dir") from None
    try:
        with held:
            yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
        top, folder = out_root / ".work" / "locks", lock.parent
        while folder != top.parent and folder.is_relative_to(top):  # empty lock folders, up to .work/locks
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"
