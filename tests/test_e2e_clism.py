"""clism and clism-mlm-control end to end through the CLI on real data (docs/methods/clism.md): MLQA de,
smoke profile. The pretraining stage runs at the smoke settings (so the encoder is the one a smoke run
builds, shared through the cache); fine-tuning is cut short with --set, except in the few-shot run,
whose 200 steps are the property under test. Asserted: the three losses are finite and went down, the
span finder and its PAN-X quality, the spans kept, the [QUE] head and question marker recorded as
fine-tuning changes, the control matched on tokens, and a few-shot run trains 200 steps on 64 questions."""
from __future__ import annotations

import json
import math

import pytest

from tests.test_cli import xbench

pytestmark = pytest.mark.slow

FAST = ["--set", "finetune.max_steps=12"]


def _result(out, method: str, variant: str = "") -> dict:
    protocol = "zero-shot" + (f"+{variant}" if variant else "")
    return json.loads((out / "mlqa" / protocol / "smoke" / method / "xbench--tiny-multi-xlmr" / "seed-1.json").read_text())


def test_clism_and_its_control_on_mlqa(data_root, tmp_path):
    out, env = tmp_path / "res", {"XBENCH_DATA": str(data_root)}
    for method in ("clism", "clism-mlm-control"):
        proc = xbench("run", "--method", method, "--task", "mlqa", "--langs", "de", "--seeds", "1",
                      "--output-dir", str(out), *FAST, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    clism, control = _result(out, "clism"), _result(out, "clism-mlm-control")

    [stage] = clism["compute"]["transfer"]
    assert stage["optimizer_steps"] == 300 and stage["extra"]["role"] == "transfer"
    for part in ("clism", "cacr", "mlm"):
        trend = stage["extra"]["loss_parts"][part]
        assert math.isfinite(trend["loss_start"]) and math.isfinite(trend["loss_end"])
        assert trend["loss_decreased"], (part, trend)
    built = stage["extra"]["examples_built"]
    assert built["span_finder"]["backend"] == "heuristic"
    assert 0.0 < built["span_finder_panx_en_dev"]["f1"] < 1.0
    assert built["pairs"] > 3000 and 0 < built["spans_kept"] <= built["spans_found"]
    assert built["aligner"]["aligner"]["backend"] == "eflomal"
    assert clism["method"]["finetune_changes"] == ["head: [QUE] span head (QueQA)",
                                                  "inputs: every question ends with [QUE]"]
    assert clism["method"]["compared_with"] == "clism-mlm-control"
    assert 0.0 <= clism["scores"]["per_language"]["de"]["f1"] <= 1.0

    [run] = control["compute"]["transfer"]
    budget = run["extra"]["matched_tokens"]
    assert budget == stage["tokens_seen"]
    assert budget <= run["tokens_seen"] < budget + 16 * 128  # stops within the batch that reaches the budget
    assert control["method"]["finetune_changes"] == []  # the standard span head
    assert control["model"]["encoders"][0]["provenance"]["matches"] == clism["model"]["encoders"][0]["key"]

    proc = xbench("run", "--method", "clism", "--task", "mlqa", "--langs", "de", "--seeds", "1",
                  "--option", "few_shot=64", "--output-dir", str(out), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    few = _result(out, "clism", "few_shot=64")
    [tuned] = few["compute"]["finetune"]
    assert tuned["optimizer_steps"] == 200
    selection = few["task"]["data"]["en/tydiqa-en-train"]["selection"]["few_shot"]
    assert selection["size"] == 64 and selection["seed"] == 1
