"""`xbench curves`: held-out perplexity against training tokens, and "steps saved" (docs/methods/clp.md,
"Learning curves"; docs/protocols.md, "Steps saved").

For CLP the three runs share the source model, the target tokenizer, the training text,
the held-out text, the evaluation steps and the token budget, and differ only in their
initialisation: CLP, random (the scratch baseline) and source weights with random embeddings.
Each run is an encoder cache entry, so the curves cost nothing the second time and the same
entries serve `xbench run`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbench.errors import XbenchError

DEFAULT_MODEL = "xbench/tiny-en-gpt2"
# variant -> label; the first is the method, the second its scratch baseline.
RUNS = {"clp": "CLP init", "scratch": "random init (scratch)", "source+random-emb": "source weights + random embeddings"}
SUPPORTED = ("clp",)


def _value(point: dict[str, Any], key: str) -> float:
    v = point.get(key)
    return math.inf if v is None else float(v)  # None: exp overflowed, i.e. worse than any finite value


def steps_saved(method: list[dict[str, Any]], scratch: list[dict[str, Any]], *, unit: str = "step",
                metric: str = "perplexity", scratch_total: float | None = None) -> dict[str, Any]:
    """Steps saved (docs/protocols.md, "Steps saved") for a lower-is-better metric.

    v* is the scratch curve's last value and S its total (`scratch_total`, by default its last
    point's `unit`). s_m is the first `unit` at which the method's curve reaches v*, linearly
    interpolated between evaluation points. Returns v*, S, s_m, s_m / S and 1 − s_m / S, or
    `reached: False` (shown as "not reached") when the method never gets to v*.
    """
    if not method or not scratch:
        raise XbenchError("steps saved needs a method curve and a scratch curve with at least one point each")
    pts = sorted(((float(p[unit]), _value(p, metric)) for p in method), key=lambda t: t[0])
    last = max(scratch, key=lambda p: p[unit])
    target = _value(last, metric)
    total = float(scratch_total if scratch_total is not None else last[unit])
    if not math.isfinite(target) or total <= 0:
        raise XbenchError(f"steps saved: the scratch run ends at {metric} {target} after {total} {unit}s; "
                          "it needs a finite final value and a positive length")
    reached_at = None
    if pts[0][1] <= target:
        reached_at = pts[0][0]
    else:
        for (xa, va), (xb, vb) in zip(pts, pts[1:]):
            if vb <= target:
                # From an overflowed point there is no line to follow: the curve is reached at xb.
                reached_at = xb if not math.isfinite(va) else xa + (va - target) / (va - vb) * (xb - xa)
                break
    out: dict[str, Any] = {"unit": unit, "metric": metric, "target": target, "scratch_total": total,
                           "reached": reached_at is not None, "at": reached_at}
    if reached_at is not None:
        out["fraction_of_scratch"] = reached_at / total
        out["saved"] = 1.0 - reached_at / total
    return out


def describe_saved(s: dict[str, Any]) -> str:
    if "per_seed" in s:  # a summary over pretraining seeds
        if not s["reached"]:
            return f"not reached (0 of {s['n']} seeds)"
        text = f"{100 * s['saved_mean']:.0f} ± {100 * s['saved_std']:.0f}% saved"
        return text + (f" ({s['reached']} of {s['n']} seeds reached)" if s["reached"] < s["n"] else f" ({s['n']} seeds)")
    if not s["reached"]:
        return "not reached"
    return f"{100 * s['saved']:.0f}% saved ({s['at']:.0f} of {s['scratch_total']:.0f} {s['unit']}s)"


@dataclass
class Curves:
    data: dict[str, Any]
    json_path: Path
    png_path: Path


def _one_seed(method: str, lang: str, model: str, data_dir: str | Path | None,
              params: dict[str, Any]) -> dict[str, Any]:
    """The three runs of one pretraining seed, and the steps each control saves against scratch."""
    from xbench.methods.base import RunContext
    from xbench.methods.clp import ClpMethod
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
    start = {v: _value(r["curve"][0], "perplexity") for v, r in runs.items() if r["curve"] and r["curve"][0]["step"] == 0}
    return {"params": clp.params, "runs": runs, "steps_saved": saved,
            "lowest_at_start": min(start, key=start.get) if start else None,
            "objective": encoders["clp"].provenance["objective"], "heldout": encoders["clp"].provenance["heldout"]}


def _mean_std(values: list[float]) -> tuple[float, float]:
    import statistics

    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


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
            mean, std = _mean_std(vals) if finite else (None, None)
            points.append({"step": p["step"], "tokens": p["tokens"],
                           "loss": _mean_std([c[i]["loss"] for c in curves])[0], "perplexity": mean,
                           "perplexity_std": std, "perplexity_min": min(vals) if finite else None,
                           "perplexity_max": max(vals) if finite else None})
        runs[variant] = {**{k: v for k, v in run.items() if k != "encoder"}, "curve": points,
                         "encoders": [one["runs"][variant]["encoder"] for one in per_seed.values()]}
    saved: dict[str, Any] = {}
    for variant in first["steps_saved"]:
        each = {seed: one["steps_saved"][variant] for seed, one in per_seed.items()}
        reached = [s["saved"] for s in each.values() if s["reached"]]
        mean, std = _mean_std(reached) if reached else (None, None)
        saved[variant] = {"unit": first["steps_saved"][variant]["unit"], "metric": "perplexity",
                          "n": len(each), "reached": len(reached), "saved_mean": mean, "saved_std": std,
                          "target": _mean_std([s["target"] for s in each.values()])[0],
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
    from xbench.methods.clp import ClpMethod

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


def plot_curves(data: dict[str, Any], path: Path) -> None:
    """Perplexity (log scale) against training tokens, one line per run, scratch's final value dashed."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xbench.atomic import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for variant, run in data["runs"].items():
        pts = [p for p in run["curve"] if p["perplexity"] is not None]
        label = run["label"]
        if variant in data["steps_saved"]:
            label += f" — {describe_saved(data['steps_saved'][variant])}"
        line, = ax.plot([p["tokens"] for p in pts], [p["perplexity"] for p in pts], marker="o", label=label)
        if pts and "perplexity_min" in pts[0]:  # several seeds: their range
            ax.fill_between([p["tokens"] for p in pts], [p["perplexity_min"] for p in pts],
                            [p["perplexity_max"] for p in pts], color=line.get_color(), alpha=0.15, linewidth=0)
    target = next(iter(data["steps_saved"].values()))["target"]
    ax.axhline(target, color="grey", linestyle="--", linewidth=0.8, label=f"scratch final ({target:.1f})")
    ax.set_yscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel(f"held-out perplexity ({data['objective'].upper()})")
    seeds = data.get("seeds", [0])
    ax.set_title(f"{data['method']} · {data['lang']} · source {data['source_model']}"
                 + (f"\nmean of {len(seeds)} pretraining seeds (band: min–max)" if len(seeds) > 1 else ""),
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
