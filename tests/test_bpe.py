"""xbench's deterministic byte-level BPE learner (vocab/bpe.py)."""
from __future__ import annotations

import pytest

from xbench.vocab.bpe import EOS, byte_symbols, learn_merges, train_byte_bpe
from xbench.errors import ConfigError


def test_merges_follow_counts_and_ties_break_by_string():
    # "ab" occurs 5 times; ("c", "d") and ("c", "e") tie at 3 and "d" < "e"; then "abx" is left at 2 < 3.
    counts = {"ab": 5, "cd": 3, "ce": 3}
    assert learn_merges(counts, 10) == [("a", "b"), ("c", "d"), ("c", "e")]
    assert learn_merges({"abab": 2}, 10) == [("a", "b"), ("ab", "ab")]
    assert learn_merges({"xy": 1}, 10) == []  # below min_frequency


def test_training_is_deterministic_and_keeps_every_byte():
    lines = ["the cat sat on the mat", "the cats sat", "ein Hund saß auf dem Baum", "我喜欢猫。"] * 20
    a, b = train_byte_bpe(lines, 300), train_byte_bpe(list(reversed(lines)), 300)
    assert a.get_vocab() == b.get_vocab() and len(a) <= 300
    vocab = a.get_vocab()
    assert vocab[EOS] == 0 and all(vocab[s] == i + 1 for i, s in enumerate(byte_symbols()))
    assert a.eos_token == a.bos_token == EOS
    for text in ("the cat", "Baum saß", "猫。", "unseen Ωmega"):
        assert a.decode(a(text)["input_ids"]) == text  # byte-level: nothing is unknown


def test_too_small_vocabulary_is_a_config_error():
    with pytest.raises(ConfigError, match="at least 257"):
        train_byte_bpe(["abc"], 100)
