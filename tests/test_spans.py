"""The CLISM span finder (docs/methods/clism.md, "Span finder"): the heuristic's rules, the filters
every backend shares, backend resolution, and the untyped span F1 on PAN-X en dev."""
from __future__ import annotations

from pathlib import Path

import pytest

from xbench.data import spans as spans_mod
from xbench.data.pools import build_parallel
from xbench.data.spans import (ENT, MAX_SPAN_WORDS, NUM, HeuristicSpanFinder, apply_filters, bio_spans,
                               char_span_to_words, is_stop_word, resolve_span_finder, span_f1, span_f1_on_panx)
from xbench.errors import ConfigError, DataNotFoundError, XbenchError
from xbench.vocab.pretokenize import words as W


def _texts(words: list[str], found: list[tuple[int, int, str]]) -> list[tuple[str, str]]:
    return [(" ".join(words[s:e]), t) for s, e, t in found]


def _finder(*corpus: str) -> HeuristicSpanFinder:
    return HeuristicSpanFinder([W(text) for text in corpus])


# Corpus in which names occur mid-sentence but "Yesterday" only ever starts a sentence.
CORPUS = ["Yesterday was cold .", "I saw Tom and Mary at the Bank of England .", "We met Rolls - Royce people ."]


@pytest.fixture(scope="module")
def en_lines(data_root: Path) -> list[list[str]]:
    """The English sides of the en-de parallel pairs, pre-tokenised."""
    return [W(en) for en, _ in build_parallel("de", data_root).pairs]


# --------------------------------------------------------------------------- the spec's example


def test_spec_example_sentence_initial_word_without_mid_sentence_capital() -> None:
    sentence = W("Yesterday Tom called Mary at 5.")
    assert sentence == ["Yesterday", "Tom", "called", "Mary", "at", "5", "."]
    found = _finder(*CORPUS).find(sentence)
    assert found == [(1, 2, ENT), (3, 4, ENT), (5, 6, NUM)]
    assert _texts(sentence, found) == [("Tom", ENT), ("Mary", ENT), ("5", NUM)]


def test_sentence_initial_word_stays_when_capitalised_mid_sentence_in_corpus() -> None:
    sentence = W("Yesterday Tom called Mary at 5.")
    found = _finder(*CORPUS, "He said Yesterday is a song .").find(sentence)
    # "Yesterday" joins the maximal capitalised run it starts.
    assert _texts(sentence, found) == [("Yesterday Tom", ENT), ("Mary", ENT), ("5", NUM)]


def test_initial_position_skips_leading_punctuation_and_restarts_after_sentence_end() -> None:
    finder = _finder(*CORPUS)
    sentence = W('"Hello," said Tom. Let\'s go.')
    assert _texts(sentence, finder.find(sentence)) == [("Tom", ENT)]
    # The table is built with the same notion of "initial": "Hello" after ". " does not enter it.
    assert "Hello" not in _finder("Fine . Hello there .").capitalised_forms
    assert "Hello" in _finder("Fine , Hello there .").capitalised_forms


# --------------------------------------------------------------------------- connectors


def test_connector_inside_a_run() -> None:
    sentence = W("He works at the Bank of England now.")
    assert _texts(sentence, _finder(*CORPUS).find(sentence)) == [("Bank of England", ENT)]
    sentence = W("He works at the Bank Of England now.")  # title case joins too
    assert _texts(sentence, _finder(*CORPUS).find(sentence)) == [("Bank Of England", ENT)]
    sentence = W("Pierre de la Fontaine wrote it .")
    assert _texts(sentence, _finder("We read Pierre today .").find(sentence)) == [("Pierre de la Fontaine", ENT)]


def test_removed_initial_word_does_not_leave_a_connector_at_the_start() -> None:
    sentence = W("Bank of England raised rates.")
    assert _finder(*CORPUS).find(sentence) == [(0, 3, ENT)]  # "Bank" occurs capitalised mid-sentence
    assert _texts(sentence, _finder("We went to England .").find(sentence)) == [("England", ENT)]
    sentence = W("Of England he sang.")
    assert _texts(sentence, _finder(*CORPUS).find(sentence)) == [("England", ENT)]


def test_hyphen_and_ampersand_runs() -> None:
    sentence = W("They bought a Rolls-Royce from AT&T today.")
    assert sentence[3:6] == ["Rolls", "-", "Royce"] and sentence[7:10] == ["AT", "&", "T"]
    assert _texts(sentence, _finder(*CORPUS).find(sentence)) == [("Rolls - Royce", ENT), ("AT & T", ENT)]


def test_connector_at_a_run_edge_is_excluded() -> None:
    finder = _finder(*CORPUS)
    for text, expected in [("He spoke of Paris today .", [("Paris", ENT)]),
                           ("The fans of Tom - and others .", [("Tom", ENT)]),
                           ("A friend of Mary & me came .", [("Mary", ENT)]),
                           ("They sold it - Royce said so .", [("Royce", ENT)]),
                           ("Ask Tom of the team .", [("Tom", ENT)])]:
        sentence = W(text)
        assert _texts(sentence, finder.find(sentence)) == expected, text


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("text, expected", [
    ("It rose 50% today .", ["50 %"]),
    ("It rose 50 % today .", ["50 %"]),
    ("We meet at 12:30 today .", ["12 : 30"]),
    ("Pi is 3.14 roughly .", ["3 . 14"]),
    ("Born on 2020-01-02 in town .", ["2020 - 01 - 02"]),
    ("About 1,000,000 people came .", ["1 , 000 , 000"]),
    ("See pages 10/12 or 7 .", ["10 / 12", "7"]),
    ("Tom called at 5.", ["Tom", "5"]),           # the sentence-final "." stays out
    ("Come at 5. Tom waits .", ["5", "Tom"]),       # a "." joins only between two number tokens
])
def test_number_spans_after_pre_tokenisation(text: str, expected: list[str]) -> None:
    sentence = W(text)
    assert [t for t, _ in _texts(sentence, _finder(*CORPUS).find(sentence))] == expected


def test_number_spans_of_whole_tokens_and_types() -> None:
    # Already tokenised corpora (PAN-X) keep "3.14" and "50%" as single tokens.
    sentence = ["It", "rose", "50%", "or", "3.14", "or", "7", "%", "."]
    assert HeuristicSpanFinder([]).find(sentence) == [(2, 3, NUM), (4, 5, NUM), (6, 8, NUM)]
    # "50%" already carries its "%": a following "%" token is not part of it.
    assert HeuristicSpanFinder([]).find(["x", "50%", "%", "y"]) == [(1, 2, NUM)]


# --------------------------------------------------------------------------- stop words and filters


def test_I_is_a_stop_word_and_never_a_span() -> None:
    assert is_stop_word("I") and is_stop_word("i") and is_stop_word("The")
    finder = _finder(*CORPUS, "so I said")
    for text in ["Then I left .", "I left .", "Tom and I left early ."]:
        sentence = W(text)
        assert all(sentence[s:e] != ["I"] for s, e, _ in finder.find(sentence)), text


def test_acronyms_spelling_stop_words_are_not_stop_words() -> None:
    assert not is_stop_word("US") and not is_stop_word("IT") and is_stop_word("Us")
    sentence = W("He moved to the US last year .")
    assert _texts(sentence, _finder(*CORPUS).find(sentence)) == [("US", ENT)]


def test_filter_drops_stop_word_only_long_and_whole_sentence_spans() -> None:
    words = ["He", "read", "The", "book", "by", "Tom", "today", "."]
    assert apply_filters([(2, 3, ENT)], words) == []                      # "The" capitalised mid-sentence
    assert apply_filters([(2, 4, ENT)], words) == [(2, 4, ENT)]            # "The book" has a content word
    assert _texts(words, _finder(*CORPUS).find(words)) == [("Tom", ENT)]  # the heuristic never starts with "The"
    assert apply_filters([(0, 7, ENT), (0, 8, ENT)], words) == []          # the whole sentence (with or without ".")
    assert apply_filters([(5, 5, ENT), (6, 9, ENT), (-1, 2, ENT), (3, 2, ENT)], words) == []  # out of bounds
    long_words = [f"W{i}" for i in range(MAX_SPAN_WORDS + 3)]
    assert apply_filters([(0, MAX_SPAN_WORDS + 1, ENT)], long_words) == []
    assert apply_filters([(0, MAX_SPAN_WORDS, ENT)], long_words) == [(0, MAX_SPAN_WORDS, ENT)]
    assert apply_filters([(5, 6, ENT), (1, 2, NUM), (5, 6, ENT)], words) == [(1, 2, NUM), (5, 6, ENT)]
    # A long capitalised run and a sentence that is one entity: the finder's own output obeys the filters.
    title = W("We read " + " ".join(f"Name{i}" for i in range(12)) + " today .")
    assert _finder(*CORPUS).find(title) == []
    assert _finder(*CORPUS).find(W("Tom .")) == [] and _finder().find(W("3.14")) == []


def test_every_span_on_real_english_lines_respects_the_filters(en_lines: list[list[str]]) -> None:
    lines = en_lines[:800]
    finder = resolve_span_finder("heuristic", en_lines)
    found = finder.find_all(lines)
    assert sum(map(len, found)) > 200  # a finder that finds nothing would pass the checks below vacuously
    for words, spans in zip(lines, found):
        content = [i for i, w in enumerate(words) if any(ch.isalnum() for ch in w)]
        for s, e, t in spans:
            assert 0 <= s < e <= len(words) and t in (ENT, NUM)
            assert e - s <= MAX_SPAN_WORDS, (words, s, e)
            assert not all(is_stop_word(w) or not any(ch.isalnum() for ch in w) for w in words[s:e]), (words, s, e)
            assert not (s <= content[0] and content[-1] < e), (words, s, e)
            assert words[s] not in ("of", "-", "&") and words[e - 1] not in ("of", "-", "&")


# --------------------------------------------------------------------------- backends


def test_spacy_missing_raises_with_install_hint_and_auto_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spans_mod, "_importable", lambda module: False)
    with pytest.raises(XbenchError, match=r"python -m spacy download en_core_web_sm") as exc:
        resolve_span_finder("spacy", [])
    assert "spaCy package" in str(exc.value) and "never downloads" in str(exc.value)
    # spaCy present, no English model package: the message says that the model is what is missing.
    monkeypatch.setattr(spans_mod, "_importable", lambda module: module == "spacy")
    with pytest.raises(XbenchError, match=r"English spaCy model package .*en_core_web_sm"):
        resolve_span_finder("spacy", [])
    finder = resolve_span_finder("auto", [W(t) for t in CORPUS])
    assert finder.name == "heuristic" and isinstance(finder, HeuristicSpanFinder)
    assert finder.fingerprint()["backend"] == "heuristic"


def test_spacy_unavailable_here_without_monkeypatching() -> None:
    if spans_mod.spacy_problem() is None:
        pytest.skip("spaCy and an English model are installed here")
    with pytest.raises(XbenchError, match="en_core_web_sm"):
        resolve_span_finder("spacy", [])
    assert resolve_span_finder("auto", []).name == "heuristic"


def test_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="valid: auto, spacy, heuristic"):
        resolve_span_finder("panx-typo", [])


def test_fingerprint_names_backend_rules_and_corpus_table() -> None:
    a, b = _finder(*CORPUS), _finder(*CORPUS, "I met Zed .")
    fa = a.fingerprint()
    assert fa["backend"] == "heuristic" and fa["rules_version"] == spans_mod.RULES_VERSION
    assert fa == _finder(*CORPUS).fingerprint()
    assert fa["capitalised_forms"] != b.fingerprint()["capitalised_forms"]


def test_char_spans_snap_outward_to_words() -> None:
    words = ["The", "U.S.-based", "firm", "Acme", "Corp", "."]
    text, starts, ends = spans_mod._word_offsets(words)
    assert text == "The U.S.-based firm Acme Corp ."
    assert [text[s:e] for s, e in zip(starts, ends)] == words
    u = text.index("U.S.")
    assert char_span_to_words(starts, ends, u, u + 4) == (1, 2)                 # "U.S." inside "U.S.-based"
    acme = text.index("Acme")
    assert char_span_to_words(starts, ends, acme, acme + len("Acme Corp")) == (3, 5)
    assert char_span_to_words(starts, ends, acme + 1, acme + 7) == (3, 5)      # ends inside "Corp"
    assert char_span_to_words(starts, ends, acme - 1, acme) is None            # only the space


def test_spacy_backend_maps_entities_to_words() -> None:
    pytest.importorskip("spacy")
    pytest.importorskip("en_core_web_sm")
    finder = resolve_span_finder("spacy", [])
    assert finder.name == "spacy" and finder.fingerprint()["model"]
    sentence = W("Yesterday Barack Obama visited Paris with 300 people.")
    found = finder.find(sentence)
    assert (1, 3) in {(s, e) for s, e, _ in found}
    assert all(0 <= s < e <= len(sentence) for s, e, _ in found)


# --------------------------------------------------------------------------- span F1 on PAN-X


def test_bio_spans_reads_iob2_like_conlleval() -> None:
    tags = ["B-PER", "I-PER", "O", "I-LOC", "B-ORG", "I-LOC", "B-LOC", "B-LOC", "I-LOC"]
    assert bio_spans(tags) == [(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "ORG"), (5, 6, "LOC"), (6, 7, "LOC"),
                               (7, 9, "LOC")]


def test_span_f1_counts_exact_untyped_boundaries() -> None:
    class Fixed:
        name = "fixed"

        def find_all(self, sentences):
            return [[(0, 2, "X"), (3, 4, "Y")], [(1, 2, "Z")]]

    sentences = [(["a", "b", "c", "d"], ["B-PER", "I-PER", "O", "B-LOC"]),
                 (["a", "b", "c"], ["B-ORG", "I-ORG", "O"])]
    r = span_f1(Fixed(), sentences)  # 2 of 3 predictions hit 2 of 3 gold spans, types ignored
    assert (r["n_gold"], r["n_pred"], r["n_correct"], r["n_sentences"]) == (3, 3, 2, 2)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 / 3)


def test_span_f1_on_real_panx_en_dev(en_lines: list[list[str]]) -> None:
    finder = resolve_span_finder("heuristic", en_lines)
    r = span_f1_on_panx(finder)  # data root from XBENCH_DATA
    assert {"precision", "recall", "f1", "n_sentences", "n_gold", "n_pred"} <= set(r)
    assert all(0.0 <= r[k] <= 1.0 for k in ("precision", "recall", "f1"))
    assert r["n_sentences"] == 10000 and r["n_gold"] > 0 and r["n_pred"] > 0
    assert r["f1"] > 0.2  # measured 0.356: a broken rule shows up as a collapse
    assert r["data"]["files"][0]["path"] == "panx/dev-en.tsv.gz"


def test_span_f1_on_panx_without_data_says_what_was_looked_for(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.delenv("XBENCH_DATA", raising=False)
    with pytest.raises(DataNotFoundError, match="panx/dev-en.tsv.gz"):
        span_f1_on_panx(HeuristicSpanFinder([]), tmp_path)
