"""The extractive-QA task type and its cards: units, averages, data choice, refusals, real data."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from xbench.errors import ConfigError, DataFormatError, DataNotFoundError, XbenchError
from xbench.run.request import split_name as _split_name
from xbench.cards import get_task
from xbench.tasktypes.base import Split
from xbench.tasktypes.extractive_qa import ExtractiveQA, card_problems, parse_unit, unit_name


def qa(task: str, **options: object) -> ExtractiveQA:
    return get_task(task).task_type_impl(options)


def squad_file(path: Path, qas: list[tuple[str, str, str, str]]) -> Path:
    """A SQuAD-format file with one paragraph per (id, question, context, answer); '' = blanked."""
    paragraphs = [{"context": ctx, "qas": [{"id": qid, "question": q,
                                            "answers": [{"text": a, "answer_start": ctx.find(a) if a else 0}]}]}
                  for qid, q, ctx, a in qas]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}), encoding="utf-8")
    return path


TYDI_EN = [("0", "Who wrote it?", "It was written by Ann Lee in 1900.", "Ann Lee"),
           ("0", "When was it written?", "It was written by Ann Lee in 1900.", "1900")]  # ids repeat, as in XTREME


# --- units ---------------------------------------------------------------------------------------

def test_unit_names_round_trip() -> None:
    assert unit_name("de", "de") == "de" and parse_unit("de") == ("de", "de")
    assert unit_name("de", "en") == "c=de,q=en" and parse_unit("c=de,q=en") == ("de", "en")


def test_mlqa_units_xlt_and_gxlt() -> None:
    assert qa("mlqa").eval_units(["de", "zh"]) == ["de", "zh"]
    units = qa("mlqa", question_langs=["en", "de"]).eval_units(["de", "zh"])
    assert units == ["c=de,q=en", "de", "c=zh,q=en", "c=zh,q=de"]
    assert qa("mlqa", question_langs="en,de").eval_units(["de"]) == ["c=de,q=en", "de"]  # --option form


def test_question_langs_refused_where_meaningless_or_unknown() -> None:
    with pytest.raises(ConfigError, match="no separate question languages"):
        qa("xquad", question_langs=["en"])
    with pytest.raises(ConfigError, match="no question language.*fr"):
        qa("mlqa", question_langs=["en", "fr"])
    with pytest.raises(ConfigError, match="takes no option 'treebank'"):
        qa("mlqa", treebank="pud")


def test_xquad_average_leaves_out_ro() -> None:
    units = qa("xquad").eval_units(["de", "ro", "zh"])
    assert units == ["de", "ro", "zh"]
    assert qa("xquad").averaged_units(units) == ["de", "zh"]
    assert qa("xquad").averaged_units(["ro"]) == ["ro"]  # nothing else to average; averaged_over says so
    assert "leaving out ro" in qa("xquad").scoring_info()["average"]
    assert qa("mlqa").averaged_units(["de", "zh"]) == ["de", "zh"]


def test_gxlt_average_is_over_off_diagonal_cells() -> None:
    t = qa("mlqa", question_langs=["en", "de"])
    assert t.averaged_units(t.eval_units(["de", "zh"])) == ["c=de,q=en", "c=zh,q=en", "c=zh,q=de"]
    only_diagonal = qa("mlqa", question_langs=["de"])
    assert only_diagonal.averaged_units(only_diagonal.eval_units(["de"])) == ["de"]


# --- which data each setting uses -------------------------------------------------------------

@pytest.mark.parametrize("task", ["mlqa", "xquad", "tydiqa"])
def test_zero_shot_training_data_by_setting(task: str) -> None:
    card = get_task(task)
    proto = card.protocol(None)
    sources = card.data["splits"]
    shared, standard = _split_name(proto.train, "shared"), _split_name(proto.train, "standard")
    assert proto.train["lang"] == "en"
    assert sources[shared]["source"] == "tydiqa-goldp"  # offline: English TyDiQA-GoldP train, all three
    assert sources[standard]["source"] == ("tydiqa-goldp" if task == "tydiqa" else "squad-v1.1")
    if task == "mlqa":  # standard: select on English dev; shared: fixed steps, no selection
        assert _split_name(proto.select, "standard") == "dev" and _split_name(proto.select, "shared") is None
        assert _split_name(proto.eval, "standard") == "test" and _split_name(proto.eval, "shared") == "dev"
    else:
        assert proto.select is None


def test_shared_training_data_is_recorded(tmp_path: Path) -> None:
    squad_file(tmp_path / "tydiqa_goldp/train/tydiqa.goldp.en.train.json", TYDI_EN)
    t = qa("mlqa")
    split = t.load("en", "tydiqa-en-train", tmp_path, for_eval=False)
    assert [ex.id for ex in split.examples] == ["0#1", "0#2"]  # repeated ids renumbered, not refused
    assert split.provenance.source == "local"
    assert split.provenance.files[0]["path"] == "tydiqa_goldp/train/tydiqa.goldp.en.train.json"
    with pytest.raises(XbenchError, match="has no language 'de'"):
        t.load("de", "tydiqa-en-train", tmp_path, for_eval=False)


def test_squad_offline_says_how_to_provide_it(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        qa("xquad").load("en", "squad-train", tmp_path, for_eval=False)
    msg = str(err.value)
    assert "squad/train-v1.1.json" in msg and "rajpurkar/squad" in msg and "offline" in msg


def test_training_data_cannot_be_scored_as_held_out(tmp_path: Path) -> None:
    squad_file(tmp_path / "tydiqa_goldp/train/tydiqa.goldp.en.train.json", TYDI_EN)
    t = qa("tydiqa")
    t.load("en", "train", tmp_path, for_eval=False)
    with pytest.raises(XbenchError, match="data the model was trained on"):
        t.load("en", "train", tmp_path, for_eval=True)


class FakeHubSplit(list):
    _fingerprint = "f" * 16


def hub_row(qid: str, context: str, answer: str, start: int | None = None) -> dict[str, object]:
    return {"id": qid, "title": "", "context": context, "question": "q?",
            "answers": {"text": [answer], "answer_start": [context.find(answer) if start is None else start]}}


def test_hub_path_filters_tydiqa_by_language_and_records_provenance(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def load_dataset(path: str, name: str | None, split: str, revision: str | None) -> FakeHubSplit:
        calls.append((path, name, split, revision))
        return FakeHubSplit([hub_row("korean-1-0", "서울은 수도", "서울"), hub_row("english-2-0", "Paris is", "Paris")])

    monkeypatch.delenv("XBENCH_DATA", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    split = qa("tydiqa").load("ko", "dev", None, for_eval=True)
    assert calls == [("google/xtreme", "tydiqa", "validation", "main")]
    assert [ex.id for ex in split.examples] == ["korean-1-0"]
    assert split.provenance.to_dict() == {"source": "hub", "hub": {
        "path": "google/xtreme", "name": "tydiqa", "split": "validation", "revision": "main",
        "id_prefix": "korean", "fingerprint": "f" * 16}}
    calls.clear()
    qa("mlqa", question_langs=["en"]).load("c=de,q=en", "test", None, for_eval=False)
    assert calls == [("facebook/mlqa", "mlqa.de.en", "test", "main")]  # context first, as MLQA names files
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: FakeHubSplit([hub_row("x", "ein Haus", "Haus", 1)]))
    with pytest.raises(DataFormatError, match="hub google/xquad/xquad.de split validation: field 'answers.answer_start': "
                                              "question 'x': answer 'Haus' is not at offset 1"):
        qa("xquad").load("de", "test", None, for_eval=True)


# --- refusals ------------------------------------------------------------------------------------

def test_blanked_tydiqa_dev_is_refused_with_the_way_out(tmp_path: Path) -> None:
    squad_file(tmp_path / "tydiqa_goldp/dev_no_answers/tydiqa.goldp.ko.dev.json",
               [("korean-1-0", "q?", "some context", ""), ("korean-2-0", "q2?", "other context", "")])
    with pytest.raises(DataNotFoundError) as err:
        qa("tydiqa").load("ko", "dev", tmp_path, for_eval=True)
    msg = str(err.value)
    assert "tydiqa.goldp.ko.dev.json: its gold answers are blanked" in msg
    assert "--protocol zero-shot-trainsplit-as-test" in msg


def test_dev_file_with_answers_is_preferred_to_the_blanked_one(tmp_path: Path) -> None:
    squad_file(tmp_path / "tydiqa_goldp/dev_no_answers/tydiqa.goldp.ko.dev.json", [("k-1", "q?", "ctx", "")])
    squad_file(tmp_path / "tydiqa_goldp/dev/tydiqa.goldp.ko.dev.json", [("k-1", "q?", "the ctx", "ctx")])
    split = qa("tydiqa").load("ko", "dev", tmp_path, for_eval=True)
    assert split.provenance.files[0]["path"] == "tydiqa_goldp/dev/tydiqa.goldp.ko.dev.json"


def test_partly_blank_file_is_a_format_error(tmp_path: Path) -> None:
    path = squad_file(tmp_path / "xquad/xquad.de.json", [("a", "q?", "ein Haus", "Haus"), ("b", "q?", "x", "")])
    with pytest.raises(DataFormatError, match=r"xquad\.de\.json: field 'answers': 1 of 2 questions .*'b'"):
        qa("xquad").load("de", "test", tmp_path, for_eval=True)
    assert path.is_file()


def test_unknown_split_and_xquad_cross_language_unit(tmp_path: Path) -> None:
    with pytest.raises(XbenchError, match="no split 'dev'; valid splits: test"):
        qa("xquad").load("de", "dev", tmp_path, for_eval=True)
    with pytest.raises(XbenchError, match="no questions in another language"):
        qa("xquad").load("c=de,q=en", "test", tmp_path, for_eval=True)


def test_card_problems_are_all_reported() -> None:
    raw = dict(get_task("xquad").raw)
    raw["params"] = {**raw["params"], "doc_stride": -1, "scorer": "bleu"}
    raw["average_excludes"] = ["xx"]
    raw["protocols"] = {"p": {"train": {"lang": "en", "split": "nope"}, "eval": {"split": "test"}}}
    problems = card_problems(raw)
    assert any("params.doc_stride" in p for p in problems)
    assert any("params.scorer" in p for p in problems)
    assert any("average_excludes: 'xx'" in p for p in problems)
    assert any("protocols.p.train.split: 'nope'" in p for p in problems)
    assert card_problems(get_task("mlqa").raw) == [] and card_problems(get_task("tydiqa").raw) == []


def test_a_subset_does_not_reuse_the_features_of_the_whole_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xbench.vocab.wordpiece import train_wordpiece
    from xbench.data.sources import Provenance
    from xbench.data.squad import QAExample

    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path))
    examples = [QAExample(f"q{i}", "Who wrote it?", f"It was written by Ann Lee in {1900 + i}.", ("Ann Lee",), (18,))
                for i in range(4)]
    tokenizer = train_wordpiece([e.context for e in examples] + [examples[0].question], 200)
    prov = Provenance("local", files=[{"path": "x.json", "sha256": "0" * 64}])
    t = qa("xquad")
    whole = t.featurize(Split("de", "test", examples, prov), tokenizer, train=False)
    part = t.featurize(Split("de", "test", examples[:2], prov), tokenizer, train=False)
    assert {f["example_id"] for f in whole} == {"q0", "q1", "q2", "q3"}
    assert {f["example_id"] for f in part} == {"q0", "q1"}


# --- scoring ------------------------------------------------------------------------------------

def test_mlqa_scores_normalise_by_context_language(tmp_path: Path) -> None:
    from xbench.data.sources import Provenance
    from xbench.data.squad import QAExample

    ex = [QAExample("a", "Who?", "Das ist der Hund.", ("der Hund",), (8,))]
    t = qa("mlqa", question_langs=["en"])
    # German context, English question: German articles are removed, so "Hund" matches exactly.
    assert t.score(Split("c=de,q=en", "dev", ex, Provenance("local")), ["Hund"]) == {"exact_match": 1.0, "f1": 1.0, "n": 1}
    assert t.score(Split("c=en,q=de", "dev", ex, Provenance("local")), ["Hund"])["exact_match"] == 0.0
    with pytest.raises(XbenchError, match="0 predictions for 1 questions"):
        t.score(Split("de", "dev", ex, Provenance("local")), [])


# --- real data ------------------------------------------------------------------------------------

def test_real_data_loads(data_root: Path) -> None:
    mlqa = qa("mlqa", question_langs=["en"])
    cell = mlqa.load("c=de,q=en", "dev", data_root, for_eval=True)
    assert len(cell.examples) == 512 and cell.provenance.files[0]["path"] == "mlqa/dev/dev-context-de-question-en.json.gz"
    assert len(qa("tydiqa").load("sw", "train", data_root, for_eval=True).examples) == 2755
    with pytest.raises(DataNotFoundError, match="blanked"):
        qa("tydiqa").load("ko", "dev", data_root, for_eval=True)


def test_featurize_predict_score_on_xquad(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    from xbench.vocab.wordpiece import train_wordpiece

    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path))  # the feature cache
    t = qa("xquad")
    full = t.load("de", "test", data_root, for_eval=True)
    split = Split("de", "test", full.examples[:50], replace(full.provenance, selection={"rows": [0, 50]}))
    tokenizer = train_wordpiece([e.context for e in split.examples] + [e.question for e in split.examples], 600)
    torch.manual_seed(0)
    model = BertForQuestionAnswering(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=512))
    features = t.featurize(split, tokenizer, train=False)
    assert len(features) >= 50 and {"example_id", "offset_mapping"} <= set(features[0])
    preds = t.predict(model, split, features, tokenizer)
    assert len(preds) == 50
    for ex, p in zip(split.examples, preds):
        assert p and p in ex.context
    scores = t.score(split, preds)
    assert scores["n"] == 50 and 0.0 <= scores["exact_match"] <= scores["f1"] <= 1.0
    records = t.prediction_records(split, preds)
    assert records[0]["id"] == split.examples[0].id and records[0]["gold"] == list(split.examples[0].answers)

    train = t.load("en", "tydiqa-en-train", data_root, for_eval=False)
    train = Split("en", train.name, train.examples[:40], replace(train.provenance, selection={"rows": [0, 40]}))
    train_features = t.featurize(train, tokenizer, train=True)
    batch = {k: torch.tensor([f[k] for f in train_features[:1]]) for k in
             ("input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions")}
    loss = t.loss(model, batch, None)["span_ce"]
    assert torch.isfinite(loss) and loss.item() > 0
    [record] = t.scoring_info()["training_data"]
    assert record["dataset"] == "tydiqa-goldp" and record["n_examples"] == 40
    assert 0 <= record["answers_lost_to_truncation"] <= 40 and record["n_features"] == len(train_features)
