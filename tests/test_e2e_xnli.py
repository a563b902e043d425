"""End to end through the CLI on real XNLI, with tiny budgets (--set) so it takes about a minute."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.test_cli import xbench
from xbench.models.source_models import TINY_MODELS
from xbench.results.schema import SCHEMA_VERSION

pytestmark = pytest.mark.slow

FAST = ["--set", "finetune.max_steps=12", "--set", "finetune.eval_every=6", "--set", "pretrain.mlm.max_steps=8"]


def test_source_and_scratch_runs_results_and_leaderboard(data_root, tmp_path):
    out = tmp_path / "res"
    env = {"XBENCH_DATA": str(data_root)}
    src = xbench("run", "--method", "source", "--task", "xnli", "--langs", "de,zh", "--seeds", "1",
                 "--output-dir", str(out), *FAST, env=env)
    assert src.returncode == 0, src.stderr[-3000:]
    path = out / "xnli" / "zero-shot" / "smoke" / "source" / "xbench--tiny-en-bert" / "seed-1.json"
    r = json.loads(path.read_text())
    assert r["schema_version"] == SCHEMA_VERSION and r["method"]["compared_with"] == "" and r["task"]["version"] == 1 and r["run"]["seed"] == 1
    assert set(r["scores"]["per_language"]) == {"de", "zh"}
    for lang in ("de", "zh"):
        s = r["scores"]["per_language"][lang]
        lines = (path.parent / "seed-1.predictions" / f"{lang}.jsonl").read_text().splitlines()
        preds = [json.loads(line) for line in lines]
        # One prediction per test pair (5,010, of which a third per class), and the score is their accuracy.
        assert s["n"] == len(preds) == 5010 and sorted(p["index"] for p in preds) == list(range(5010))
        assert sorted(Counter(p["gold"] for p in preds).values()) == [1670, 1670, 1670]
        assert s["accuracy"] == pytest.approx(sum(p["pred"] == p["gold"] for p in preds) / len(preds), abs=1e-12)
    assert r["scores"]["missing_languages"] and "en" in r["scores"]["missing_languages"]
    assert r["task"]["data"]["de/test"]["files"][0]["path"] == "xnli/test/de.tsv"
    assert len(r["task"]["data"]["de/test"]["files"][0]["sha256"]) == 64
    ft = r["compute"]["finetune"][0]
    n = ft["params"]["non_embedding"]
    assert ft["optimizer_steps"] == 12 and 0 < n < ft["params"]["total"]
    assert ft["flops_est"] == pytest.approx(6 * n * ft["tokens_seen"] + 2 * n * ft["forward_only_tokens"])
    assert 12 * 32 * 2 < ft["tokens_seen"] <= 12 * 32 * 128  # 12 batches of 32 pairs, unpadded, <= max_length
    # xbench built the source model, so its cost is known: packed MLM blocks, no padding.
    spec = TINY_MODELS["xbench/tiny-en-bert"]["pretrain"]
    assert [s["optimizer_steps"] for s in r["compute"]["source_pretraining"]] == [spec["max_steps"]]
    assert r["compute"]["source_pretraining_total"]["tokens_seen"] == spec["max_steps"] * spec["batch_size"] * spec["seq_len"]
    assert str(r["config"]["overrides"]["finetune.max_steps"]) == "12" and len(r["config_hash"]) == 64
    assert r["environment"]["libraries"]["torch"].startswith("2.13") and "commit" in r["environment"]["git"]
    assert r["selection"] and r["selection"][0]["step"] in (6, 12)
    curve = ft["extra"]["selection_evals"]  # every selection evaluation, the kept one among them
    assert [e["step"] for e in curve] == [6, 12] and r["selection"][0]["accuracy"] in [e["accuracy"] for e in curve]
    preds = (path.parent / "seed-1.predictions" / "de.jsonl").read_text().splitlines()
    assert set(json.loads(preds[0])) == {"index", "gold", "pred"}
    assert "Traceback" not in src.stderr

    again = xbench("run", "--method", "source", "--task", "xnli", "--langs", "de,zh", "--seeds", "1",
                   "--output-dir", str(out), *FAST, env=env)
    assert again.returncode == 2 and "already exist" in again.stderr
    skip = xbench("run", "--method", "source", "--task", "xnli", "--langs", "de,zh", "--seeds", "1",
                  "--output-dir", str(out), "--resume", *FAST, env=env)
    assert skip.returncode == 0 and "skipping" in skip.stdout

    scr = xbench("run", "--method", "scratch", "--task", "xnli", "--langs", "de", "--seeds", "1",
                 "--output-dir", str(out), *FAST, env=env)
    assert scr.returncode == 0, scr.stderr[-3000:]
    s = json.loads((out / "xnli" / "zero-shot" / "smoke" / "scratch" / "xbench--tiny-en-bert" / "seed-1.json").read_text())
    transfer = s["compute"]["transfer"][0]
    assert transfer["optimizer_steps"] == 8 and transfer["tokens_seen"] == 8 * 16 * 64
    assert transfer["extra"]["loss_start"] is not None and transfer["extra"]["loss_end"] is not None
    assert s["compute"]["source_pretraining_total"] == "unused"  # scratch uses no source weights
    # Same fine-tuning budget as the source run, on the same data.
    assert s["compute"]["finetune"][0]["optimizer_steps"] == 12
    assert s["task"]["data"]["de/test"] == r["task"]["data"]["de/test"]

    lb = xbench("leaderboard", "--results-dir", str(out), "--output-dir", str(tmp_path / "lb"), env=env)
    assert lb.returncode == 0, lb.stderr
    md = (tmp_path / "lb" / "xnli.md").read_text()
    assert "source (baseline)" in md and "scratch (baseline)" in md and "Task version 1" in md


def test_unknown_override_is_a_config_error(tmp_path):
    proc = xbench("run", "--method", "source", "--task", "xnli", "--langs", "de", "--set", "nosuch.key=1",
                  "--output-dir", str(tmp_path))
    assert proc.returncode == 2 and "--set nosuch.key: no such profile setting" in proc.stderr
    assert "Traceback" not in proc.stderr and not any(tmp_path.iterdir())  # refused before any work
