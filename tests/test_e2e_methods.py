"""clp and meta end to end through the CLI on real data, as a user runs them: the method, its matched
baseline, the leaderboard. Pretraining runs at the smoke defaults (the encoders are the CI smoke
suite's, shared through the cache); fine-tuning is cut short with --set."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.test_cli import xbench
from xbench.models.source_models import TINY_MODELS

pytestmark = pytest.mark.slow

FAST = ["--set", "finetune.max_steps=12", "--set", "finetune.eval_every=6"]


def _result(out, method: str, task: str = "xnli", protocol: str = "zero-shot") -> dict:
    return json.loads((out / task / protocol / "smoke" / method / "xbench--tiny-en-bert" / "seed-1.json").read_text())


def _run_pair(out, env: dict, methods: tuple[str, str], langs: str) -> None:
    for method in methods:
        proc = xbench("run", "--method", method, "--task", "xnli", "--langs", langs, "--seeds", "1",
                      "--output-dir", str(out), *FAST, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]


def _leaderboard(out, tmp_path, env: dict) -> str:
    lb = xbench("leaderboard", "--results-dir", str(out), "--output-dir", str(tmp_path / "lb"), env=env)
    assert lb.returncode == 0, lb.stderr
    return (tmp_path / "lb" / "xnli.md").read_text()


def _gold_arcs(path: Path) -> list[list[tuple[int, str]]]:
    """(head, universal relation) of every word of every sentence, read directly from the CoNLL-U file."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    sentences, words = [], []
    for line in raw.decode("utf-8").splitlines():
        if not line.strip():
            if words:
                sentences.append(words)
            words = []
        elif not line.startswith("#"):
            cols = line.split("\t")
            if cols[0].isdigit():  # multi-word token ranges (1-2) and empty nodes (1.1) are not words
                words.append((int(cols[6]), cols[7].split(":")[0]))
    if words:
        sentences.append(words)
    return sentences


def _source_pretraining_tokens() -> int:
    spec = TINY_MODELS["xbench/tiny-en-bert"]["pretrain"]
    return spec["max_steps"] * spec["batch_size"] * spec["seq_len"]  # packed MLM blocks: no padding


def _train_stages(result: dict) -> list[dict]:
    return [s for s in result["compute"]["transfer"] if s["kind"] == "train"]


def test_clp_its_matched_scratch_and_parsing(data_root, tmp_path):
    out, env = tmp_path / "res", {"XBENCH_DATA": str(data_root)}
    _run_pair(out, env, ("clp", "scratch-clp"), "de")
    clp, scratch = _result(out, "clp"), _result(out, "scratch-clp")
    assert clp["method"]["compared_with"] == "scratch-clp" and scratch["method"]["kind"] == "baseline"
    roles = [s["extra"].get("role") for s in clp["compute"]["transfer"]]
    assert roles == ["tokenizer", "helper", "init", "transfer"]
    c_transfer, s_transfer = clp["compute"]["transfer"][-1], scratch["compute"]["transfer"][-1]
    assert c_transfer["tokens_seen"] == s_transfer["tokens_seen"] == 300 * 16 * 64  # docs/methods/clp.md, "Defaults"
    assert all(s["extra"]["loss_decreased"] for s in _train_stages(clp) + _train_stages(scratch))
    enc = clp["model"]["encoders"][0]["provenance"]
    assert [p["step"] for p in enc["curve"]] == [0, 25, 50, 100, 200, 300]
    assert scratch["model"]["encoders"][0]["provenance"]["matches"] == clp["model"]["encoders"][0]["key"]
    assert clp["compute"]["source_pretraining_total"]["tokens_seen"] == _source_pretraining_tokens()
    assert scratch["compute"]["source_pretraining_total"] == "unused"

    row = next(line for line in _leaderboard(out, tmp_path, env).splitlines() if line.startswith("| clp |"))
    assert "vs scratch-clp" in row

    ud = xbench("run", "--method", "clp", "--task", "ud", "--langs", "de", "--protocol", "in-language-lowres",
                "--seeds", "1", "--output-dir", str(out), *FAST, env=env)
    assert ud.returncode == 0, ud.stderr[-3000:]
    r = _result(out, "clp", "ud", "in-language-lowres")
    assert r["model"]["encoders"][0]["key"] == clp["model"]["encoders"][0]["key"]  # the cached encoder, reused
    assert r["run"]["train_langs"] == ["de"]
    # LAS recomputed from the prediction file and the gold treebank: with gold tokenisation it is
    # the share of words whose head and universal relation are both right.
    split = r["run"]["eval_split"]
    (gold_file,) = r["task"]["data"][f"de/{split}"]["files"]
    gold = _gold_arcs(Path(gold_file.get("root", data_root)) / gold_file["path"])
    pred_path = out / "ud" / "in-language-lowres" / "smoke" / "clp" / "xbench--tiny-en-bert" / "seed-1.predictions" / "de.jsonl"
    preds = [json.loads(line) for line in pred_path.read_text(encoding="utf-8").splitlines()]
    assert len(preds) == len(gold) and [len(p["heads"]) for p in preds] == [len(g) for g in gold]
    correct = sum(ph == h and pr.split(":")[0] == rel
                  for p, g in zip(preds, gold) for ph, pr, (h, rel) in zip(p["heads"], p["deprels"], g))
    assert r["scores"]["per_language"]["de"]["las"] == pytest.approx(correct / sum(map(len, gold)), abs=1e-9)


def test_meta_and_its_single_phase_baseline(data_root, tmp_path):
    out, env = tmp_path / "res", {"XBENCH_DATA": str(data_root)}
    _run_pair(out, env, ("meta", "meta-single"), "de,zh")
    meta, single = _result(out, "meta"), _result(out, "meta-single")
    m_train, s_train = _train_stages(meta), _train_stages(single)
    assert [s["extra"]["phase"] for s in m_train] == [1, 2]
    assert sum(s["optimizer_steps"] for s in m_train) == sum(s["optimizer_steps"] for s in s_train) == 600
    assert abs(sum(s["tokens_seen"] for s in m_train) - sum(s["tokens_seen"] for s in s_train)) < 16 * 64
    assert all(s["extra"]["loss_decreased"] for s in m_train + s_train)
    for r in (meta, single):
        rep = r["report"]
        assert set(rep["retrieval"]) == {"de", "zh"} and rep["english_split"] == "dev-heldout"
        assert rep["transfer_gap"] == pytest.approx(rep["english"] - rep["target_mean"])
        assert r["flags"]["xbench_reconstruction"]
    md = _leaderboard(out, tmp_path, env)
    assert "Transfer report" in md and "vs meta-single" in md
