"""Leaderboards a user can take elsewhere: one CSV per task (pandas) and a score-vs-compute plot.

The CSV has one row per table × method × unit (language, or a named average) × metric, long format,
from the same rows as the markdown: the per-seed values are aggregated with pandas (mean, sample std,
n) and the 95% interval of the mean over seeds is Student's t (mean ± t(0.975, n − 1) · std / √n;
empty for one seed). Where the row has a matched baseline, the paired test's Δ, interval and p-value
(results/significance.py) are in the same line.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from xbench.results.averages import LABELS

COLUMNS = ["task", "protocol", "profile", "model", "method", "kind", "metric", "unit", "mean", "std", "n", "seeds",
           "ci95_low", "ci95_high", "chance", "delta_vs", "delta", "delta_ci95_low", "delta_ci95_high", "p_value",
           "eval_split", "transfer_flops", "transfer_tokens"]


def _long_records(task: str, tables: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per table × row × unit × seed (the per-seed values the markdown aggregates)."""
    out = []
    for t in tables:
        for b in t["body"]:
            row = b["row"]
            units = {lang: {lang} for lang in t["langs"]}
            for name, _ in t["avg_cols"]:
                units[name] = set()
            for unit in units:
                per_seed = row.average_per_seed(t["avg_units"][unit]) if unit in LABELS else row.per_lang.get(unit, {})
                for seed, value in per_seed.items():
                    out.append({"task": task, "protocol": t["protocol"], "profile": t["profile"], "model": t["model"],
                                "method": row.method, "kind": row.kind, "metric": t["metric"], "unit": unit,
                                "seed": seed, "value": value})
    return out


def leaderboard_frame(task: str, tables: list[dict[str, Any]]) -> Any:
    """The CSV's rows as a pandas DataFrame (columns: COLUMNS)."""
    import pandas as pd
    from scipy.stats import t as student_t

    long = pd.DataFrame(_long_records(task, tables), columns=["task", "protocol", "profile", "model", "method", "kind",
                                                              "metric", "unit", "seed", "value"])
    keys = ["task", "protocol", "profile", "model", "method", "kind", "metric", "unit"]
    if long.empty:
        return pd.DataFrame(columns=COLUMNS)
    agg = (long.groupby(keys, sort=False)
           .agg(mean=("value", "mean"), std=("value", "std"), n=("value", "size"),
                seeds=("seed", lambda s: ",".join(map(str, sorted(s)))))
           .reset_index())
    agg["std"] = agg["std"].fillna(0.0)
    half = [student_t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
            for n, sd in zip(agg["n"], agg["std"])]
    agg["ci95_low"] = agg["mean"] - half
    agg["ci95_high"] = agg["mean"] + half
    extra = []
    for t in tables:
        for b in t["body"]:
            row = b["row"]
            compute = [c.get("transfer_total") for c in row.compute if isinstance(c.get("transfer_total"), dict)]
            for unit in [*t["langs"], *(n for n, _ in t["avg_cols"])]:
                paired = (b.get("paired") or {}).get("avg" if unit == t["card"] else unit)
                chance = t["chance_avgs"].get(unit) if unit in LABELS else t["chance"].get(unit)
                extra.append({"protocol": t["protocol"], "profile": t["profile"], "model": t["model"],
                              "method": row.method, "metric": t["metric"], "unit": unit, "chance": chance,
                              "delta_vs": b["delta_vs"] if paired else None,
                              "delta": paired["delta"] if paired else None,
                              "delta_ci95_low": paired["ci95"][0] if paired else None,
                              "delta_ci95_high": paired["ci95"][1] if paired else None,
                              "p_value": paired["p_value"] if paired else None,
                              "eval_split": ",".join(sorted(row.eval_splits)),
                              "transfer_flops": sum(c["flops_est"] for c in compute) / len(compute) if compute else None,
                              "transfer_tokens": sum(c["tokens_seen"] for c in compute) / len(compute) if compute else None})
    merged = agg.merge(pd.DataFrame(extra), on=["protocol", "profile", "model", "method", "metric", "unit"], how="left")
    return merged[COLUMNS]


def leaderboard_csv(task: str, tables: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    leaderboard_frame(task, tables).to_csv(buf, index=False, float_format="%.6g")
    return buf.getvalue()


def score_vs_compute_png(task: str, tables: list[dict[str, Any]]) -> bytes | None:
    """Card average (mean ± std over seeds) against transfer FLOPs per row, one panel per table; None when no
    row has both."""
    points = []
    for t in tables:
        for b in t["body"]:
            compute = [c.get("transfer_total") for c in b["row"].compute if isinstance(c.get("transfer_total"), dict)]
            flops = sum(c["flops_est"] for c in compute) / len(compute) if compute else 0.0
            if b["avg"] is not None:
                points.append((t, b["row"].method, max(flops, 1.0), b["avg"]))
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [t for t in tables if any(p[0] is t for p in points)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 3.2 * len(panels)), dpi=110, squeeze=False)
    for ax, t in zip(axes[:, 0], panels):
        for _, method, flops, avg in (p for p in points if p[0] is t):
            ax.errorbar([flops], [100 * avg.mean], yerr=[100 * avg.std], fmt="o", capsize=3)
            ax.annotate(method, (flops, 100 * avg.mean), textcoords="offset points", xytext=(5, 3), fontsize=8)
        if t["card"] in t["chance_avgs"]:
            ax.axhline(100 * t["chance_avgs"][t["card"]], color="grey", linestyle="--", linewidth=0.8, label="chance")
            ax.legend(fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("transfer compute (estimated FLOPs per seed; 1 = none)")
        ax.set_ylabel(f"{t['avg_label']} ({t['metric']} ×100)")
        ax.set_title(f"{task} · {t['protocol']} · {t['profile']} · {t['model']}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_exports(out_dir: Path, task: str, tables: list[dict[str, Any]]) -> list[Path]:
    from xbench.atomic import atomic_write_bytes, atomic_write_text

    written = [Path(out_dir) / f"{task}.csv"]
    atomic_write_text(written[0], leaderboard_csv(task, tables))
    png = score_vs_compute_png(task, tables)
    if png is not None:
        written.append(Path(out_dir) / f"{task}-compute.png")
        atomic_write_bytes(written[-1], png)
    return written
