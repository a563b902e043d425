"""TreLM as a method (docs/methods/trelm.md): the pre-flight's bad-input messages, Stage E/F/H batch
plans, the matched scratch run's token budget and init, and the downstream head hook for every task
type. The whole pipeline on real data is tests/test_e2e_trelm.py (slow)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from xbench.cards import get_task
from xbench.errors import XbenchError
from xbench.methods.base import RunContext
from xbench.methods.trelm import TrelmMethod, TrelmScratchMethod
from xbench.methods.trelm.downstream import MODEL_DIR, SHELL_DIR, trelm_head, write_encoder_folder
from xbench.methods.trelm.method import mix_lines
from xbench.methods.trelm.scratch import random_trelm
from xbench.models.trelm import XX, create_trelm, load_trelm
from xbench.profiles import load_profile
from xbench.stages.trelm import CdlmExamples, TaggedLines, line_windows, steps_for_tokens, tagged_lines
from xbench.vocab.wordpiece import train_wordpiece

REPO = Path(__file__).resolve().parent.parent
LINES = ["The house is small and old .", "Das Haus ist klein und alt .", "A dog sees the big house .",
         "Ein Hund sieht das große Haus .", "Über die Brücke gehen wir .", "We walk over the bridge ."] * 4


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _ctx(model: str = "xbench/tiny-en-bert", data_dir: Path | None = None, langs: tuple[str, ...] = ("de",),
         **params: object) -> RunContext:
    return RunContext(profile=load_profile("smoke"), model=model, data_dir=data_dir, params=dict(params),
                      langs=list(langs))


def _parallel_root(root: Path, de_side: list[str] | None = None) -> Path:
    """A data root whose only en–de text is a 10-line Tatoeba pair (de side given, English fixed)."""
    en = [f"This is English sentence number {i} ." for i in range(10)]
    de = de_side if de_side is not None else [f"Das ist der deutsche Satz Nummer {i} ." for i in range(10)]
    _write(root / "tatoeba" / "tatoeba.deu-eng.eng", "\n".join(en) + "\n")
    _write(root / "tatoeba" / "tatoeba.deu-eng.deu", "\n".join(de) + "\n")
    return root


def _bert_folder(folder: Path, layers: int) -> Path:
    tok = train_wordpiece(LINES, 60)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=8, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=64, architectures=["BertForMaskedLM"])
    BertForMaskedLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------- bad input, before any work


def test_an_odd_layer_count_is_refused_in_the_preflight(tmp_path: Path) -> None:
    folder = _write(tmp_path / "odd" / "config.json", json.dumps({"model_type": "bert", "num_hidden_layers": 3})).parent
    problems = TrelmMethod(_ctx(str(folder), _parallel_root(tmp_path / "root"))).preflight_problems()
    assert problems == [f"method 'trelm' needs a source BERT with an even number of layers (the TRILayer is inserted "
                        f"after layer L/2 − 1 and Stage F freezes one half), but --model {folder} has 3"]


def test_a_source_that_is_not_a_bert_is_refused_in_the_preflight(tmp_path: Path) -> None:
    problems = TrelmMethod(_ctx("xbench/tiny-en-gpt2", _parallel_root(tmp_path / "root"))).preflight_problems()
    assert len(problems) == 1
    assert problems[0].startswith("method 'trelm' transfers a BERT masked LM (model_type 'bert'), but --model "
                                  "xbench/tiny-en-gpt2 is model_type 'gpt2'")
    # scratch-trelm builds TreLM's architecture from the same source, so it refuses it alike
    assert TrelmScratchMethod(_ctx("xbench/tiny-en-gpt2", _parallel_root(tmp_path / "root"))).preflight_problems()


def test_an_empty_parallel_corpus_is_refused_in_the_preflight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XBENCH_DATA", raising=False)  # the shared data root would add its real pairs
    empty = _parallel_root(tmp_path / "empty", de_side=[""] * 10)  # every pair has an empty German side
    (problem,) = TrelmMethod(_ctx(data_dir=empty)).preflight_problems()
    assert problem.startswith("method 'trelm' (Stage F) needs English–de sentence pairs, but the parallel corpus is "
                              "empty (files: tatoeba/tatoeba.deu-eng.deu, tatoeba/tatoeba.deu-eng.eng")
    assert "'empty': 8" in problem  # the training part (first 80%) of the 10 lines, all dropped
    _write(tmp_path / "none" / "xnli" / "dev" / "en.tsv", "a\tb\tneutral\n")
    (problem,) = TrelmMethod(_ctx(data_dir=tmp_path / "none")).preflight_problems()
    assert problem.startswith("method 'trelm' (Stage F) needs English–de sentence pairs: no parallel text for en–de")


def test_a_missing_aligner_is_refused_in_the_preflight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "eflomal" else real(name, *a))
    (problem,) = TrelmMethod(_ctx(data_dir=_parallel_root(tmp_path / "root"))).preflight_problems()
    assert problem.startswith("method 'trelm' aligns its parallel pairs for Stage F: the word aligner 'eflomal' "
                              "needs the Python package 'eflomal', which is not installed. Install it with: pip install "
                              "eflomal==2.0.0")


def test_english_is_not_a_target(tmp_path: Path) -> None:
    problems = TrelmMethod(_ctx(data_dir=_parallel_root(tmp_path / "root"), langs=("en", "de"))).preflight_problems()
    assert problems == ["method 'trelm' builds English→xx models from an English source: 'en' is its source language, "
                        "not a target; leave it out of --langs"]


def test_the_run_stops_before_any_work_with_one_message(tmp_path: Path) -> None:
    # Through the CLI: exit 2, the message, no traceback, no cache entry and no result.
    root = _parallel_root(tmp_path / "root")
    rows = "".join(f"premise {i}\thypothesis {i}\t{('entailment', 'neutral', 'contradiction')[i % 3]}\n"
                   for i in range(2490))
    _write(root / "xnli" / "dev" / "en.tsv", rows)
    _write(root / "xnli" / "dev" / "de.tsv", rows)
    _write(root / "xnli" / "test" / "de.tsv", "".join(rows.splitlines(keepends=True)[:30]))
    model = _bert_folder(tmp_path / "odd-bert", layers=3)
    env = {**{k: v for k, v in os.environ.items() if k not in ("XBENCH_DATA", "COLUMNS")},
           "PYTHONPATH": str(REPO), "XBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "xbench", "run", "--method", "trelm", "--task", "xnli", "--langs", "de",
                           "--model", str(model), "--data-dir", str(root), "--output-dir", str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "needs a source BERT with an even number of layers" in proc.stderr and "has 3" in proc.stderr
    assert "problems:" not in proc.stderr and "Traceback" not in proc.stderr  # that one problem, nothing else
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


# ----------------------------------------------------------------------------- stage plans


def test_long_lines_are_cut_into_windows_of_block_minus_two() -> None:
    assert line_windows(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert line_windows([], 3) == []
    tok = train_wordpiece(LINES, 60)
    plan = tagged_lines(tok, [(0, ["a b c d e f g h i j k l"]), (1, LINES[:3])], seq_len=6, batch_size=2, seed=0)
    assert max(len(ids) for ids in plan.ids) <= 6
    assert all(ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id for ids in plan.ids)
    first = [ids[1:-1] for lang, ids in zip(plan.langs, plan.ids) if lang == 0]
    assert sum(first, []) == tok("a b c d e f g h i j k l", add_special_tokens=False)["input_ids"]


def test_tagged_lines_pad_per_batch_and_count_only_real_tokens() -> None:
    plan = TaggedLines([(0, [2, 7, 3]), (1, [2, 8, 9, 10, 3]), (1, [2, 3]), (0, [2, 5, 3])], batch_size=2, seed=1,
                       pad_id=0)
    assert plan.batches(0) == plan.batches(0) and plan.batches(0) != plan.batches(1)
    assert len(plan.batches(0)) == 2
    item = plan.batches(0)[0]
    batch = plan.collate(item)
    assert batch["input_ids"].shape == (2, max(len(plan.ids[i]) for i in item))
    assert int(batch["attention_mask"].sum()) == plan.item_tokens(item)
    assert batch["lang_ids"].tolist() == [[plan.langs[i]] for i in item]
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()


def test_steps_for_tokens_stops_at_the_first_step_that_reaches_the_budget() -> None:
    plan = TaggedLines([(1, [2] + [5] * k + [3]) for k in range(1, 9)], batch_size=2, seed=0, pad_id=0)
    per_epoch = [plan.item_tokens(b) for b in plan.batches(0)]
    assert steps_for_tokens(plan, 1) == 1
    assert steps_for_tokens(plan, sum(per_epoch)) == len(per_epoch)
    assert steps_for_tokens(plan, sum(per_epoch) + 1) == len(per_epoch) + 1  # into the next epoch
    # with accumulation a step takes several micro-batches: the budget's micro-batches, rounded up
    assert steps_for_tokens(plan, sum(per_epoch), grad_accum=2) == -(-len(per_epoch) // 2)
    assert steps_for_tokens(plan, sum(per_epoch) + 1, grad_accum=3) == -(-(len(per_epoch) + 1) // 3)
    with pytest.raises(XbenchError):
        steps_for_tokens(plan, 0)


def test_stage_f_batches_mask_the_same_way_every_time() -> None:
    from xbench.objectives.cdlm import CdlmCollator, CdlmFeatures, stage_f_examples

    tok = train_wordpiece(LINES, 60)
    feats = [CdlmFeatures(src_ids=(2, 10 + i, 11, 3, 0), tgt_ids=(2, 12, 13 + i, 3), align_index=(0, 2, 1, 3),
                          src_lang=0, tgt_lang=1) for i in range(8)]
    examples = stage_f_examples(feats, tok.pad_token_id)
    plan = CdlmExamples(examples, CdlmCollator.for_tokenizer(tok), batch_size=4, seed=3)
    items = plan.batches(0)
    assert len(items) == 4 and sorted(i for _, _, idx in items for i in idx) == list(range(16))
    a, b = plan.collate(items[1]), plan.collate(items[1])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stage_e_mixes_the_pools_by_line_share() -> None:
    en, xx = [f"en {i}" for i in range(100)], [f"xx {i}" for i in range(30)]
    a, b = mix_lines(en, xx, 0.5, 0)
    assert len(a) == len(b) == 30 and b == xx and set(a) <= set(en)
    assert mix_lines(en, xx, 0.5, 0) == (a, b) and mix_lines(en, xx, 0.5, 1)[0] != a
    a, b = mix_lines(en, xx, 0.75, 0)
    assert (len(a), len(b)) == (90, 30)
    assert mix_lines(en, xx, 0.0, 0) == ([], xx) and mix_lines(en, xx, 1.0, 0) == (en, [])


def test_scratch_trelm_is_the_trelm_architecture_with_berts_initialisation() -> None:
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, pad_token_id=0)
    a, b = random_trelm(config, seed=4), random_trelm(config, seed=4)
    assert a.num_transformer_layers == 3
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.tri_layer.attention.self.query.weight, random_trelm(config, seed=5).tri_layer.attention.self.query.weight)
    w = a.encoder.layer[0].intermediate.dense.weight
    assert abs(float(w.detach().std()) - 0.02) < 0.004
    assert float(a.encoder.layer[0].intermediate.dense.bias.detach().abs().sum()) == 0
    assert float(a.embeddings.word_embeddings.weight[0].detach().abs().sum()) == 0  # the pad row
    state = torch.random.get_rng_state()
    random_trelm(config, seed=4)
    assert torch.equal(state, torch.random.get_rng_state())


# ----------------------------------------------------------------------------- downstream


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = train_wordpiece(LINES, 80, strip_accents=True)
    torch.manual_seed(0)
    source = BertForMaskedLM(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=32, max_position_embeddings=64))
    model = create_trelm(source, torch.randn(len(tok), 16), tok.pad_token_id, seed=0)
    folder = tmp_path_factory.mktemp("trelm-encoder")
    write_encoder_folder(model, tok, folder)
    return folder


def test_the_joint_tokenizer_strips_accents_and_keeps_case(encoder_folder: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(encoder_folder)
    assert tok.backend_tokenizer.normalizer.normalize_str("Über große Brücken") == "Uber große Brucken"


@pytest.mark.parametrize("task", ["xnli", "xquad", "panx", "ud"])
def test_every_task_types_head_sits_on_the_trelm_encoder_with_language_1(encoder_folder: Path, task: str) -> None:
    task_type = get_task(task).task_type_impl({})
    torch.manual_seed(1)
    model = trelm_head(str(encoder_folder), task_type)
    assert (encoder_folder / SHELL_DIR / "model.safetensors").stat().st_size < 20_000
    ids = torch.tensor([[2, 10, 11, 12, 3, 13, 3], [2, 14, 15, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    if task == "ud":
        inputs["word_index"] = torch.tensor([[-1, 0, 1, 1, -1, 2, -1], [-1, 0, 1, -1, -1, -1, -1]])
    model.eval()
    out = model(**inputs)
    field = {"xnli": "logits", "xquad": "start_logits", "panx": "logits", "ud": "arc"}[task]
    assert torch.isfinite(getattr(out, field)).all()
    # What the head reads is the TreLM encoder's top layer with language id 1, the TRILayer in place.
    encoder = next(m for m in model.modules() if type(m).__name__ == "TrelmDownstreamEncoder")
    reference = load_trelm(encoder_folder / MODEL_DIR).eval()
    want = reference(ids, mask, lang_ids=XX).last_hidden_state
    assert torch.allclose(encoder(**{k: inputs[k] for k in ("input_ids", "attention_mask")}).last_hidden_state, want)
    model.train()
    if task == "ud":  # the biaffine scorers start at zero (Dozat & Manning), which passes no gradient yet
        torch.nn.init.normal_(model.head.arc_attn.weight)
    scores = getattr(model(**inputs), field).float()
    weights = torch.randn(scores.shape, generator=torch.Generator().manual_seed(0))
    (scores.masked_fill(~torch.isfinite(scores), 0) * weights).sum().backward()  # a loss that reaches every score
    assert encoder.trelm.tri_layer.attention.self.query.weight.grad.abs().sum() > 0
    assert not any("mlm_head" in k for k in model.state_dict())


def test_a_task_model_without_one_bert_encoder_is_refused(encoder_folder: Path) -> None:
    from xbench.methods.trelm.downstream import swap_encoder

    with pytest.raises(XbenchError, match="has 0 BertModel children"):
        swap_encoder(torch.nn.Sequential(torch.nn.Linear(2, 2)), torch.nn.Identity())
