"""Data hygiene of the pretraining pools (docs/data.md, docs/protocols.md) and the held-out split
(docs/data.md, "Fixed splits").

The leak check reads every evaluation split itself, independently of `evaluation_texts`, so a
split the pool builder forgot to exclude shows up here.
"""
from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from xbench.stages.blocks import heldout_split
from xbench.data.pools import TATOEBA, build_parallel, build_pool, normalise
from xbench.vocab.pretokenize import words
from xbench.errors import ConfigError, DataFormatError

XNLI_DEV_TRAIN_ROWS = 2241  # docs/data.md: rows from here on are the dev-heldout part


def _xnli(path: Path, start: int = 0) -> set[str]:
    rows = path.read_text(encoding="utf-8").splitlines()[start:]
    return {normalise(col) for row in rows for col in row.split("\t")[:2]}


def _ud_test(root: Path, lang: str) -> set[str]:
    out: set[str] = set()
    for path in (root / "ud").glob(f"*/{lang}_*-ud-test.conllu.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            out |= {normalise(line.split("=", 1)[1]) for line in f if line.startswith("# text =")}
    return out


def _tatoeba_test(root: Path, code: str, side: str) -> set[str]:
    lines = (root / "tatoeba" / f"tatoeba.{code}-eng.{side}").read_text(encoding="utf-8").splitlines()
    return {normalise(x) for x in lines[int(len(lines) * 0.8):]}


def evaluation_sentences(root: Path, lang: str) -> dict[str, set[str]]:
    """Every evaluation split a pool of `lang` could leak into, by name."""
    splits = {"xnli test": _xnli(root / "xnli" / "test" / f"{lang}.tsv"),
              "xnli dev-heldout": _xnli(root / "xnli" / "dev" / f"{lang}.tsv", XNLI_DEV_TRAIN_ROWS),
              "ud test": _ud_test(root, lang)}
    if lang == "en":  # the English side of every Tatoeba retrieval test set
        for code in TATOEBA.values():
            if (root / "tatoeba" / f"tatoeba.{code}-eng.eng").is_file():
                splits[f"tatoeba {code} eng test"] = _tatoeba_test(root, code, "eng")
    elif lang in TATOEBA:
        splits["tatoeba test"] = _tatoeba_test(root, TATOEBA[lang], TATOEBA[lang])
    return splits


@pytest.mark.parametrize("lang", ["en", "de", "zh"])
def test_no_test_sentence_is_pretraining_text(data_root, lang):
    pool = build_pool(lang, data_root)
    lines = set(pool.lines)
    splits = evaluation_sentences(data_root, lang)
    assert splits["xnli test"] and splits["ud test"], "the check needs the evaluation files it reads"
    leaks = {name: sorted(lines & texts)[:3] for name, texts in splits.items() if lines & texts}
    assert not leaks, f"{lang}-mono holds evaluation sentences: {leaks}"
    assert len(pool.lines) == len(lines)  # deduplicated


def test_pool_drops_what_it_would_leak(data_root):
    # English XNLI dev-train shares sentences with the test and dev-heldout parts; they must be dropped, not kept.
    assert build_pool("en", data_root).dropped_as_eval > 0


def test_heldout_split_is_a_stable_hash_partition():
    rng = random.Random(0)
    lines = [f"line {i} {rng.random()}" for i in range(20000)]
    train, held = heldout_split(lines, 0.05)
    assert sorted(train + held) == sorted(lines) and not set(train) & set(held)
    assert abs(len(held) / len(lines) - 0.05) < 0.006
    # Membership depends on the line alone: not on order, nor on which other lines are in the pool.
    shuffled = lines[:]
    rng.shuffle(shuffled)
    assert set(heldout_split(shuffled, 0.05)[1]) == set(held)
    assert set(heldout_split(lines[:5000], 0.05)[1]) == set(held) & set(lines[:5000])
    with pytest.raises(ConfigError):
        heldout_split(lines, 1.0)


def test_heldout_share_of_the_real_german_pool(data_root):
    pool = build_pool("de", data_root)
    train, held = heldout_split(pool.lines, 0.05)
    assert 0.035 < len(held) / len(pool.lines) < 0.065 and not set(train) & set(held)


@pytest.mark.parametrize("lang", ["de", "zh"])
def test_no_test_sentence_is_a_parallel_pair(data_root, lang):
    pool = build_parallel(lang, data_root)
    assert len(pool.pairs) > 3000 and len(pool.origins) == len(pool.pairs)
    en_side, xx_side = {en for en, _ in pool.pairs}, {xx for _, xx in pool.pairs}
    leaks = {f"en side / {name}": sorted(en_side & texts)[:3]
             for name, texts in evaluation_sentences(data_root, "en").items() if en_side & texts}
    leaks |= {f"{lang} side / {name}": sorted(xx_side & texts)[:3]
              for name, texts in evaluation_sentences(data_root, lang).items() if xx_side & texts}
    assert not leaks, f"en-{lang}-par holds evaluation sentences: {leaks}"
    assert len(set(pool.pairs)) == len(pool.pairs)
    # English first, whatever the file order (Tatoeba files put the other language first).
    tat = (data_root / "tatoeba" / f"tatoeba.{TATOEBA[lang]}-eng.eng").read_text(encoding="utf-8").splitlines()
    first = pool.origins.index(next(o for o in pool.origins if o.startswith("tatoeba/")))
    line = int(pool.origins[first].rsplit(":", 1)[1])
    assert pool.pairs[first][0] == normalise(tat[line - 1])
    assert pool.manifest()["dropped"]["eval"] > 0 or lang == "zh"


def test_parallel_filters_on_a_toy_root(tmp_path, monkeypatch):
    monkeypatch.delenv("XBENCH_DATA", raising=False)  # the toy root alone (--data-dir adds to XBENCH_DATA)
    tat = tmp_path / "tatoeba"
    tat.mkdir()
    de = ["Ein Hund.", "", "Ein Hund.", "Eins zwei drei vier fünf sechs sieben acht neun zehn.", "Test eins.",
          "x", "x", "x", "Prüfung.", "Eine Katze."]
    en = ["A dog.", "Empty other side.", "A dog.", "One.", "Test one.", "y", "y", "y", "Exam.", "A dog."]
    (tat / "tatoeba.deu-eng.deu").write_text("\n".join(de) + "\n", encoding="utf-8")
    (tat / "tatoeba.deu-eng.eng").write_text("\n".join(en) + "\n", encoding="utf-8")
    pool = build_parallel("de", tmp_path)
    # 8 training lines (80%): line 1 dropped (its English side is a retrieval test sentence, line 10), 2 empty,
    # 3 eval again, 4 ratio 10:1, 5 kept, 6 kept, 7-8 duplicates of 6.
    assert pool.pairs == [("Test one.", "Test eins."), ("y", "x")]
    assert pool.dropped == {"empty": 1, "duplicate": 2, "ratio": 1, "eval": 2}
    assert pool.origins[0] == "tatoeba/tatoeba.deu-eng.deu:5"
    (tat / "tatoeba.deu-eng.eng").write_text("\n".join(en[:4]) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="line-aligned"):
        build_parallel("de", tmp_path)
    with pytest.raises(ConfigError, match="cannot be English"):
        build_parallel("en", tmp_path)


def test_optional_pool_sources_are_flagged(data_root):
    plain = build_pool("en", data_root)
    more = build_pool("en", data_root, extras=("mlqa", "tydiqa"))
    assert more.sources["tydiqa"] > 1000 and more.sources["mlqa"] > 100
    assert len(more.lines) > len(plain.lines)
    # MLQA dev is an evaluation split; the English TyDiQA train file is training data in every protocol.
    assert "mlqa" in more.transductive and "tydiqa" not in more.transductive
    assert "tydiqa" in build_pool("sw", data_root, extras=("tydiqa",)).transductive  # sw train = offline test set
    with pytest.raises(ConfigError, match="unknown pool extra"):
        build_pool("en", data_root, extras=("wiki",))


def test_pretokeniser_splits_punctuation_and_cjk():
    assert words("Der Hund läuft, schnell!") == ["Der", "Hund", "läuft", ",", "schnell", "!"]
    assert words("我喜欢猫。 OK") == ["我", "喜", "欢", "猫", "。", "OK"]
