"""CLISM+CACR's pieces (docs/methods/clism.md): the example builder on the toy bilingual world (spec
properties 1, 2, 7), the losses (3, 4), gradients (5), the few-shot sampler (6), the stage's kill and
resume, and the `[QUE]` QA head. Property 8 (the span finder) is in tests/test_spans.py."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from tests.helpers.toy_world import NAMES, toy_pairs
from xbench.objectives.clism import QueSpanHead, cacr_loss, clism_loss, segment_mean
from xbench.stages.clism import QUE_TOKEN, ClismArgs, ClismModule, ClismPlan, add_que_token, clism_parts
from xbench.stages.clism_examples import build_example, build_examples, target_spans


def _toy_spans(pair) -> list[tuple[int, int, str]]:
    """The toy world's known spans: the name (always first) and a number where the sentence has one."""
    spans = [(0, 1, "ENT")]
    spans += [(i, i + 1, "NUM") for i, w in enumerate(pair.source) if w.isdigit()]
    return spans


def _toy_tokenizer(kind: str = "wordpiece"):
    lines = [" ".join(p.source) for p in toy_pairs(300, seed=9)] + [" ".join(p.target) for p in toy_pairs(300, seed=9)]
    if kind == "unigram":
        from xbench.vocab.unigram import train_unigram

        tok = train_unigram(lines, 300)
    else:
        from xbench.vocab.wordpiece import train_wordpiece

        tok = train_wordpiece(lines, 300)
    tok.add_special_tokens({"additional_special_tokens": [QUE_TOKEN]})
    return tok


def _toy_examples(tok, n: int = 40, **kw):
    pairs = toy_pairs(n, seed=4)
    return build_examples([(p.source, p.target) for p in pairs], [_toy_spans(p) for p in pairs],
                          [p.alignment for p in pairs], tok, que_token=QUE_TOKEN,
                          max_len_each=kw.get("max_len_each", 64), max_len=kw.get("max_len", 128)), pairs


# ---------------------------------------------------------------------- the example builder (1, 2, 7)


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_que_count_equals_kept_spans_and_answers_decode_to_the_aligned_target_words(kind) -> None:
    tok = _toy_tokenizer(kind)
    que = tok.convert_tokens_to_ids(QUE_TOKEN)
    (examples, stats), pairs = _toy_examples(tok)
    assert stats.spans_kept == sum(len(_toy_spans(p)) for p in pairs)  # exact links, short sentences: all kept
    names = 0
    for ex, pair in zip(examples, pairs):
        assert ex.input_ids.count(que) == len(ex.answers) == len(_toy_spans(pair))  # property 1
        kept, _ = target_spans(_toy_spans(pair), pair.alignment)
        for (qpos, a0, a1), (_, _, t0, t1) in zip(ex.answers, kept):
            assert ex.input_ids[qpos] == que and ex.segments[qpos] == 0
            assert all(s == 1 for s in ex.segments[a0:a1 + 1])
            decoded = tok.decode(ex.input_ids[a0:a1 + 1]).split()
            assert decoded == pair.target[t0:t1]  # property 2, compared on the word sequence
        first = ex.answers[0]
        assert tok.decode(ex.input_ids[first[1]:first[2] + 1]).strip() in NAMES  # property 7: the known name
        names += 1
    assert names == len(pairs)


def test_a_span_truncated_away_leaves_no_que_and_no_clism_weight() -> None:
    tok = _toy_tokenizer()
    que = tok.convert_tokens_to_ids(QUE_TOKEN)
    pair = toy_pairs(1, seed=4)[0]
    # the name moved to the end of a long source sentence: cut off by max_len_each
    source = ["noun1"] * 30 + pair.source[:1]
    target = pair.target
    kept, _ = target_spans([(30, 31, "ENT")], [(30, 0)] + [(i, 1) for i in range(30)][:0])
    ex, dropped = build_example(source, target, kept, tok, que_token=QUE_TOKEN, max_len_each=12, max_len=64)
    assert que not in ex.input_ids and ex.answers == [] and dropped["truncated"] == 1
    # ... and a truncated answer undoes its [QUE]: the source words come back
    ex2, dropped2 = build_example(pair.source, ["x"] * 40 + pair.target, [(0, 1, 40, 41)], tok, que_token=QUE_TOKEN,
                                  max_len_each=12, max_len=64)
    assert que not in ex2.input_ids and ex2.answers == [] and dropped2["truncated"] == 1
    assert tok.decode(ex2.input_ids).split()[1] == pair.source[0]
    # zero CLISM weight: the loss of a batch with the [QUE]-less example equals the loss without it
    (examples, _), _ = _toy_examples(tok, n=4)
    model, head = _tiny_mlm(tok), QueSpanHead(16)
    module = ClismModule(model, head).eval()

    def loss(exs):
        batch = ClismPlan(exs, batch_size=len(exs), seed=0, pad_id=tok.pad_token_id).collate(list(range(len(exs))))
        return clism_parts(module, batch, batch["input_ids"], torch.full_like(batch["input_ids"], -100),
                           cacr_scale=20.0, restrict_to_target=False)["clism"]

    with torch.no_grad():
        assert abs(float(loss(examples[:2] + [ex])) - float(loss(examples[:2]))) < 1e-5


def test_mlm_never_selects_que_or_special_tokens() -> None:
    from types import SimpleNamespace

    from xbench.objectives.mlm import MLMObjective

    tok = _toy_tokenizer()
    que = tok.convert_tokens_to_ids(QUE_TOKEN)
    (examples, _), _ = _toy_examples(tok, n=32)
    batch = ClismPlan(examples, batch_size=32, seed=0, pad_id=tok.pad_token_id).collate(list(range(32)))
    mlm = MLMObjective.for_tokenizer(tok, mlm_prob=0.9)
    at_que = batch["input_ids"] == que
    assert at_que.sum() > 30
    for s in range(20):
        ids, labels = mlm.select(batch, SimpleNamespace(generator=torch.Generator().manual_seed(s)))
        assert (labels[at_que] == -100).all() and (ids[at_que] == que).all()
        assert (labels[batch["segments"] == -1] == -100).all()
        assert (labels != -100).sum() > 0


# ---------------------------------------------------------------------- the losses (3, 4, 5)


@pytest.mark.parametrize("restrict", [False, True])
def test_equal_logits_give_two_log_of_the_allowed_positions(restrict) -> None:
    tok = _toy_tokenizer()
    (examples, _), _ = _toy_examples(tok, n=6)
    batch = ClismPlan(examples, batch_size=6, seed=0, pad_id=tok.pad_token_id).collate(list(range(6)))
    head = QueSpanHead(8)
    torch.nn.init.zeros_(head.start.weight)
    torch.nn.init.zeros_(head.end.weight)
    hidden = torch.randn(*batch["input_ids"].shape, 8)
    allowed = batch["segments"] == 1 if restrict else batch["attention_mask"] == 1
    rows = batch["que_rows"]
    start, end = head(hidden, hidden[rows, batch["que_pos"]], rows, allowed)
    per_que = (torch.nn.functional.cross_entropy(start, batch["ans_start"], reduction="none")
               + torch.nn.functional.cross_entropy(end, batch["ans_end"], reduction="none"))
    sizes = allowed.sum(1)[rows].double()
    assert torch.allclose(per_que.double(), 2 * torch.log(sizes), atol=1e-5)
    with torch.no_grad():
        assert abs(float(clism_loss(start, end, batch["ans_start"], batch["ans_end"])) - float(per_que.mean())) < 1e-6


@pytest.mark.parametrize("b", [2, 8, 16])
def test_cacr_of_identical_orthonormal_rows_is_three_log_one_plus_b_minus_one_e_minus_20(b) -> None:
    q, _ = torch.linalg.qr(torch.randn(32, 32, dtype=torch.float64))
    rows = q[:b]
    terms = cacr_loss(rows, rows.clone(), rows.clone(), scale=20.0)
    total = sum(float(v) for v in terms.values())
    assert math.isclose(total, 3 * math.log(1 + (b - 1) * math.exp(-20)), rel_tol=1e-6, abs_tol=1e-12)
    assert total < 1e-6


def test_cacr_with_the_literal_temperature_stays_within_its_bounds() -> None:
    g = torch.Generator().manual_seed(0)
    for b in (2, 5, 16):
        low, high = math.log(1 + (b - 1) * math.exp(-0.1)), math.log(1 + (b - 1) * math.exp(0.1))
        for _ in range(20):
            terms = cacr_loss(*(torch.randn(b, 12, generator=g) for _ in range(3)), scale=1 / 20)
            assert all(low - 1e-6 <= float(v) <= high + 1e-6 for v in terms.values())


def test_segment_mean_pools_only_the_marked_positions() -> None:
    hidden = torch.arange(12, dtype=torch.float32).reshape(1, 4, 3)
    mask = torch.tensor([[0, 1, 1, 0]])
    assert segment_mean(hidden, mask).tolist() == [[4.5, 5.5, 6.5]]


def _tiny_mlm(tok):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    return BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32, max_position_embeddings=160))


def test_one_backward_pass_reaches_the_span_head_and_every_encoder_parameter() -> None:
    from types import SimpleNamespace

    from xbench.objectives.mlm import MLMObjective

    tok = _toy_tokenizer()
    (examples, _), _ = _toy_examples(tok, n=8)
    model = _tiny_mlm(tok)
    head = QueSpanHead(16)
    module = ClismModule(model, head)
    batch = ClismPlan(examples, batch_size=8, seed=0, pad_id=tok.pad_token_id).collate(list(range(8)))
    ids, labels = MLMObjective.for_tokenizer(tok).select(batch, SimpleNamespace(generator=torch.Generator().manual_seed(0)))
    parts = clism_parts(module, batch, ids, labels, cacr_scale=20.0, restrict_to_target=False)
    (parts["clism"] + parts["cacr"] + parts["mlm"]).backward()
    assert head.start.weight.grad.abs().sum() > 0 and head.end.weight.grad.abs().sum() > 0
    dead = [n for n, p in model.bert.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


def test_the_que_row_starts_as_the_mean_of_the_embedding_rows() -> None:
    from xbench.vocab.wordpiece import train_wordpiece

    tok = train_wordpiece([" ".join(p.source) for p in toy_pairs(100)], 200)
    model = _tiny_mlm(tok)
    mean = model.get_input_embeddings().weight.detach().mean(0).clone()
    tid = add_que_token(model, tok)
    assert QUE_TOKEN in tok.all_special_tokens and tid == len(tok) - 1
    assert torch.allclose(model.get_input_embeddings().weight[tid], mean)
    assert model.get_output_embeddings().weight.shape[0] == len(tok)  # tied decoder resized too


# ---------------------------------------------------------------------- the stage


def _stage_setup(folder: Path, steps: int):
    tok = _toy_tokenizer()
    (examples, _), _ = _toy_examples(tok, n=24)
    model = _tiny_mlm(tok)
    torch.manual_seed(1)
    head = QueSpanHead(16)
    plan = ClismPlan(examples, batch_size=4, seed=1, pad_id=tok.pad_token_id)
    args = ClismArgs(lr=2e-3, batch_size=4, max_steps=steps, seed=1)
    return model, head, plan, tok, args


def run_clism(folder: str, steps: int = 12):
    """The stage on the toy setup (also run in a subprocess by the kill-and-resume test)."""
    from xbench.stages.clism import train_clism

    model, head, plan, tok, args = _stage_setup(Path(folder), steps)
    return train_clism(model, head, plan, tok, args, Path(folder) / "run", name="clism test")


def test_a_killed_stage_resumes_to_the_same_losses(tmp_path) -> None:
    import signal
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    full, full_parts = run_clism(str(tmp_path / "full"))
    env = {**os.environ, "XBENCH_TEST_KILL_AT_STEP": "7", "PYTHONPATH": str(repo)}
    code = "import sys; from tests.test_clism import run_clism; run_clism(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "killed")], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    resumed, parts = run_clism(str(tmp_path / "killed"))
    assert len(resumed.losses) == 12
    assert max(abs(a - b) for a, b in zip(resumed.losses, full.losses)) < 1e-6
    for k in ("clism", "cacr", "mlm"):
        assert len(parts[k]) == 12 and max(abs(a - b) for a, b in zip(parts[k], full_parts[k])) < 1e-6
    # the passes with gradients: X twice (CLISM, masked copy) and the source sentence
    assert full.record.tokens_seen == sum(
        2 * len(e.input_ids) + len(e.source_ids) for e in _stage_setup(tmp_path / "x", 12)[2].examples) * 2


# ---------------------------------------------------------------------- few-shot sampler (6)


def test_few_shot_subsets_are_exact_and_repeatable() -> None:
    from xbench.data.fewshot import FEW_SHOT_SIZES, FEW_SHOT_STEPS, few_shot_indices

    assert FEW_SHOT_STEPS == 200
    for size in FEW_SHOT_SIZES:
        seen = set()
        for seed in range(1, 6):
            a = few_shot_indices(3696, size, seed)
            assert len(a) == len(set(a)) == size and a == few_shot_indices(3696, size, seed)
            assert all(0 <= i < 3696 for i in a)
            seen.add(tuple(a))
        assert len(seen) == 5  # five seeds, five samples
    from xbench.errors import XbenchError

    with pytest.raises(XbenchError, match="more examples"):
        few_shot_indices(10, 64, 1)


def test_few_shot_is_a_qa_option_that_fixes_two_hundred_steps() -> None:
    from xbench.cards import get_task
    from xbench.errors import ConfigError

    card = get_task("mlqa")
    task = card.task_type_impl({"few_shot": "64"})
    assert task.finetune_overrides() == {"max_steps": 200, "epochs": None}
    assert len(task.train_subset(1000, 1)) == 64 and task.train_subset(1000, 1) == task.train_subset(1000, 1)
    assert card.task_type_impl({}).train_subset(1000, 1) is None
    with pytest.raises(ConfigError, match="few_shot"):
        card.task_type_impl({"few_shot": "zero"})


# ---------------------------------------------------------------------- the [QUE] QA head


def test_questions_end_with_the_marker_even_when_cut() -> None:
    from xbench.data.squad import QAExample
    from xbench.tasktypes.qa_features import prepare_eval_features, prepare_train_features

    tok = _toy_tokenizer()
    que = tok.convert_tokens_to_ids(QUE_TOKEN)
    long_q = " ".join(["noun1"] * 40) + " ?"
    exs = [QAExample("a", "who verb1 the noun2 ?", "Anna verb1 the noun2 .", ("Anna",), (0,), ""),
           QAExample("b", long_q, "Ben verb2 a noun3 .", ("Ben",), (0,), "")]
    feats, _ = prepare_train_features(exs, tok, max_length=64, doc_stride=8, max_query_length=10,
                                      question_marker=QUE_TOKEN)
    for f in feats:
        sep = f["input_ids"].index(tok.sep_token_id)
        assert f["input_ids"][sep - 1] == que and f["input_ids"].count(que) == 1
        assert sep - 1 <= 10  # [CLS] + at most 10 question tokens, the marker among them
    assert tok.decode([feats[0]["input_ids"][i] for i in range(feats[0]["start_positions"],
                                                                feats[0]["end_positions"] + 1)]) == "Anna"
    plain = prepare_eval_features(exs, tok, max_length=64, doc_stride=8, max_query_length=10)
    assert all(que not in f["input_ids"] for f in plain)


def test_que_qa_reads_the_question_marker_and_masks_padding(tmp_path) -> None:
    from safetensors.torch import save_file

    from xbench.models.heads.que_qa import HEAD_FILE, QueQA, que_qa_model

    tok = _toy_tokenizer()
    model = _tiny_mlm(tok)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    from xbench.errors import XbenchError

    with pytest.raises(XbenchError, match=HEAD_FILE):
        que_qa_model(str(tmp_path))
    save_file(QueSpanHead(16).state_dict(), str(tmp_path / HEAD_FILE))
    qa = que_qa_model(str(tmp_path))
    assert isinstance(qa, QueQA)
    enc = tok(["who verb1 ?" + QUE_TOKEN, "who ?" + QUE_TOKEN], ["Anna verb1 the noun2 .", "Ben ."], padding=True,
              return_tensors="pt")
    out = qa(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
    assert out.start_logits.shape == enc["input_ids"].shape
    pad = enc["attention_mask"] == 0
    assert pad.any() and (out.start_logits[pad] == torch.finfo(out.start_logits.dtype).min).all()
    assert torch.isfinite(out.end_logits[~pad]).all()
    with pytest.raises(XbenchError, match="no \\[QUE\\]"):
        bare = tok(["who ?"], ["Ben ."], return_tensors="pt")
        qa(bare["input_ids"], bare["attention_mask"])


# ---------------------------------------------------------------------- the panx span finder


def test_the_panx_tagger_is_trained_once_and_finds_filtered_spans(tmp_path, data_root, monkeypatch) -> None:
    from xbench.data.panx import read_panx
    from xbench.stages.tagger import TaggerArgs, panx_span_finder
    from xbench.vocab.wordpiece import train_wordpiece

    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    sentences = read_panx(data_root / "panx" / "train-en.tsv.gz")[:3000]
    tok = train_wordpiece([" ".join(w) for w, _ in sentences], 800)
    _tiny_mlm(tok).save_pretrained(tmp_path / "src")
    tok.save_pretrained(tmp_path / "src")
    args = TaggerArgs(max_steps=15, batch_size=16)
    finder = panx_span_finder(str(tmp_path / "src"), {"name": "tiny"}, str(data_root), args)
    assert finder.name == "panx" and set(finder.quality) >= {"precision", "recall", "f1", "n_gold"}
    assert finder.quality["n_sentences"] == 10000 and 0.0 <= finder.quality["f1"] <= 1.0
    again = panx_span_finder(str(tmp_path / "src"), {"name": "tiny"}, str(data_root), args)
    assert again.entry == finder.entry  # the cache entry, not a second training
    words = ["Yesterday", "Tom", "Smith", "called", "Mary", "in", "Berlin", "."]
    for start, end, typ in finder.find(words):
        assert 0 <= start < end <= len(words) and end - start <= 10 and typ in ("PER", "ORG", "LOC")
        assert (start, end) != (0, len(words))


# ---------------------------------------------------------------------- the inputs hook


def test_the_inputs_hook_is_recorded_keyed_and_refused_where_the_task_cannot_make_it() -> None:
    from xbench.cards import get_task
    from xbench.errors import XbenchError
    from xbench.methods.base import FinetuneHooks

    hooks = FinetuneHooks(inputs={"question_marker": QUE_TOKEN}, inputs_name="questions end with [QUE]")
    assert hooks.changes() == ["inputs: questions end with [QUE]"]
    assert hooks.cache_key()["inputs"] == {"question_marker": QUE_TOKEN}
    with pytest.raises(TypeError, match="inputs_name"):
        FinetuneHooks(inputs={"question_marker": QUE_TOKEN}).changes()
    qa = get_task("xquad").task_type_impl({})
    plain = qa._window_settings()
    qa.set_method_inputs({"question_marker": QUE_TOKEN})
    assert qa._window_settings() == {**plain, "question_marker": QUE_TOKEN}  # its own feature-cache key
    with pytest.raises(XbenchError, match="cannot change its inputs by question_marker"):
        get_task("xnli").task_type_impl({}).set_method_inputs({"question_marker": QUE_TOKEN})


def test_clism_on_a_card_without_question_marker_runs_with_the_standard_head() -> None:
    from xbench.cards import get_task
    from xbench.methods.base import RunContext
    from xbench.methods.clism import ClismMethod, ClismSpanHeadMethod
    from xbench.profiles import load_profile

    ctx = RunContext(profile=load_profile("smoke"), model="xbench/tiny-multi-xlmr", data_dir=None, params={},
                     langs=["de"])
    assert ClismMethod(ctx).finetune_hooks(get_task("panx").task_type_impl({})) is None
    hooks = ClismMethod(ctx).finetune_hooks(get_task("mlqa").task_type_impl({}))
    assert hooks.inputs == {"question_marker": QUE_TOKEN} and hooks.head is not None
    assert ClismSpanHeadMethod(ctx).finetune_hooks(get_task("mlqa").task_type_impl({})) is None
