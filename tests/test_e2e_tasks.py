"""The QA cards end to end through the CLI on real data: XLT and G-XLT runs side by side, one shared
fine-tuning for MLQA and XQuAD, and the leaderboard's G-XLT matrix."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.test_cli import xbench
from xbench.cards import get_task

pytestmark = pytest.mark.slow

FAST = ["--set", "finetune.max_steps=12"]


def _question_ids(path: Path) -> list[str]:
    """The question ids of a SQuAD-format file, read directly (not through xbench's loader)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [qa["id"] for art in json.loads(raw)["data"] for par in art["paragraphs"] for qa in par["qas"]]


def _check_units(result: dict, pred_dir: Path, data_root: Path) -> None:
    """Every unit has one prediction per question of its evaluation file, and scores on the 0-100 scale."""
    split = result["run"]["eval_split"]
    for unit, score in result["scores"]["per_language"].items():
        files = result["task"]["data"][f"{unit}/{split}"]["files"]
        assert len(files) == 1, files
        ids = _question_ids(Path(files[0].get("root", data_root)) / files[0]["path"])
        preds = [json.loads(line) for line in (pred_dir / f"{unit}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert sorted(p["id"] for p in preds) == sorted(ids) and score["n"] == len(ids), unit
        assert 0.0 <= score["exact_match"] <= score["f1"] <= 100.0, (unit, score)  # EM never exceeds F1


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
    # Shared data: trained on the English TyDiQA-GoldP train file, every question of it.
    (trained,) = r_xlt["scoring"]["training_data"]
    assert trained["dataset"] == "tydiqa-goldp" and trained["lang"] == "en"
    n_train = len(_question_ids(data_root / "tydiqa_goldp" / "train" / "tydiqa.goldp.en.train.json"))
    assert trained["n_examples"] == n_train and trained["n_features"] >= n_train  # >= 1 window per question
    # An answer is lost only if it is whole in no window, i.e. longer than the ~190-token overlap of
    # two 384-token windows at stride 128; GoldP answers are short, so at most a handful.
    assert 0 <= trained["answers_lost_to_truncation"] <= n_train // 100
    for r, variant in ((r_xlt, "zero-shot"), (r_g, "zero-shot+question_langs=en,de")):
        _check_units(r, root / variant / "smoke/source/xbench--tiny-en-bert/seed-1.predictions", data_root)

    lb = xbench("leaderboard", "--results-dir", str(out), "--output-dir", str(tmp_path / "lb"), env=env)
    assert lb.returncode == 0, lb.stderr
    md = (tmp_path / "lb" / "mlqa.md").read_text()
    assert "## zero-shot (question_langs=en,de)" in md and "G-XLT matrix of `source`" in md
