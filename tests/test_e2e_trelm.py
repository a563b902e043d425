"""trelm and scratch-trelm end to end through the CLI on real data (docs/methods/trelm.md): XNLI de
in-language under the smoke profile. Stages A–H run at the smoke defaults (so the encoder is the one a
smoke run builds, shared through the cache); fine-tuning is cut short with --set. Asserted: every
training stage's loss is finite and went down (E, both F runs, H), the result's compute holds a record
of every stage A–H with totals that add up, and scratch-trelm trained on the tokens of E + F + H."""
from __future__ import annotations

import json
import math

import pytest

from tests.test_cli import xbench

pytestmark = pytest.mark.slow

FAST = ["--set", "finetune.max_steps=12", "--set", "finetune.eval_every=6"]
STAGES = ["A", "B", "C", "D", "E", "F records", "F above-half", "F below-half", "G", "H"]
TRAINED = {"E": 150, "F above-half": 150, "F below-half": 150, "H": 300}  # docs/methods/trelm.md, "Defaults"


def _result(out, method: str) -> dict:
    return json.loads((out / "xnli" / "in-language" / "smoke" / method / "xbench--tiny-en-bert" / "seed-1.json").read_text())


def test_trelm_stages_a_to_h_and_its_matched_scratch_run(data_root, tmp_path):
    out, env = tmp_path / "res", {"XBENCH_DATA": str(data_root)}
    for method in ("trelm", "scratch-trelm"):
        proc = xbench("run", "--method", method, "--task", "xnli", "--langs", "de", "--protocol", "in-language",
                      "--seeds", "1", "--output-dir", str(out), *FAST, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    trelm, scratch = _result(out, "trelm"), _result(out, "scratch-trelm")

    stages = trelm["compute"]["transfer"]
    assert [s["extra"]["stage"] for s in stages] == STAGES
    for s in stages:
        if s["extra"]["stage"] in TRAINED:
            assert s["kind"] == "train" and s["optimizer_steps"] == TRAINED[s["extra"]["stage"]]
            assert s["tokens_seen"] > 0 and s["flops_est"] == 6.0 * s["params"]["non_embedding"] * s["tokens_seen"]
            assert math.isfinite(s["extra"]["loss_start"]) and math.isfinite(s["extra"]["loss_end"])
            assert s["extra"]["loss_decreased"], s  # mean of the last tenth of steps below the first tenth's
            assert s["extra"]["role"] == "transfer"
        else:  # tokenizer, static vectors, mapping, init, alignment, combination: timed, no FLOPs
            assert s["kind"] == "auxiliary" and s["flops_est"] is None and s["wall_seconds"] > 0
    assert stages[4]["params"]["trainable"] < stages[4]["params"]["total"]  # Stage E froze the original layers
    total = trelm["compute"]["transfer_total"]
    assert total["stages"] == len(STAGES)
    assert total["tokens_seen"] == sum(s["tokens_seen"] for s in stages)
    assert total["flops_est"] == pytest.approx(sum(s["flops_est"] or 0 for s in stages))
    assert total["wall_seconds"] == pytest.approx(sum(s["wall_seconds"] for s in stages), abs=0.01)
    assert trelm["method"]["compared_with"] == "scratch-trelm"
    assert trelm["method"]["finetune_changes"] == ["head: trelm-encoder"]
    enc = trelm["model"]["encoders"][0]["provenance"]
    assert enc["aligner"] == "eflomal" and enc["parallel"]["pairs"] > 3000 and enc["downstream"]["lang_id"] == 1
    assert trelm["compute"]["source_pretraining_total"]["tokens_seen"] > 0

    budget = sum(s["tokens_seen"] for s in stages if s["extra"]["stage"] in TRAINED)
    s_stages = scratch["compute"]["transfer"]
    assert [s["extra"]["stage"] for s in s_stages] == ["A", "scratch"]
    # the same joint tokenizer, one cache entry (the records differ only in the encoder they are listed under)
    assert {k: v for k, v in s_stages[0].items() if k != "encoder"} == {k: v for k, v in stages[0].items() if k != "encoder"}
    run = s_stages[1]
    assert run["extra"]["budget_tokens"] == budget
    assert budget <= run["tokens_seen"] < budget + 16 * 64  # stops within the batch that reaches the budget
    assert run["extra"]["loss_decreased"] and math.isfinite(run["extra"]["loss_end"])
    assert run["params"]["total"] == stages[4]["params"]["total"]  # the same L + 1-layer architecture
    assert scratch["model"]["encoders"][0]["provenance"]["matches"] == trelm["model"]["encoders"][0]["key"]
    assert scratch["method"]["kind"] == "baseline" and scratch["method"]["finetune_changes"] == ["head: trelm-encoder"]
    assert scratch["compute"]["source_pretraining_total"] == "unused"

    lb = xbench("leaderboard", "--results-dir", str(out), "--output-dir", str(tmp_path / "lb"), env=env)
    assert lb.returncode == 0, lb.stderr
    row = next(line for line in (tmp_path / "lb" / "xnli.md").read_text().splitlines() if line.startswith("| trelm |"))
    assert "vs scratch-trelm" in row
