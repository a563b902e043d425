"""The `clp` method end to end on a toy data root: stages, held-out hygiene, the encoder cache, the
matched controls (docs/methods/clp.md, docs/methods/baselines.md). The initialiser's own properties are in
test_clp.py and test_clp_langsfer.py.

The toy data root has the layout of the real one (xnli/, tatoeba/), so the pool builder, the
held-out split and the method run exactly as on real data, in seconds. Its helpers are imported by
test_meta.py and test_curves.py.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from xbench import cache
from xbench.errors import ConfigError, XbenchError
from xbench.methods.base import RunContext
from xbench.methods.clp.method import ClpMethod, ClpScratchMethod, _with_random_embeddings
from xbench.profiles import load_profile
from xbench.runner import trainer


@pytest.fixture(scope="module", autouse=True)
def _toy_root_only():
    # A data_dir adds to XBENCH_DATA; these tests read their toy root alone.
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("XBENCH_DATA", raising=False)
        yield

EN = ("the a cat dog house garden runs sees eats small big red green old young with and of to in on at is was "
      "teacher child water bread street city river morning evening quickly").split()
DE = ("der die das eine katze hund haus garten läuft sieht isst klein groß rot grün alt jung mit und von zu in auf "
      "ist war lehrer kind wasser brot straße stadt fluss morgen abend schnell").split()
NAMES = "Anna Berlin London Maria 1999 2024 42 Paris Tom".split()
TRANSLATE = dict(zip(EN, DE))

# Small enough for seconds on 2 cores; large enough that every stage runs for real.
FAST_CLP = {"steps": "6", "helper_steps": "4", "batch_size": "4", "seq_len": "16", "helper_vocab": "300",
            "helper_dim": "8", "helper_heads": "2", "warmup_steps": "2", "eval_steps": "0,3,6"}


def _sentence(rng: random.Random) -> list[str]:
    return [rng.choice(EN + NAMES) for _ in range(rng.randint(4, 10))]


def _de(words: list[str]) -> str:
    return " ".join(TRANSLATE.get(w, w) for w in words) + "."


def make_toy_root(root: Path, n: int = 700, seed: int = 0) -> Path:
    """xnli dev/test for en and de, and a 100-pair Tatoeba deu-eng file, all line-aligned translations."""
    rng = random.Random(seed)
    rows = [(_sentence(rng), _sentence(rng)) for _ in range(n)]
    for lang, render in (("en", lambda w: " ".join(w) + "."), ("de", _de)):
        for split, part in (("dev", rows[:-40]), ("test", rows[-60:])):  # 20 test rows also occur in dev
            path = root / "xnli" / split / f"{lang}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{render(p)}\t{render(h)}\tneutral\n" for p, h in part), encoding="utf-8")
    pairs = [_sentence(rng) for _ in range(100)]
    (root / "tatoeba").mkdir(exist_ok=True)
    (root / "tatoeba" / "tatoeba.deu-eng.deu").write_text("".join(_de(w) + "\n" for w in pairs), encoding="utf-8")
    (root / "tatoeba" / "tatoeba.deu-eng.eng").write_text("".join(" ".join(w) + ".\n" for w in pairs), encoding="utf-8")
    return root


def make_source(path: Path, kind: str) -> Path:
    """A tiny English source model saved like a hub checkpoint: BERT + WordPiece, or GPT-2 + byte-level BPE."""
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    from xbench.vocab.bpe import train_byte_bpe
    from xbench.vocab.wordpiece import train_wordpiece

    rng = random.Random(1)
    lines = [" ".join(_sentence(rng)) + "." for _ in range(400)]
    torch.manual_seed(0)
    if kind == "bert":
        tok = train_wordpiece(lines, 200)
        model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                                           pad_token_id=tok.pad_token_id))
    else:
        tok = train_byte_bpe(lines, 320, model_max_length=64)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=64,
                                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory) -> Path:
    return make_toy_root(tmp_path_factory.mktemp("toydata"))


@pytest.fixture(scope="session")
def bert_source(tmp_path_factory) -> Path:
    return make_source(tmp_path_factory.mktemp("bert-src"), "bert")


@pytest.fixture(scope="session")
def gpt2_source(tmp_path_factory) -> Path:
    return make_source(tmp_path_factory.mktemp("gpt2-src"), "gpt2")


def clp_method(source: Path, root: Path, cls: type = ClpMethod, **params: str):
    ctx = RunContext(profile=load_profile("smoke"), model=str(source), data_dir=str(root),
                     params={**FAST_CLP, **params})
    return cls(ctx)


class FitLog:
    """Wraps Runner.fit to record which stages trained and whether they found a checkpoint to resume."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[tuple[str, bool]] = []
        real = trainer.Runner.fit

        def fit(runner, *a, **kw):
            self.calls.append((runner.name, runner.latest_checkpoint() is not None))
            return real(runner, *a, **kw)

        monkeypatch.setattr(trainer.Runner, "fit", fit)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.calls]


@pytest.fixture(scope="module")
def built(toy_root, bert_source, tmp_path_factory):
    """One CLP build shared by the tests below, with the text each stage was given observed."""
    import xbench.stages.blocks as blocks
    import xbench.stages.lm as lm
    import xbench.vocab.wordpiece as wp

    seen: dict[str, list[list[str]]] = {"tokenizer": [], "train": [], "eval": []}
    real_wp, real_blocks = wp.train_wordpiece, blocks.packed_blocks

    def spy_wp(lines, *a, **kw):
        seen["tokenizer"].append(list(lines))
        return real_wp(lines, *a, **kw)

    def spy_blocks(tokenizer, lines, objective, **kw):
        seen["eval" if kw["batch_size"] == 1 else "train"].append(list(lines))
        return real_blocks(tokenizer, lines, objective, **kw)

    cache_root = tmp_path_factory.mktemp("clp-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XBENCH_CACHE", str(cache_root))
        mp.setattr(wp, "train_wordpiece", spy_wp)
        mp.setattr(blocks, "packed_blocks", spy_blocks)
        mp.setattr(lm, "packed_blocks", spy_blocks)  # PerplexityEval's own name for it
        method = clp_method(bert_source, toy_root)
        enc = method.build_encoder("de")
    return {"enc": enc, "method": method, "seen": seen, "cache": cache_root}


def test_clp_encoder_stages_and_records(built, bert_source, monkeypatch):
    monkeypatch.setenv("XBENCH_CACHE", str(built["cache"]))
    enc = built["enc"]
    roles = [(s["kind"], s["extra"].get("role")) for s in enc.stages]
    assert roles == [("auxiliary", "tokenizer"), ("train", "helper"), ("auxiliary", "init"), ("train", "transfer")]
    init, transfer = enc.stages[2], enc.stages[3]
    assert init["extra"]["clp"]["overlap"] > 0 and init["extra"]["clp"]["max_weight_sum_error"] < 1e-6
    assert transfer["optimizer_steps"] == 6 and transfer["tokens_seen"] == 6 * 4 * 16 and transfer["flops_est"] > 0
    assert [p["step"] for p in enc.provenance["curve"]] == [0, 3, 6]
    assert all(p["perplexity"] is not None and p["perplexity"] > 1 for p in enc.provenance["curve"])
    assert enc.uses_source_weights and enc.provenance["objective"] == "mlm"

    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(enc.path)
    helper_tok = AutoTokenizer.from_pretrained(cache.cache_root() / "stages" / enc.provenance["helper_entry"])
    assert tok.get_vocab() == helper_tok.get_vocab()  # the target tokenizer is the helper's
    model = AutoModelForMaskedLM.from_pretrained(enc.path)
    src = AutoModelForMaskedLM.from_pretrained(bert_source)
    assert model.config.vocab_size == len(tok) and model.config.num_hidden_layers == src.config.num_hidden_layers


def test_heldout_lines_reach_no_training_stage(built):
    """The held-out 5% (by line hash) is never tokenizer, helper or continued-pretraining text
    (docs/methods/clp.md, "Stages")."""
    target, seen = built["method"].target("de"), built["seen"]
    held = set(target.heldout)
    assert held and target.train and not held & set(target.train)
    assert sorted(target.train + target.heldout) == sorted(target.pool.lines)
    assert 0.01 < len(held) / len(target.pool.lines) < 0.12
    assert seen["tokenizer"] and len(seen["train"]) == 2  # the helper's stage and the transfer stage
    for lines in seen["tokenizer"] + seen["train"]:
        assert not held & set(lines)
    assert [set(x) for x in seen["eval"]] == [held]


def test_cache_reuses_rebuilds_and_resumes(built, toy_root, bert_source, monkeypatch, tmp_path):
    monkeypatch.setenv("XBENCH_CACHE", str(built["cache"]))
    log = FitLog(monkeypatch)
    first = built["enc"]
    again = clp_method(bert_source, toy_root).build_encoder("de")  # same config: the cached entry, no training
    assert again.path == first.path and log.calls == []

    changed = clp_method(bert_source, toy_root, steps="8", eval_steps="0,8").build_encoder("de")
    assert changed.path != first.path and changed.provenance["helper_entry"] == first.provenance["helper_entry"]
    assert log.names == ["clp mlm de"]  # the helper stage is a cached prefix

    # An interrupted build resumes from its last checkpoint and ends where an uninterrupted one does.
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "other-cache"))
    real_save = trainer.Runner._save_checkpoint

    class Interrupted(Exception):
        pass

    def save_then_die(runner, model, optimizer, scheduler, state, *rest, **kw):
        real_save(runner, model, optimizer, scheduler, state, *rest, **kw)
        if runner.name == "clp mlm de" and state["step"] == 3:
            raise Interrupted

    monkeypatch.setattr(trainer.Runner, "_save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        clp_method(bert_source, toy_root).build_encoder("de")
    monkeypatch.setattr(trainer.Runner, "_save_checkpoint", real_save)
    resumed = clp_method(bert_source, toy_root).build_encoder("de")
    assert log.calls[-1] == ("clp mlm de", True)  # it found the step-3 checkpoint
    assert Path(resumed.path).name == Path(first.path).name  # same key, other cache root
    a, b = load_file(Path(first.path) / "model.safetensors"), load_file(Path(resumed.path) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert resumed.stages[-1]["tokens_seen"] == first.stages[-1]["tokens_seen"]


def test_matched_scratch_gets_clp_tokenizer_data_and_tokens(built, toy_root, bert_source, monkeypatch):
    monkeypatch.setenv("XBENCH_CACHE", str(built["cache"]))
    clp = built["enc"]
    scratch = clp_method(bert_source, toy_root, cls=ClpScratchMethod).build_encoder("de")
    assert scratch.provenance["matches"] == clp.key and scratch.provenance["variant"] == "scratch"
    assert not scratch.uses_source_weights and scratch.source_stages == []
    assert scratch.stages[-1]["tokens_seen"] == clp.stages[-1]["tokens_seen"]
    assert scratch.stages[-1]["optimizer_steps"] == clp.stages[-1]["optimizer_steps"]
    assert [p["step"] for p in scratch.provenance["curve"]] == [p["step"] for p in clp.provenance["curve"]]
    assert scratch.provenance["heldout"] == clp.provenance["heldout"]
    assert [s["extra"].get("role") for s in scratch.stages] == ["tokenizer", "transfer"]  # no helper LM, no init

    import json

    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(scratch.path).get_vocab() == AutoTokenizer.from_pretrained(clp.path).get_vocab()
    cfg_s = json.loads((Path(scratch.path) / "config.json").read_text())
    cfg_c = json.loads((Path(clp.path) / "config.json").read_text())
    for k in ("architectures", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "intermediate_size", "pad_token_id"):
        assert cfg_s[k] == cfg_c[k], k
    # Not the same weights: random init, not CLP.
    a, b = load_file(Path(scratch.path) / "model.safetensors"), load_file(Path(clp.path) / "model.safetensors")
    assert not torch.equal(a["bert.encoder.layer.0.attention.self.query.weight"],
                           b["bert.encoder.layer.0.attention.self.query.weight"])


def test_source_with_random_embeddings_keeps_every_other_tensor(bert_source, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from xbench.vocab.wordpiece import train_wordpiece

    src = AutoModelForMaskedLM.from_pretrained(bert_source)
    src_tok = AutoTokenizer.from_pretrained(bert_source)
    rng = random.Random(3)
    tgt_tok = train_wordpiece([_de(_sentence(rng)) for _ in range(300)], 150)
    out = _with_random_embeddings(src, src_tok, tgt_tok, "model_init", seed=0)
    assert out.config.vocab_size == len(tgt_tok) and out.get_input_embeddings().weight.shape[0] == len(tgt_tok)
    assert out.get_output_embeddings().weight is out.get_input_embeddings().weight  # still tied
    assert torch.count_nonzero(out.get_output_embeddings().bias) == 0
    src_state = src.state_dict()
    for name, t in out.state_dict().items():
        if "word_embeddings" in name or name.startswith("cls.predictions") and ("decoder" in name or "bias" in name):
            continue
        assert torch.equal(t, src_state[name]), name
    again = _with_random_embeddings(src, src_tok, tgt_tok, "model_init", seed=0)
    assert torch.equal(again.get_input_embeddings().weight, out.get_input_embeddings().weight)  # seeded


def test_bad_parameters_are_one_config_error(toy_root, bert_source):
    with pytest.raises(ConfigError) as exc:
        clp_method(bert_source, toy_root, heldout_share="1.5", eval_steps="0,x", init_output="nope", steps="0",
                   seq_len="4")
    msg = str(exc.value)
    assert "heldout_share" in msg and "eval_steps" in msg and "init_output" in msg
    assert "steps must be at least 1, got 0" in msg and "seq_len must be at least 8, got 4" in msg
    with pytest.raises(ConfigError, match="no parameter 'nosuch'"):
        clp_method(bert_source, toy_root, nosuch="1")
    # The paper profile reads the target text from the mono_<lang> slots (tests/test_slots.py).
    ctx = RunContext(profile=load_profile("paper"), model=str(bert_source), data_dir=str(toy_root), params={},
                     langs=["de"])
    assert ClpMethod(ctx).data_slots() == ["mono_de"]
    with pytest.raises(XbenchError, match="one encoder per target language"):
        clp_method(bert_source, toy_root).build_encoder(None)


def test_a_causal_source_is_refused_for_fine_tuning(toy_root, gpt2_source, tmp_path, monkeypatch):
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    for cls in (ClpMethod, ClpScratchMethod):
        with pytest.raises(XbenchError, match="xbench curves"):
            clp_method(gpt2_source, toy_root, cls=cls).build_encoder("de")
    assert not (tmp_path / "cache").exists()  # refused before building anything
