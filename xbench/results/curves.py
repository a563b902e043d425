"""Learning curves read and drawn: "steps saved" against a scratch run, and the perplexity plot
(docs/protocols.md, "Steps saved"; docs/methods/clp.md, "Learning curves").

This module only computes on curves and draws them; the runs behind `xbench curves` are trained by
the method (xbench/methods/clp/curves.py).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from xbench.errors import XbenchError


def value_of(point: dict[str, Any], key: str) -> float:
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
    pts = sorted(((float(p[unit]), value_of(p, metric)) for p in method), key=lambda t: t[0])
    last = max(scratch, key=lambda p: p[unit])
    target = value_of(last, metric)
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


def mean_std(values: list[float]) -> tuple[float, float]:
    import statistics

    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


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
