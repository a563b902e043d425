"""PPA as a method (xbench/methods/ppa): retrieval on the toy bilingual world (spec property 7), the token
count its baselines are matched on, the profile's per-method source model, and the code-switched XNLI
protocol every method fine-tunes under."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.toy_world import cipher, toy_pairs
from xbench.errors import ConfigError


def _toy_setup(n_train: int = 2000):
    from transformers import BertConfig, BertForMaskedLM

    from xbench.stages.lm import pretrain_mlm
    from xbench.stages.ppa import PairPlan
    from xbench.vocab.wordpiece import train_wordpiece

    train, held = toy_pairs(n_train, seed=0), toy_pairs(100, seed=1)
    tok = train_wordpiece([x for p in train for x in p.texts], 400)
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=128, max_position_embeddings=64))

    def ids(s: str) -> list[int]:
        return tok(s, add_special_tokens=False)["input_ids"]

    plan = PairPlan([(ids(a), ids(b)) for a, b in (p.texts for p in train)], batch_size=32, p_shuffle=0.5, seed=0,
                    cls_id=tok.cls_token_id, sep_id=tok.sep_token_id, pad_id=tok.pad_token_id, max_len=32)
    return model, tok, plan, held, pretrain_mlm


def test_toy_world_is_a_cipher_with_reordering_and_exact_links() -> None:
    pair = toy_pairs(1, seed=3)[0]
    assert sorted(j for _, j in pair.alignment) == list(range(len(pair.target)))
    for i, j in pair.alignment:
        assert pair.target[j] == cipher(pair.source[i])
    assert pair.target[-1] == cipher(pair.source[1])  # the verb goes last
    assert toy_pairs(5, seed=3)[0] == pair  # deterministic


def test_ppa_does_not_lower_retrieval_on_the_toy_world(tmp_path: Path) -> None:
    """Spec property 7 on the toy fixture: a briefly MLM-pretrained tiny BERT (PPA's starting point is a
    pretrained model), Tatoeba-style retrieval on 100 held-out pairs before and after 300 PPA steps."""
    from xbench.metrics.retrieval import retrieval_accuracy
    from xbench.stages.ppa import PPAArgs, train_ppa

    model, tok, plan, held, pretrain_mlm = _toy_setup()
    lines = [x for p in toy_pairs(2000, seed=2) for x in p.texts]
    pretrain_mlm(model, tok, lines, {"lr": 1e-3, "batch_size": 16, "seq_len": 32, "max_steps": 300, "warmup_steps": 20},
                 tmp_path / "mlm", name="toy MLM")
    en, xx = [p.texts[0] for p in held], [p.texts[1] for p in held]
    before = retrieval_accuracy(model, tok, xx, en)["mean"]
    args = PPAArgs(lr=1e-3, batch_size=32, max_steps=300, warmup_steps=10, queue_size=64, momentum=0.99, tau=0.05,
                   seed=0, max_len=32)
    _, parts = train_ppa(model, plan, tok, args, tmp_path / "ppa", name="toy PPA")
    after = retrieval_accuracy(model, tok, xx, en)["mean"]
    assert after >= before, (before, after)
    assert sum(parts["sent"][-20:]) / 20 < sum(parts["sent"][5:25]) / 20  # L_sent fell once the queue held keys


def test_planned_counts_are_what_the_stage_counts(tmp_path: Path) -> None:
    """The token budget mlm-control and scratch-ppa are matched on is read from the plan before PPA runs;
    it must be exactly what the runner counts (query + TLM passes) and the key pass it leaves out."""
    from xbench.stages.ppa import PPAArgs, planned_counts, train_ppa

    model, tok, plan, _, _ = _toy_setup(n_train=80)
    steps = 7  # more than one pass over 80 pairs in batches of 32: the count crosses an epoch
    fit, _ = train_ppa(model, plan, tok, PPAArgs(lr=1e-3, batch_size=32, max_steps=steps, queue_size=32, seed=0,
                                                 max_len=32), tmp_path / "ppa", name="count")
    planned = planned_counts(plan, steps)
    assert fit.record.tokens_seen == planned["tokens_seen"]
    assert fit.record.forward_only_tokens == planned["key_tokens"] > 0
    n = fit.record.params["non_embedding"]
    assert fit.record.flops_est == 6.0 * n * planned["tokens_seen"] + 2.0 * n * planned["key_tokens"]


def test_the_profile_names_the_multilingual_source_for_ppa_and_its_baselines(tmp_path: Path) -> None:
    from xbench.run.request import RunRequest, resolve

    def model_of(method: str, **kw: object) -> str:
        return resolve(RunRequest(method=method, task="xnli", langs=["de"], output_dir=str(tmp_path), **kw)).model

    assert {model_of(m) for m in ("ppa", "mlm-control", "scratch-ppa")} == {"xbench/tiny-multi-bert"}
    assert model_of("source") == "xbench/tiny-en-bert"
    assert model_of("ppa", model="xbench/tiny-en-bert") == "xbench/tiny-en-bert"  # --model has the last word
    assert model_of("ppa", profile="paper") == "bert-base-multilingual-cased"


def test_ppa_refuses_english_as_a_target_before_any_work(tmp_path: Path) -> None:
    from xbench.methods.base import RunContext
    from xbench.methods.ppa import PpaMethod

    with pytest.raises(ConfigError, match="'en' cannot be a target"):
        PpaMethod(RunContext(profile={"name": "smoke"}, model="m", data_dir=None, params={}, langs=["en", "de"]))


# ----------------------------------------------------------------------------- code-switched XNLI


def _card(tmp_path: Path, **code_switch: object) -> Path:
    from xbench.cards import builtin_tasks_dir

    raw = yaml.safe_load((builtin_tasks_dir() / "xnli.yaml").read_text(encoding="utf-8"))
    raw["name"] = "xnli-cs"
    raw["protocols"]["translate-train-codeswitch"]["code_switch"] = code_switch
    folder = tmp_path / "cards"
    folder.mkdir(parents=True)
    (folder / "xnli-cs.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    return folder


@pytest.fixture
def _reset_cards():
    from xbench.cards import set_cli_tasks_dirs

    yield
    set_cli_tasks_dirs([])


def test_a_bad_code_switch_block_names_its_field(tmp_path: Path, _reset_cards) -> None:
    from xbench.cards import parse_card

    folder = _card(tmp_path, originals={"lang": "xx"}, p_switch=1.5, extra=1)
    with pytest.raises(ConfigError) as err:
        parse_card(folder / "xnli-cs.yaml")
    text = str(err.value)
    assert "protocols.translate-train-codeswitch.code_switch.originals: expected {lang: <language>, split: <split>}" in text
    assert "code_switch.p_switch: expected a probability in [0, 1], got 1.5" in text
    assert "unknown key 'extra'" in text


def test_originals_that_are_not_line_aligned_are_refused_before_any_work(data_root: Path, tmp_path: Path,
                                                                           _reset_cards) -> None:
    from xbench.cards import set_cli_tasks_dirs
    from xbench.run.preflight import run_problems
    from xbench.run.request import RunRequest, resolve

    def problems(**code_switch: object) -> list[str]:
        set_cli_tasks_dirs([_card(tmp_path / str(len(code_switch["originals"]["split"])), **code_switch)])
        rr = resolve(RunRequest(method="source", task="xnli-cs", langs=["de"], protocol="translate-train-codeswitch",
                                data_dir=str(data_root), output_dir=str(tmp_path / "out")))
        return [p for p in run_problems(rr) if "code_switch" in p]

    assert problems(originals={"lang": "en", "split": "dev-train"}, p_switch=0.5) == []
    bad = problems(originals={"lang": "en", "split": "dev-heldout"}, p_switch=0.5)
    assert len(bad) == 1 and "2241 target examples but 249 English ones" in bad[0], bad


def test_code_switched_training_data_has_its_own_identity(data_root: Path) -> None:
    """The switched split is another training set: another provenance hash (so another fine-tuning and
    feature-cache entry than in-language), with the switch recorded."""
    from xbench.cards import get_task
    from xbench.run.finetune import code_switched_split

    task_type = get_task("xnli").task_type_impl({})
    train = task_type.load("de", "dev-train", data_root, for_eval=False)
    originals = task_type.load("en", "dev-train", data_root, for_eval=False)
    switch = {"originals": "en/dev-train", "originals_hash": originals.provenance.hash, "p_switch": 0.5, "seed": 1}
    switched = code_switched_split(train, task_type, originals, switch)
    assert switched.provenance.hash != train.provenance.hash
    assert switched.provenance.selection["code_switch"] == switch
    changed = sum(a != b for a, b in zip(train.examples, switched.examples))
    assert 0.45 * len(train.examples) < changed < 0.55 * len(train.examples)
    assert [e.label for e in switched.examples] == [e.label for e in train.examples]
