"""The token-labelling task type (PAN-X NER): data sources, first-subword labels, IOB2 repair, scores."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.test_words import tokenizer  # noqa: F401  (module-scoped tiny WordPiece tokenizer fixture)
from xbench.errors import DataFormatError, DataNotFoundError, XbenchError
from xbench.cards import get_task
from xbench.runner.batching import FeaturePlan
from xbench.tasktypes.token_labelling import TokenLabelling


@pytest.fixture(autouse=True)
def _given_roots_only(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # A data_dir adds to XBENCH_DATA; tests that build their own data root must see that root alone.
    if "data_root" not in request.fixturenames:
        monkeypatch.delenv("XBENCH_DATA", raising=False)

SENTENCES = [
    (["Anton", "Wilhelm", "von", "Zuccalmaglio", "wrote", "songs"], ["B-PER", "I-PER", "I-PER", "I-PER", "O", "O"]),
    (["北京", "是", "中国", "的", "首都"], ["B-LOC", "O", "B-LOC", "O", "O"]),
    (["the", "spaceship", "played", "in", "Hamburg", "Germany"], ["O", "B-ORG", "O", "O", "B-LOC", "I-LOC"]),
]


def _tsv(sentences) -> str:
    return "\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(*s)) for s in sentences) + "\n"


@pytest.fixture
def panx_dir(tmp_path: Path) -> Path:
    """A --data-dir holding the files flat, as a user might have them."""
    for split in ("train", "dev"):
        (tmp_path / f"{split}-en.tsv").write_text(_tsv(SENTENCES), encoding="utf-8")
    return tmp_path


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))


def _task(max_length: int | None = None) -> TokenLabelling:
    card = get_task("panx")
    if max_length is not None:
        card = dataclasses.replace(card, params={**card.params, "max_length": max_length})
    return TokenLabelling(card)


def test_card() -> None:
    card = get_task("panx")
    assert len(card.languages) == 40 and card.metric == "f1"
    assert card.raw["metrics"] == ["f1", "precision", "recall"]
    assert card.protocol("zero-shot").eval == {"split": "test", "shared": "dev"}


def test_labels_on_first_subwords_only(panx_dir: Path, tokenizer) -> None:  # noqa: F811
    tt = _task()
    split = tt.load("en", "train", panx_dir, for_eval=False)
    assert split.provenance.source == "local" and split.provenance.files[0]["path"] == "train-en.tsv"
    feats = tt.featurize(split, tokenizer, train=True)
    for f, (tokens, tags) in zip(feats, SENTENCES):
        labelled = [i for i, label in enumerate(f["labels"]) if label != -100]
        assert labelled == f["first"] and len(labelled) == len(tokens)
        assert [tt.labels[f["labels"][i]] for i in labelled] == tags
    # "spaceship" is split into several pieces: only the first carries its label
    widx, labels = feats[2]["word_index"], feats[2]["labels"]
    pieces = [labels[i] for i, w in enumerate(widx) if w == 1]
    assert len(pieces) > 1 and pieces == [tt.labels.index("B-ORG")] + [-100] * (len(pieces) - 1)
    assert feats[1]["word_index"].count(0) == 2  # CJK: one piece per character, one label


def test_predictions_are_repaired_to_iob2(panx_dir: Path, tokenizer, monkeypatch) -> None:  # noqa: F811
    tt = _task(max_length=12)  # short window: sentences are tagged in chunks and joined
    split = tt.load("en", "dev", panx_dir, for_eval=True)
    feats = tt.featurize(split, tokenizer, train=False)
    assert len(feats) > len(SENTENCES)
    wanted = [["I-PER", "I-PER", "O", "I-LOC", "O", "I-ORG"], ["I-LOC", "O", "B-LOC", "I-PER", "O"],
              ["O", "I-ORG", "I-ORG", "O", "I-LOC", "I-LOC"]]

    def fake_forward(model, features, pad_values, **kwargs):
        for k, f in enumerate(features):
            logits = torch.zeros(1, len(f["input_ids"]), len(tt.labels))
            for w, pos in enumerate(f["first"]):
                logits[0, pos, tt.labels.index(wanted[f["sentence"]][f["start"] + w])] = 1.0
            yield [k], SimpleNamespace(logits=logits)

    from xbench.tasktypes import inference

    monkeypatch.setattr(inference, "batched_forward", fake_forward)
    preds = tt.predict(None, split, feats, tokenizer)
    assert preds == [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"], ["B-LOC", "O", "B-LOC", "B-PER", "O"],
                     ["O", "B-ORG", "I-ORG", "O", "B-LOC", "I-LOC"]]
    assert tt._chunked["en/dev"] >= 1
    records = tt.prediction_records(split, preds)
    assert records[2] == {"index": 2, "tokens": SENTENCES[2][0], "gold": SENTENCES[2][1], "pred": preds[2]}
    s = tt.score(split, preds)
    assert 0 < s["f1"] < 1 and s["n"] == 3 and s["n_entities"] == 5
    assert tt.score(split, [tags for _, tags in SENTENCES])["f1"] == 1.0


def test_training_and_prediction_with_a_real_model(panx_dir: Path, tokenizer, tmp_path: Path) -> None:  # noqa: F811
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(tmp_path / "enc")
    tt = _task()
    split = tt.load("en", "train", panx_dir, for_eval=False)
    feats = tt.featurize(split, tokenizer, train=True)
    model = tt.build_model(str(tmp_path / "enc"))
    plan = FeaturePlan(feats, seed=0, batch_size=8, pad_values=tt.pad_values(tokenizer))
    batch = plan.collate(plan.batches(0)[0])
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(40):
        loss = tt.loss(model, batch, None)["ce"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    dev = tt.load("en", "dev", panx_dir, for_eval=True)
    preds = tt.predict(model, dev, tt.featurize(dev, tokenizer, train=False), tokenizer)
    assert tt.score(dev, preds)["f1"] == 1.0  # memorised the three sentences


def test_hub_source(monkeypatch) -> None:
    import datasets

    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
    features = datasets.Features({"tokens": datasets.List(datasets.Value("string")),
                                  "ner_tags": datasets.List(datasets.ClassLabel(names=names))})
    rows = {"tokens": [s[0] for s in SENTENCES], "ner_tags": [[names.index(t) for t in s[1]] for s in SENTENCES]}
    calls = []

    def fake_load(path, name, split, revision):
        calls.append((path, name, split, revision))
        return datasets.Dataset.from_dict(rows, features=features)

    monkeypatch.delenv("XBENCH_DATA", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    tt = _task()
    split = tt.load("sw", "dev", None, for_eval=True)
    assert calls == [("unimelb-nlp/wikiann", "sw", "validation", "main")]
    assert split.examples == [(list(t), list(g)) for t, g in SENTENCES]
    assert split.provenance.source == "hub" and split.provenance.hub["split"] == "validation"
    assert tt.scoring_info()["evaluation_data"] == {"sw/dev": "hub unimelb-nlp/wikiann/sw validation"}

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the hub (offline mode is enabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataNotFoundError, match=r"(?s)no data for panx de/test.*test labels are not public"):
        tt.load("de", "test", None, for_eval=True)


def test_bad_input(tmp_path: Path) -> None:
    (tmp_path / "dev-de.tsv").write_text("Berlin\tB-LOC\nist\tO\nschön\tB-MISC\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"dev-de.tsv, line 3: field 'tag': unknown tag 'B-MISC'"):
        _task().load("de", "dev", tmp_path, for_eval=True)
    (tmp_path / "dev-de.tsv").write_text("Berlin B-LOC\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"dev-de.tsv, line 1: 1 tab-separated fields"):
        _task().load("de", "dev", tmp_path, for_eval=True)
    (tmp_path / "dev-de.tsv").write_text("Berlin\tO\nist\tO\n", encoding="utf-8")
    with pytest.raises(XbenchError, match="no entity labels"):
        _task().load("de", "dev", tmp_path, for_eval=True)


def test_real_panx(data_root: Path, tokenizer) -> None:  # noqa: F811
    tt = _task()
    hi = tt.load("hi", "dev", data_root, for_eval=True)
    assert len(hi.examples) == 1000 and hi.provenance.files[0]["path"] == "panx/dev-hi.tsv.gz"
    feats = tt.featurize(hi, tokenizer, train=False)
    assert sum(len(f["first"]) for f in feats) == sum(len(t) for t, _ in hi.examples)
    assert tt.score(hi, [tags for _, tags in hi.examples]) | {"n_entities": 0} == {
        "f1": 1.0, "precision": 1.0, "recall": 1.0, "n": 1000, "n_entities": 0}
    assert len(tt.load("en", "train", data_root, for_eval=False).examples) == 20000
    info = tt.scoring_info()
    assert info["evaluation_data"] == {"hi/dev": "local panx/dev-hi.tsv.gz"} and "dev" in info["eval_note"]
