from __future__ import annotations

from xbench.components.wordpiece import learn_vocabulary, train_wordpiece


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
