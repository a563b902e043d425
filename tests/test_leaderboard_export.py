"""CSV leaderboards (pandas), the score-vs-compute plot and the chance row (xbench/results/export.py, chance.py)."""
import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures_results import write_result
from xbench.results.export import COLUMNS, leaderboard_csv, score_vs_compute_png
from xbench.results.leaderboard import build_tables, render_markdown, write_leaderboards
from xbench.results.schema import iter_results


def _with_predictions(root: Path, method: str, kind: str, seed: int, golds: list[str], preds: dict[str, list[str]],
                      **kw) -> None:
    scores = {u: sum(g == p for g, p in zip(golds, ps)) / len(golds) for u, ps in preds.items()}
    path = write_result(root, method, kind, seed, scores, **kw)
    folder = path.with_suffix("").with_name(path.stem + ".predictions")
    folder.mkdir()
    for unit, ps in preds.items():
        (folder / f"{unit}.jsonl").write_text("".join(json.dumps({"index": i, "gold": g, "pred": p}) + "\n"
                                                      for i, (g, p) in enumerate(zip(golds, ps))))


def _world(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = ["entailment", "neutral", "contradiction"]
    golds = [labels[i % 3] for i in range(300)]
    golds[:60] = ["neutral"] * 60  # majority class: neutral, 140 of 300
    for seed in (1, 2, 3):
        good = {u: [g if rng.random() < 0.7 else "entailment" for g in golds] for u in ("de", "zh")}
        _with_predictions(tmp_path, "clp", "transfer", seed, golds, good, flops=2e12, tokens=10**6)
        _with_predictions(tmp_path, "scratch", "baseline", seed, golds, {u: ["neutral"] * 300 for u in ("de", "zh")})


def test_csv_has_one_line_per_method_unit_and_metric_with_mean_std_n_and_intervals(tmp_path: Path):
    _world(tmp_path / "results")
    tables = build_tables(iter_results(tmp_path / "results"), ["de", "zh"])
    rows = list(csv.DictReader(io.StringIO(leaderboard_csv("xnli", tables))))
    assert list(rows[0]) == COLUMNS
    assert {(r["method"], r["unit"]) for r in rows} == {(m, u) for m in ("clp", "scratch") for u in ("de", "zh", "xlt")}
    clp_de = next(r for r in rows if r["method"] == "clp" and r["unit"] == "de")
    assert int(clp_de["n"]) == 3 and clp_de["seeds"] == "1,2,3"
    per_seed = [r["scores"]["per_language"]["de"]["accuracy"] for r in iter_results(tmp_path / "results")
                if r["method"]["name"] == "clp"]
    mean, sd = np.mean(per_seed), np.std(per_seed, ddof=1)
    assert float(clp_de["mean"]) == pytest.approx(mean, rel=1e-5) and float(clp_de["std"]) == pytest.approx(sd, rel=1e-5)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, 2)
    assert float(clp_de["ci95_low"]) == pytest.approx(mean - half, rel=1e-4)
    assert float(clp_de["chance"]) == pytest.approx(140 / 300, rel=1e-5)
    assert clp_de["delta_vs"] == "scratch" and float(clp_de["p_value"]) < 0.01
    scratch = next(r for r in rows if r["method"] == "scratch" and r["unit"] == "xlt")
    assert scratch["delta"] == "" and scratch["ci95_low"] != ""


def test_the_markdown_shows_chance_and_flags_a_row_within_noise_of_it(tmp_path: Path):
    _world(tmp_path)
    md = render_markdown("xnli", build_tables(iter_results(tmp_path), ["de", "zh"]), card_version=1)
    chance = next(line for line in md.splitlines() if line.startswith("| *chance: majority class* |"))
    assert chance.split("|")[2].strip() == "46.7"
    scratch = next(line for line in md.splitlines() if line.startswith("| scratch (baseline) |"))
    clp = next(line for line in md.splitlines() if line.startswith("| clp |"))
    assert "near chance (majority class 46.7)" in scratch and "near chance" not in clp


def test_write_leaderboards_writes_csv_and_a_compute_plot_beside_the_markdown(tmp_path: Path):
    _world(tmp_path / "results")
    write_leaderboards(tmp_path / "results", tmp_path / "lb")
    assert sorted(p.name for p in (tmp_path / "lb").iterdir()) == ["xnli-compute.png", "xnli.csv", "xnli.md"]
    assert (tmp_path / "lb" / "xnli-compute.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert score_vs_compute_png("xnli", []) is None
