"""The parsing task type: data lookup, features, the model, prediction, the system file and scoring."""
from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_words import tokenizer  # noqa: F401  (module-scoped tiny WordPiece tokenizer fixture)
from xbench.models.heads.biaffine import BiaffineParserHead
from xbench.models.heads.mst import is_tree
from xbench.data.conllu_io import read_conllu, universal_deprel
from xbench.errors import ConfigError, DataFormatError, DataNotFoundError, XbenchError
from xbench.cards import get_task
from xbench.runner.batching import FeaturePlan
from xbench.tasktypes.parsing import DependencyParsing


@pytest.fixture(autouse=True)
def _given_roots_only(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # A data_dir adds to XBENCH_DATA; tests that build their own data root must see that root alone.
    if "data_root" not in request.fixturenames:
        monkeypatch.delenv("XBENCH_DATA", raising=False)


def _rows(*rows: str) -> str:
    """Rows written with ' | ' between columns for readability; comments and blanks as is."""
    return "\n".join(r if r.startswith("#") or not r else r.replace(" | ", "\t") for r in rows) + "\n"


# Four sentences of distinct lengths (8, 5, 6, 3 words) so a test can tell them apart by length:
# a multiword token (2-3), CJK words, an empty node (4.1), and words split into several pieces.
TREEBANK = _rows(
    "# sent_id = s1",
    "# text = She didn't buy the spaceship yesterday.",
    "1 | She | she | PRON | _ | _ | 4 | nsubj | _ | _",
    "2-3 | didn't | _ | _ | _ | _ | _ | _ | _ | _",
    "2 | did | do | AUX | _ | _ | 4 | aux | _ | _",
    "3 | n't | not | PART | _ | _ | 4 | advmod | _ | _",
    "4 | buy | buy | VERB | _ | _ | 0 | root | _ | _",
    "5 | the | the | DET | _ | _ | 6 | det | _ | _",
    "6 | spaceship | spaceship | NOUN | _ | _ | 4 | obj | _ | _",
    "7 | yesterday | yesterday | NOUN | _ | _ | 4 | obl:tmod | _ | SpaceAfter=No",
    "8 | . | . | PUNCT | _ | _ | 4 | punct | _ | _",
    "",
    "# sent_id = s2",
    "# text = 北京是中国的首都",
    "1 | 北京 | 北京 | PROPN | _ | _ | 5 | nsubj | _ | SpaceAfter=No",
    "2 | 是 | 是 | AUX | _ | _ | 5 | cop | _ | SpaceAfter=No",
    "3 | 中国 | 中国 | PROPN | _ | _ | 5 | nmod | _ | SpaceAfter=No",
    "4 | 的 | 的 | PART | _ | _ | 3 | case | _ | SpaceAfter=No",
    "5 | 首都 | 首都 | NOUN | _ | _ | 0 | root | _ | _",
    "",
    "# sent_id = s3",
    "# text = Sue likes coffee and Bill tea",
    "1 | Sue | Sue | PROPN | _ | _ | 2 | nsubj | 2:nsubj | _",
    "2 | likes | like | VERB | _ | _ | 0 | root | 0:root | _",
    "3 | coffee | coffee | NOUN | _ | _ | 2 | obj | 2:obj | _",
    "4 | and | and | CCONJ | _ | _ | 5 | cc | 4.1:cc | _",
    "4.1 | likes | like | VERB | _ | _ | _ | _ | 2:conj | CopyOf=2",
    "5 | Bill | Bill | PROPN | _ | _ | 2 | conj | 4.1:nsubj | _",
    "6 | tea | tea | NOUN | _ | _ | 5 | orphan | 4.1:obj | _",
    "",
    "# sent_id = s4",
    "# text = Zuccalmaglio wrote songs",
    "1 | Zuccalmaglio | Zuccalmaglio | PROPN | _ | _ | 2 | nsubj | _ | _",
    "2 | wrote | write | VERB | _ | _ | 0 | root | _ | _",
    "3 | songs | song | NOUN | _ | _ | 2 | obj | _ | _",
    "",
)


@pytest.fixture
def ud_dir(tmp_path: Path) -> Path:
    """A user's treebank folder (--data-dir pointing at it), as a UD release ships it: plain .conllu."""
    folder = tmp_path / "UD_English-Toy"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        (folder / f"en_toy-ud-{split}.conllu").write_text(TREEBANK, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def encoder_dir(tokenizer, tmp_path_factory) -> Path:  # noqa: F811
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-encoder")
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=128)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _task(max_length: int | None = None, **kwargs) -> DependencyParsing:
    card = get_task("ud")
    if max_length is not None:
        card = dataclasses.replace(card, params={**card.params, "max_length": max_length})
    return DependencyParsing(card, **kwargs)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))


# ----------------------------------------------------------------------------- data lookup


def test_three_local_layouts(tmp_path: Path) -> None:
    tt = _task()
    shared = tmp_path / "shared"
    (shared / "ud" / "UD_English-EWT").mkdir(parents=True)
    with gzip.open(shared / "ud" / "UD_English-EWT" / "en_ewt-ud-test.conllu.gz", "wt", encoding="utf-8") as f:
        f.write(TREEBANK)
    release = tmp_path / "ud-treebanks-v2.16"
    (release / "UD_English-EWT").mkdir(parents=True)
    (release / "UD_English-EWT" / "en_ewt-ud-test.conllu").write_text(TREEBANK, encoding="utf-8")
    flat = tmp_path / "mine"
    flat.mkdir()
    (flat / "en_mine-ud-test.conllu").write_text(TREEBANK, encoding="utf-8")
    (flat / "en_pud-ud-test.conllu").write_text(TREEBANK, encoding="utf-8")
    expect = {shared: ("UD_English-EWT", "ud/UD_English-EWT/en_ewt-ud-test.conllu.gz"),
              release: ("UD_English-EWT", "UD_English-EWT/en_ewt-ud-test.conllu"),
              flat: ("en_mine", "en_mine-ud-test.conllu")}
    for root, (treebank, rel) in expect.items():
        split = tt.load("en", "test", root, for_eval=True)
        assert len(split.examples) == 4 and split.provenance.files[0]["path"] == rel
        assert tt._treebanks["en"] == treebank
    assert tt.load("en_pud", "test", flat, for_eval=True).provenance.files[0]["path"] == "en_pud-ud-test.conllu"


def test_missing_train_names_the_alternatives(tmp_path: Path) -> None:
    folder = tmp_path / "ud" / "UD_German-GSD"
    folder.mkdir(parents=True)
    for split in ("dev", "test"):
        (folder / f"de_gsd-ud-{split}.conllu").write_text(TREEBANK, encoding="utf-8")
    with pytest.raises(DataNotFoundError, match=r"(?s)no train file.*dev, test.*in-language-lowres.*zero-shot"):
        _task().load("de", "train", tmp_path, for_eval=False)
    with pytest.raises(DataNotFoundError, match=r"(?s)local files only.*universaldependencies.org"):
        _task().load("vi", "test", tmp_path, for_eval=True)


def test_units_and_options() -> None:
    assert _task().eval_units(["de", "zh"]) == ["de", "zh"]
    assert _task(options={"treebank": "pud"}).eval_units(["de", "ar"]) == ["de_pud", "ar_pud"]
    with pytest.raises(XbenchError, match="only has a PUD test set.*--treebank pud"):
        _task().eval_units(["de", "ar"])
    with pytest.raises(XbenchError, match="no PUD test set for ja"):
        _task(options={"treebank": "pud"}).eval_units(["ja"])
    with pytest.raises(ConfigError, match="--treebank 'gum'"):
        _task(options={"treebank": "gum"})
    with pytest.raises(ConfigError, match="pooling 'max'"):
        _task(settings={"pooling": "max"})
    with pytest.raises(ConfigError, match="greedy heads can form cycles"):
        _task(settings={"decode": "greedy"})


def test_malformed_conllu_names_file_and_line(tmp_path: Path) -> None:
    bad = TREEBANK.replace("5 | the | the | DET | _ | _ | 6 | det | _ | _".replace(" | ", "\t"),
                           "5\tthe\tthe\tDET\t_\t_\t6\tdet\t_")  # 9 columns on line 8
    (tmp_path / "en_bad-ud-test.conllu").write_text(bad, encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"en_bad-ud-test.conllu, line 8: 9 tab-separated columns"):
        _task().load("en", "test", tmp_path, for_eval=True)
    outside = TREEBANK.replace("3 | songs | song | NOUN | _ | _ | 2".replace(" | ", "\t"),
                               "3\tsongs\tsong\tNOUN\t_\t_\t9")
    (tmp_path / "en_bad-ud-test.conllu").write_text(outside, encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"line 35: field 'HEAD': HEAD 9 points outside the sentence of 3 words"):
        _task().load("en", "test", tmp_path, for_eval=True)


def test_unknown_deprel_in_training_names_line(tmp_path: Path) -> None:
    # Found when the training split is loaded (the run's pre-flight), not at featurisation after the
    # model is built; an evaluation file's DEPRELs are the scorer's business and are not refused.
    (tmp_path / "en_bad-ud-train.conllu").write_text(TREEBANK.replace("\tcop\t", "\tcopula\t"), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"en_bad-ud-train.conllu, line 16: field 'DEPREL': DEPREL 'copula'"):
        _task().load("en", "train", tmp_path, for_eval=False)
    (tmp_path / "en_bad-ud-train.conllu").rename(tmp_path / "en_bad-ud-test.conllu")
    assert len(_task().load("en", "test", tmp_path, for_eval=True).examples) == 4


# ----------------------------------------------------------------------------- features and model


def test_features_cover_syntactic_words(ud_dir: Path, tokenizer) -> None:  # noqa: F811
    tt = _task()
    split = tt.load("en", "train", ud_dir, for_eval=False)
    feats = tt.featurize(split, tokenizer, train=True)
    assert [f["sentence"] for f in feats] == [0, 1, 2, 3] and tt._skipped == {"en/train": 0}
    for f, s in zip(feats, split.examples):
        n = len(s.words)
        assert max(f["word_index"]) == n - 1 and len(f["first"]) == n
        assert f["heads"] == s.heads and [tt.labels[r] for r in f["rels"]] == [universal_deprel(r) for r in s.deprels]
    # MWT "didn't" and the empty node 4.1 are not words for the model; the subtype is stripped.
    assert split.examples[0].words[1:3] == ["did", "n't"] and "obl" in [tt.labels[r] for r in feats[0]["rels"]]
    assert len(split.examples[2].words) == 6
    # a multi-piece word: "spaceship" is not in the tokenizer's corpus
    widx = feats[0]["word_index"]
    assert widx.count(5) > 1 and feats[0]["first"][5] == widx.index(5)
    # CJK: "北京" (word 0 of s2) gives one piece per character
    assert feats[1]["word_index"].count(0) == 2


def test_long_sentences_skipped_for_training_and_chunked_for_evaluation(ud_dir: Path, tokenizer) -> None:  # noqa: F811
    tt = _task(max_length=12)
    train = tt.featurize(tt.load("en", "train", ud_dir, for_eval=False), tokenizer, train=True)
    assert tt._skipped["en/train"] >= 1 and len(train) == 4 - tt._skipped["en/train"]
    evaluation = tt.featurize(tt.load("en", "test", ud_dir, for_eval=True), tokenizer, train=False)
    covered = {}
    for f in evaluation:
        covered.setdefault(f["sentence"], []).append((f["start"], max(f["word_index"]) + 1))
    for i, s in enumerate(tt.load("en", "test", ud_dir, for_eval=True).examples):
        spans = covered[i]
        assert spans[0][0] == 0 and all(a + n == b for (a, n), (b, _) in zip(spans, spans[1:]))
        assert spans[-1][0] + spans[-1][1] == len(s)
    assert len(covered[0]) > 1


def test_training_steps_lower_the_loss(ud_dir: Path, tokenizer, encoder_dir: Path) -> None:  # noqa: F811
    tt = _task(settings={"arc_mlp": 24, "label_mlp": 12, "pooling": "mean", "dropout": 0.0})
    feats = tt.featurize(tt.load("en", "train", ud_dir, for_eval=False), tokenizer, train=True)
    torch.manual_seed(0)
    model = tt.build_model(str(encoder_dir))
    assert model.pooling == "mean" and model.head.arc_dep[0].out_features == 24
    plan = FeaturePlan(feats, seed=0, batch_tokens=256, pad_values=tt.pad_values(tokenizer))
    batch = plan.collate(plan.batches(0)[0])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = tt.loss(model, batch, None)["arc+label"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert model.encoder.embeddings.word_embeddings.weight.grad is not None  # encoder and head train jointly


# ----------------------------------------------------------------------------- prediction and scoring


def test_gold_heads_score_100_and_system_file_keeps_mwt_and_empty_nodes(ud_dir: Path, tokenizer, encoder_dir: Path,
                                                                        monkeypatch) -> None:  # noqa: F811
    tt = _task()
    split = tt.load("en", "test", ud_dir, for_eval=True)
    by_length = {len(s): (np.array(s.heads), np.array([tt.labels.index(universal_deprel(r)) for r in s.deprels]))
                 for s in split.examples}

    def oracle(self, arc, label, mask, algorithm="mst"):
        return [by_length[int(n)] for n in mask.sum(dim=1)]

    monkeypatch.setattr(BiaffineParserHead, "decode", oracle)
    from xbench.metrics import ud

    written = {}
    real_score = ud.score_conllu

    def spy(gold, system):
        written["text"] = Path(system).read_text(encoding="utf-8")
        return real_score(gold, system)

    monkeypatch.setattr(ud, "score_conllu", spy)
    model = tt.build_model(str(encoder_dir))
    preds = tt.predict(model, split, tt.featurize(split, tokenizer, train=False), tokenizer)
    scores = tt.score(split, preds)
    assert scores["uas"] == scores["las"] == scores["clas"] == 1.0 and scores["n"] == 4 and scores["n_words"] == 22
    assert "2-3\tdidn't\t_" in written["text"] and "4.1\tlikes\tlike\tVERB" in written["text"]
    assert "7\tyesterday\tyesterday\tNOUN\t_\t_\t4\tobl\t_\tSpaceAfter=No" in written["text"]  # subtype dropped
    records = tt.prediction_records(split, preds)
    assert records[0]["sent_id"] == "s1" and records[0]["heads"] == split.examples[0].heads
    assert records[0]["deprels"][6] == "obl"


def test_predictions_are_trees_with_one_root_even_in_chunks(ud_dir: Path, tokenizer, encoder_dir: Path) -> None:  # noqa: F811
    for algorithm in ("mst", "eisner"):
        tt = _task(max_length=12, settings={"decode": algorithm})
        split = tt.load("en", "test", ud_dir, for_eval=True)
        torch.manual_seed(1)
        model = tt.build_model(str(encoder_dir))
        preds = tt.predict(model, split, tt.featurize(split, tokenizer, train=False), tokenizer)
        assert tt._chunked["en/test"] >= 1
        for (heads, rels), s in zip(preds, split.examples):
            assert len(heads) == len(rels) == len(s) and is_tree(heads)
            assert [r for h, r in zip(heads, rels) if h == 0] == ["root"] and rels.count("root") == 1
        scores = tt.score(split, preds)
        assert 0.0 <= scores["las"] <= scores["uas"] <= 1.0
    info = tt.scoring_info()
    assert info["ud_version"] == "2.16" and info["deprel_subtypes"].startswith("ignored")
    assert info["punctuation"] == "included" and info["treebanks"] == {"en": "UD_English-Toy"}
    assert info["parser"]["decode"] == "eisner" and info["evaluation_sentences_split_into_chunks"]["en/test"] >= 1


# ----------------------------------------------------------------------------- real data


def test_real_treebanks(data_root: Path, tokenizer) -> None:  # noqa: F811
    tt = _task(options={"treebank": "pud"})
    de = tt.load("de", "test", data_root, for_eval=True)
    assert len(de.examples) == 977 and any("-" in line.split("\t")[0] for s in de.examples for line in s.lines
                                           if not line.startswith("#"))
    feats = tt.featurize(de, tokenizer, train=False)
    assert sum(max(f["word_index"]) + 1 for f in feats) == sum(len(s) for s in de.examples)
    gold = [(s.heads, [universal_deprel(r) for r in s.deprels]) for s in de.examples]
    scores = tt.score(de, gold)
    assert scores["uas"] == scores["las"] == scores["clas"] == 1.0 and scores["n_words"] == 16499
    unit = tt.eval_units(["zh"])[0]
    zh = tt.load(unit, "test", data_root, for_eval=True)
    assert len(zh.examples) == 1000 and tt._treebanks[unit] == "UD_Chinese-PUD"
    with pytest.raises(DataNotFoundError, match="in-language-lowres"):
        tt.load("ja", "train", data_root, for_eval=False)
    assert len(read_conllu(data_root / "ud/UD_Vietnamese-VTB/vi_vtb-ud-train.conllu.gz")) == 1400
