"""ppa and mlm-control end to end through the CLI on real data (docs/methods/ppa.md): XNLI de under the
code-switching protocol, smoke profile. The alignment stage runs at the smoke settings (so the encoder
is the one a smoke run builds, shared through the cache); fine-tuning is cut short with --set.
Asserted: both PPA losses are finite and went down (L_sent from the queue's first fill on), the stage's
compute counts the key pass as forward-only, retrieval is recorded before and after, the control saw
PPA's tokens, and the fine-tuning data was code-switched for both."""
from __future__ import annotations

import json
import math

import pytest

from tests.test_cli import xbench

pytestmark = pytest.mark.slow

FAST = ["--set", "finetune.max_steps=12", "--set", "finetune.eval_every=6"]
PROTOCOL = "translate-train-codeswitch"


def _result(out, method: str) -> dict:
    return json.loads((out / "xnli" / PROTOCOL / "smoke" / method / "xbench--tiny-multi-bert" / "seed-1.json").read_text())


def test_ppa_and_its_control_under_code_switched_fine_tuning(data_root, tmp_path):
    out, env = tmp_path / "res", {"XBENCH_DATA": str(data_root)}
    for method in ("ppa", "mlm-control"):
        proc = xbench("run", "--method", method, "--task", "xnli", "--langs", "de", "--protocol", PROTOCOL,
                      "--seeds", "1", "--output-dir", str(out), *FAST, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    ppa, control = _result(out, "ppa"), _result(out, "mlm-control")

    [stage] = ppa["compute"]["transfer"]
    assert stage["optimizer_steps"] == 200 and stage["extra"]["role"] == "transfer"
    for part in ("sent", "tlm"):
        trend = stage["extra"]["loss_parts"][part]
        assert math.isfinite(trend["loss_start"]) and math.isfinite(trend["loss_end"])
        assert trend["loss_decreased"], (part, trend)
    assert stage["extra"]["loss_parts"]["sent"]["from_step"] == 128 // 16 + 1
    assert 0.45 < stage["extra"]["en_query_share"] < 0.55
    n = stage["params"]["non_embedding"]
    assert stage["forward_only_tokens"] > 0
    assert stage["flops_est"] == 6.0 * n * stage["tokens_seen"] + 2.0 * n * stage["forward_only_tokens"]
    report = ppa["report"]
    assert set(report["retrieval"]) == set(report["retrieval_before"]) == {"de"}
    assert ppa["method"]["compared_with"] == "mlm-control" and ppa["model"]["name"] == "xbench/tiny-multi-bert"

    [run] = control["compute"]["transfer"]
    budget = run["extra"]["matched_tokens"]
    assert budget == stage["tokens_seen"]
    assert budget <= run["tokens_seen"] < budget + 16 * 131  # stops within the batch that reaches the budget
    assert run["extra"]["loss_decreased"]
    assert control["model"]["encoders"][0]["provenance"]["matches"] == ppa["model"]["encoders"][0]["key"]

    for result in (ppa, control):  # the protocol switched the training data of both, with the same draws
        data = result["task"]["data"]
        assert data["en/dev-train (code-switch originals)"]["files"][0]["path"] == "xnli/dev/en.tsv"
        switch = data["de/dev-train"]["selection"]["code_switch"]
        assert switch["p_switch"] == 0.5 and switch["seed"] == 1 and switch["originals"] == "en/dev-train"
    assert ppa["task"]["data"]["de/dev-train"] == control["task"]["data"]["de/dev-train"]
    lb = xbench("leaderboard", "--results-dir", str(out), "--output-dir", str(tmp_path / "lb"), env=env)
    assert lb.returncode == 0, lb.stderr
    md = (tmp_path / "lb" / "xnli.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| ppa |"))
    assert "vs mlm-control" in row and "retrieval de before" in md
    assert "code-switched training (p_switch 0.5, originals en/dev-train)" in row
