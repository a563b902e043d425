"""The QA cards end to end through the CLI on real data: XLT and G-XLT runs side by side, one shared
fine-tuning for MLQA and XQuAD, and the leaderboard's G-XLT matrix."""
from __future__ import annotations

import json

import pytest

from tests.test_cli import xbench
from xbench.registry import get_task

pytestmark = pytest.mark.slow

FAST = ["--set", "finetune.max_steps=12"]


def test_qa_cards_share_their_english_fine_tuning():
    fps = {name: get_task(name).task_type_impl({}).training_fingerprint(with_selection=False)
           for name in ("mlqa", "xquad", "tydiqa")}
    assert fps["mlqa"] == fps["xquad"] == fps["tydiqa"]
    with_sel = {name: get_task(name).task_type_impl({}).training_fingerprint(with_selection=True)
                for name in ("mlqa", "xquad")}
    assert with_sel["mlqa"] != with_sel["xquad"]  # selection scores with the card's own scorer


def test_mlqa_xlt_and_gxlt_then_xquad(data_root, tmp_path):
    out, env = tmp_path / "res", {"XBENCH_DATA": str(data_root), "XBENCH_CACHE": str(tmp_path / "cache")}
    base = ["--method", "source", "--seeds", "1", "--output-dir", str(out), *FAST]
    xlt = xbench("run", "--task", "mlqa", "--langs", "de,zh", *base, env=env)
    assert xlt.returncode == 0, xlt.stderr[-3000:]
    gxlt = xbench("run", "--task", "mlqa", "--langs", "de,zh", "--question-langs", "en,de", *base, env=env)
    assert gxlt.returncode == 0, gxlt.stderr[-3000:]
    xquad = xbench("run", "--task", "xquad", "--langs", "de", *base, env=env)
    assert xquad.returncode == 0, xquad.stderr[-3000:]
    assert "reused from the cache" in gxlt.stdout and "reused from the cache" in xquad.stdout

    root = out / "mlqa"
    r_xlt = json.loads((root / "zero-shot/smoke/source/xbench--tiny-en-bert/seed-1.json").read_text())
    r_g = json.loads((root / "zero-shot+question_langs=en,de/smoke/source/xbench--tiny-en-bert/seed-1.json").read_text())
    assert r_g["run"]["variant"] == "question_langs=en,de" and r_xlt["run"]["variant"] == ""
    assert set(r_g["scores"]["per_language"]) == {"de", "c=de,q=en", "c=zh,q=en", "c=zh,q=de"}
    # One fine-tuned model: the diagonal cell scores the same in both runs.
    assert r_g["scores"]["per_language"]["de"] == r_xlt["scores"]["per_language"]["de"]
    assert r_g["compute"]["finetune"][0]["reused"] and not r_xlt["compute"]["finetune"][0]["reused"]
    assert r_g["compute"]["finetune"][0]["cache_entry"] == r_xlt["compute"]["finetune"][0]["cache_entry"]
    assert r_xlt["scoring"]["training_data"][0]["answers_lost_to_truncation"] >= 0

    lb = xbench("leaderboard", "--results-dir", str(out), "--output-dir", str(tmp_path / "lb"), env=env)
    assert lb.returncode == 0, lb.stderr
    md = (tmp_path / "lb" / "mlqa.md").read_text()
    assert "## zero-shot (question_langs=en,de)" in md and "G-XLT matrix of `source`" in md
