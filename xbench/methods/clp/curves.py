"""`xbench curves` for CLP: held-out perplexity against training tokens for CLP and its controls, and
"steps saved" (docs/methods/clp.md, "Learning curves"; docs/protocols.md, "Steps saved").

The three runs share the source model, the target tokenizer, the training text, the held-out
text, the evaluation steps and the token budget, and differ only in their initialisation: CLP,
random (the scratch baseline) and source weights with random embeddings. Each run is an encoder
cache entry, so the curves cost nothing the second time and the same entries serve `xbench run`.
Drawing and the steps-saved arithmetic live in xbench/results/curves.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbench.errors import XbenchError
from xbench.results.curves import describe_saved, mean_std, plot_curves, steps_saved, value_of

DEFAULT_MODEL = "xbench/tiny-en-gpt2"
# variant -> label; the first is the method, the second its scratch baseline.
RUNS = {"clp": "CLP init", "scratch": "random init (scratch)", "source+random-emb": "source weights + random embeddings"}
SUPPORTED = ("clp",)

__all__ = ["DEFAULT_MODEL", "RUNS", "SUPPORTED", "Curves", "build_curves", "describe_saved"]


@dataclass
class Curves:
    data: dict[str, Any]
    json_path: Path
    png_path: Path


def _one_seed(method: str, lang: str, model: str, data_dir: str | Path | None,
              params: dict[str, Any]) -> dict[str, Any]:
    """The three runs of one pretraining seed, and the steps each control saves against scratch."""
    from xbench.methods.base import RunContext
    from xbench.methods.clp.method import ClpMethod
    from xbench.profiles import load_profile

    clp = ClpMethod(RunContext(profile=load_profile("smoke"), model=model, data_dir=data_dir, params=params))
    encoders = {"clp": clp.build_variant(lang, "clp")}
    for variant in list(RUNS)[1:]:
        encoders[variant] = clp.matched_baseline(lang, variant)
    runs: dict[str, Any] = {}
    for variant, enc in encoders.items():
        transfer = next(s for s in enc.stages if s.get("extra", {}).get("role") == "transfer")
        runs[variant] = {"label": RUNS[variant], "encoder": enc.key, "curve": enc.provenance["curve"],
                         "optimizer_steps": transfer["optimizer_steps"], "tokens_seen": transfer["tokens_seen"],
                         "flops_est": transfer["flops_est"], "wall_seconds": transfer["wall_seconds"]}
    scratch = runs["scratch"]
    per_step = {v: r["tokens_seen"] / r["optimizer_steps"] for v, r in runs.items()}
    saved = {}
    for variant in ("clp", "source+random-emb"):
        # Equal batches: compare in optimizer steps; otherwise in tokens (docs/protocols.md).
        unit = "step" if per_step[variant] == per_step["scratch"] else "tokens"
        total = scratch["optimizer_steps"] if unit == "step" else scratch["tokens_seen"]
        saved[variant] = steps_saved(runs[variant]["curve"], scratch["curve"], unit=unit, scratch_total=total)
    # Logged, not asserted (docs/methods/clp.md, "Learning curves"): which initialisation starts lowest.
    start = {v: value_of(r["curve"][0], "perplexity") for v, r in runs.items() if r["curve"] and r["curve"][0]["step"] == 0}
    return {"params": clp.params, "runs": runs, "steps_saved": saved,
            "lowest_at_start": min(start, key=start.get) if start else None,
            "objective": encoders["clp"].provenance["objective"], "heldout": encoders["clp"].provenance["heldout"]}


def _over_seeds(per_seed: dict[int, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean curves (with std, min and max per point) and steps saved as mean ± std over seeds."""
    first = next(iter(per_seed.values()))
    runs: dict[str, Any] = {}
    for variant, run in first["runs"].items():
        curves = [one["runs"][variant]["curve"] for one in per_seed.values()]
        points = []
        for i, p in enumerate(run["curve"]):
            vals = [c[i]["perplexity"] for c in curves]
            finite = None not in vals
            mean, std = mean_std(vals) if finite else (None, None)
            points.append({"step": p["step"], "tokens": p["tokens"],
                           "loss": mean_std([c[i]["loss"] for c in curves])[0], "perplexity": mean,
                           "perplexity_std": std, "perplexity_min": min(vals) if finite else None,
                           "perplexity_max": max(vals) if finite else None})
        runs[variant] = {**{k: v for k, v in run.items() if k != "encoder"}, "curve": points,
                         "encoders": [one["runs"][variant]["encoder"] for one in per_seed.values()]}
    saved: dict[str, Any] = {}
    for variant in first["steps_saved"]:
        each = {seed: one["steps_saved"][variant] for seed, one in per_seed.items()}
        reached = [s["saved"] for s in each.values() if s["reached"]]
        mean, std = mean_std(reached) if reached else (None, None)
        saved[variant] = {"unit": first["steps_saved"][variant]["unit"], "metric": "perplexity",
                          "n": len(each), "reached": len(reached), "saved_mean": mean, "saved_std": std,
                          "target": mean_std([s["target"] for s in each.values()])[0],
                          "per_seed": {str(seed): s for seed, s in each.items()}}
    return runs, saved


def build_curves(method: str, lang: str, *, model: str = DEFAULT_MODEL, data_dir: str | Path | None = None,
                 params: dict[str, Any] | None = None, output_dir: str | Path = "leaderboards",
                 seeds: list[int] | None = None) -> Curves:
    """Build (or reuse) the three runs per pretraining seed, compute steps saved, write
    curves-<method>-<lang>.{json,png}. Several `seeds` give mean curves and steps saved as mean ± std."""
    if method not in SUPPORTED:
        raise XbenchError(f"`xbench curves` draws learning curves for: {', '.join(SUPPORTED)}; got '{method}'")
    from xbench import __version__
    from xbench.atomic import atomic_write_json
    from xbench.methods.clp.method import ClpMethod

    params = dict(params or {})
    if seeds and "pretrain_seed" in params:
        raise XbenchError("give the pretraining seeds either with --seeds or with --param pretrain_seed, not both")
    seeds = seeds or [int(params.get("pretrain_seed", ClpMethod.defaults["pretrain_seed"]))]
    if len(set(seeds)) != len(seeds):
        raise XbenchError(f"duplicate seeds in {seeds}")
    per_seed = {seed: _one_seed(method, lang, model, data_dir, {**params, "pretrain_seed": seed}) for seed in seeds}
    first = per_seed[seeds[0]]
    if len(seeds) == 1:
        runs, saved = first["runs"], first["steps_saved"]
    else:
        runs, saved = _over_seeds(per_seed)
    data = {"method": method, "lang": lang, "source_model": model, "profile": "smoke", "objective": first["objective"],
            "params": {k: v for k, v in first["params"].items() if k != "pretrain_seed"}, "seeds": seeds,
            "heldout": first["heldout"], "runs": runs, "steps_saved": saved,
            "lowest_at_start": first["lowest_at_start"] if len(seeds) == 1 else
            {str(seed): one["lowest_at_start"] for seed, one in per_seed.items()},
            "xbench_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    out = Path(output_dir)
    json_path, png_path = out / f"curves-{method}-{lang}.json", out / f"curves-{method}-{lang}.png"
    atomic_write_json(json_path, data)
    plot_curves(data, png_path)
    return Curves(data, json_path, png_path)
