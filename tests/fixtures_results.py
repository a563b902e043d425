"""Hand-written result files for leaderboard and check tests (no training involved)."""
from __future__ import annotations

import json
from pathlib import Path

from xbench.results.schema import SCHEMA_VERSION, result_path


def write_result(root: Path, method: str, kind: str, seed: int, scores: dict[str, float], *, task: str = "xnli",
                 flops: float = 0.0, tokens: int = 0, model: str = "xbench/tiny-en-bert",
                 compared_with: str | None = None, report: dict | None = None, variant: str = "",
                 eval_split: str = "test", device: dict | None = None, transductive: tuple[str, ...] = (),
                 warnings: tuple[str, ...] = (), schema_version: int = SCHEMA_VERSION, **extra_scores) -> Path:
    langs = list(scores)
    stage = {"name": "transfer", "tokens_seen": tokens, "flops_est": flops, "wall_seconds": 12.0,
             **({"device": device} if device is not None else {})}
    data = {
        "schema_version": schema_version, "xbench_version": "0.1.0", "run_id": f"{method}-{seed}",
        "task": {"name": task, "version": 1, "type": "sentence-pair-classification", "metric": "accuracy",
                 "data_hash": "abc123def4567890"},
        "method": {"name": method, "kind": kind, "params": {},
                   **({} if compared_with is None else {"compared_with": compared_with})},
        "model": {"name": model},
        "run": {"protocol": "zero-shot", "variant": variant, "profile": "smoke", "seed": seed, "eval_split": eval_split},
        "scores": {"metric": "accuracy", "metrics": ["accuracy"],
                   "per_language": {k: {"accuracy": v, "n": 100} for k, v in scores.items()},
                   "average": sum(scores.values()) / len(scores), "languages": langs, "missing_languages": [],
                   **extra_scores},
        "compute": {"transfer": [stage] if tokens else [],
                    "transfer_total": {"stages": 1 if tokens else 0, "optimizer_steps": 10, "tokens_seen": tokens,
                                       "flops_est": flops, "wall_seconds": 12.0},
                    "source_pretraining_total": "unused" if method == "scratch" else "external"},
        "flags": {"transductive": list(transductive), "data_setting": "shared", "eval_split": eval_split,
                  **({"warnings": list(warnings)} if warnings else {})},
        "config_hash": "0" * 64,
        "environment": {"git": {"commit": "1234567890abcdef", "dirty": False}},
    }
    if report is not None:
        data["report"] = report
    path = result_path(root, task, "zero-shot", "smoke", method, model, seed, variant=variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path
