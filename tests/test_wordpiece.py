from __future__ import annotations

import pytest

from xbench.vocab.wordpiece import default_limit_alphabet, learn_vocabulary, train_wordpiece, vocabulary_stats
from xbench.errors import ConfigError


def test_merges_follow_counts_and_ties_break_by_string():
    # Alphabet sorted ("#" < "a"); "ab" (5) merges first; "cd" and "ce" tie at 3 and "##d" < "##e".
    counts = {"ab": 5, "cd": 3, "ce": 3}
    assert learn_vocabulary(counts, size=8) == ["##b", "##d", "##e", "a", "c", "ab", "cd", "ce"]
    assert learn_vocabulary(counts, size=7) == ["##b", "##d", "##e", "a", "c", "ab", "cd"]


def test_min_frequency_stops_merging():
    assert learn_vocabulary({"xy": 1}, size=10, min_frequency=2) == ["##y", "x"]


def test_training_is_deterministic_and_segments_like_wordpiece():
    lines = ["the cat sat on the mat", "the cats sat", "a dog sat on a log", "Das ist schön."] * 20
    a, b = train_wordpiece(lines, 60), train_wordpiece(reversed(lines), 60)
    assert a.get_vocab() == b.get_vocab()
    assert a.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert a.tokenize("cats") in (["cats"], ["cat", "##s"])
    enc = a("the cat", "a dog")
    assert enc["token_type_ids"][-1] == 1 and enc["input_ids"][0] == 2


def _cjk_heavy_lines() -> list[str]:
    # 400 distinct CJK characters with Zipf-like counts, plus Latin words: far more characters than entries.
    chars = [chr(0x4E00 + i) for i in range(400)]
    lines = ["".join(ch * max(1, 200 // (i + 1)) for i, ch in enumerate(chars))]
    lines += ["the cat sat on the mat", "Hunde laufen schnell"] * 30
    return lines


def test_vocab_size_is_a_hard_upper_bound_on_a_cjk_heavy_corpus():
    lines = _cjk_heavy_lines()
    for size, limit in ((60, None), (120, 0), (300, 1000)):
        tok = train_wordpiece(lines, size, limit_alphabet=limit)
        assert len(tok) <= size and len(tok.get_vocab()) == len(tok)
        stats = vocabulary_stats(tok)
        assert stats["vocab_size"] == len(tok) and stats["alphabet_size"] <= size
    # With room to spare, merges are still learnt next to the kept characters.
    assert vocabulary_stats(train_wordpiece(lines, 300, limit_alphabet=100))["multi_char_pieces"] > 0


def test_limit_alphabet_keeps_the_most_frequent_characters_and_the_rest_are_unknown():
    # a: 9, b: 5, c: 5, d: 1. With 2 characters: a, then b (ties with c: the smaller character wins).
    counts = {"a": 9, "b": 5, "c": 5, "d": 1}
    assert learn_vocabulary(counts, size=10, limit_alphabet=2) == ["a", "b"]
    assert learn_vocabulary(counts, size=10, limit_alphabet=3) == ["a", "b", "c"]
    # z: 65, a: 43, b: 33, q: 5. No merge is learnt across a character left out: without the limit,
    # "zq" (5) would be the first merge.
    counts = {"zq": 5, "ab": 3, "z": 60, "a": 40, "b": 30}
    assert learn_vocabulary(counts, size=10)[-2:] == ["zq", "ab"]
    assert learn_vocabulary(counts, size=10, limit_alphabet=3) == ["##b", "a", "b", "z", "ab"]
    lines = ["猫 猫 猫 狗 狗 鱼"] * 5
    tok = train_wordpiece(lines, 8, limit_alphabet=2)
    assert tok.tokenize("猫狗鱼") == ["猫", "狗", "[UNK]"]


def test_limited_training_is_deterministic():
    lines = _cjk_heavy_lines()
    a = train_wordpiece(lines, 150, limit_alphabet=80)
    b = train_wordpiece(list(reversed(lines)), 150, limit_alphabet=80)
    assert a.get_vocab() == b.get_vocab()


def test_default_limit_leaves_half_the_vocabulary_for_pieces():
    assert default_limit_alphabet(2000) == 1000 and default_limit_alphabet(4000) == 1000
    assert default_limit_alphabet(600) == 300
    with pytest.raises(ConfigError, match="more than 5 entries"):
        train_wordpiece(["abc"], 5)
