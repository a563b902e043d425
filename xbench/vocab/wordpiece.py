"""Train a cased WordPiece tokenizer locally (the smoke profile's tokenizers).

Why not `tokenizers.trainers.WordPieceTrainer`: in tokenizers 0.23 it breaks frequency ties by
hash-map order, so the same text gives a different vocabulary now and then (measured here: 3 of
12 runs on the English pool differed by one entry, `##IA` vs `CI`), and the ids differ on every
run. A different vocabulary means a different tiny model on a fresh machine, and a regression
check that fails for no reason. So xbench learns the vocabulary itself with the same BPE-style
procedure (merge the most frequent adjacent pair; continuation pieces carry `##`) but breaks
ties by the pair's strings, and assigns ids in a fixed order. Normalisation, pre-tokenisation,
the WordPiece model and the post-processor all come from `tokenizers`.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from xbench.vocab.merges import greedy_merges
from xbench.errors import ConfigError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PREFIX = "##"
# Default `limit_alphabet`: 1,000 characters, the default of `tokenizers`' BertWordPieceTokenizer,
# and never more than half the vocabulary, so at least half is left for multi-character pieces.
# Without a limit a Chinese pool filled a 2,000-entry vocabulary with 3,255 single characters, no
# merge at all, 1,260 entries over the size asked for. Measured on the shared data's zh pool: the
# 1,000 most frequent characters cover 92% of its characters (500: 79%, 2,000: 99%), so about 8% of
# Chinese characters become [UNK] under the default; the en and de pools have 161 distinct
# characters each and are not affected.
DEFAULT_LIMIT_ALPHABET = 1000


def default_limit_alphabet(vocab_size: int) -> int:
    """The default number of distinct characters kept for a vocabulary of `vocab_size` entries."""
    return max(1, min(DEFAULT_LIMIT_ALPHABET, vocab_size // 2))


def _symbols(word: str) -> list[str]:
    return [word[0]] + [PREFIX + ch for ch in word[1:]]


def learn_vocabulary(word_counts: dict[str, int], size: int, *, min_frequency: int = 2,
                     limit_alphabet: int | None = None) -> list[str]:
    """At most `size` entries: the alphabet (first characters plain, later ones `##`-prefixed), then merges.

    `size` is a hard upper bound, alphabet included. With `limit_alphabet`, only that many distinct
    characters are kept, the most frequent (ties: the smaller character); if the symbols of the kept
    characters still exceed `size`, the most frequent symbols are kept (ties: the smaller string). A
    symbol left out becomes `[UNK]` when encoding (the WordPiece model maps a word it cannot spell
    wholly to `[UNK]`; CJK characters are words of their own), and no merge is learnt across it, as
    the `tokenizers` trainers do.

    Deterministic: words are visited in sorted order and the best pair is the one with the
    highest count, then the smallest (left, right) strings.
    """
    if size < 1:
        return []
    char_counts: dict[str, int] = {}
    symbol_counts: dict[str, int] = {}
    for word, count in word_counts.items():
        for ch in word:
            char_counts[ch] = char_counts.get(ch, 0) + count
        for sym in _symbols(word):
            symbol_counts[sym] = symbol_counts.get(sym, 0) + count
    chars = set(char_counts)
    if limit_alphabet is not None and len(chars) > limit_alphabet:
        chars = set(sorted(char_counts, key=lambda c: (-char_counts[c], c))[:max(0, limit_alphabet)])
    symbols = [sym for sym in symbol_counts if (sym[len(PREFIX):] if len(sym) > 1 else sym) in chars]
    if len(symbols) > size:
        symbols = sorted(symbols, key=lambda sym: (-symbol_counts[sym], sym))[:size]
    kept = set(symbols)
    # A word is cut at every symbol left out: merges are learnt within the kept runs only.
    words: list[list[str]] = []
    counts: list[int] = []
    for word, count in sorted(word_counts.items()):
        run: list[str] = []
        for sym in _symbols(word) + [""]:
            if sym in kept:
                run.append(sym)
                continue
            if len(run) > 1:
                words.append(run)
                counts.append(count)
            run = []
    vocab = sorted(kept)
    known = set(vocab)
    if len(vocab) >= size:
        return vocab
    for _left, _right, merged in greedy_merges(words, counts, lambda a, b: a + b[len(PREFIX):],
                                               min_frequency=min_frequency):
        if merged not in known:
            known.add(merged)
            vocab.append(merged)
            if len(vocab) >= size:
                break
    return vocab


def vocabulary_stats(tokenizer: Any, family: str = "wordpiece") -> dict[str, int]:
    """Size and composition of a vocabulary, for stage and encoder records (byte-level BPE: 256 byte symbols)."""
    if family == "unigram":
        pieces = [t.lstrip("\u2581") for t in tokenizer.get_vocab() if t not in tokenizer.all_special_tokens]
        return {"vocab_size": len(tokenizer), "alphabet_size": len({p for p in pieces if len(p) == 1}),
                "single_char_pieces": sum(len(p) == 1 for p in pieces), "multi_char_pieces": sum(len(p) > 1 for p in pieces)}
    if family != "wordpiece":
        return {"vocab_size": len(tokenizer), "alphabet_size": 256}
    pieces = [t for t in tokenizer.get_vocab() if t not in SPECIALS]
    bare = [t[len(PREFIX):] if t.startswith(PREFIX) and len(t) > len(PREFIX) else t for t in pieces]
    return {"vocab_size": len(tokenizer), "alphabet_size": len({b for b in bare if len(b) == 1}),
            "single_char_pieces": sum(len(b) == 1 for b in bare), "multi_char_pieces": sum(len(b) > 1 for b in bare)}


def _pipeline(lowercase: bool, strip_accents: bool | None = None) -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    if strip_accents is None:  # BERT's rule: accents go with lower-casing
        strip_accents = None if lowercase else False
    tok = Tokenizer(models.WordPiece(vocab={"[UNK]": 0}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=strip_accents,
                                                clean_text=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def train_wordpiece(lines: Iterable[str], vocab_size: int, *, lowercase: bool = False,
                    limit_alphabet: int | None = None, strip_accents: bool | None = None) -> Any:
    """A `PreTrainedTokenizerFast` with a deterministic vocabulary of at most `vocab_size` entries
    (special tokens included), keeping at most `limit_alphabet` distinct characters
    (default: `default_limit_alphabet(vocab_size)`; 0 or less: no limit).

    `strip_accents` None follows BERT (accents stripped only when lower-casing); True strips them from
    cased text too, as TreLM's joint vocabulary does (docs/methods/trelm.md, "Stages")."""
    if vocab_size <= len(SPECIALS):
        raise ConfigError(f"a WordPiece vocabulary needs more than {len(SPECIALS)} entries (the special tokens "
                          f"{', '.join(SPECIALS)}), got {vocab_size}")
    if limit_alphabet is None:
        limit_alphabet = default_limit_alphabet(vocab_size)
    from tokenizers import decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    tok = _pipeline(lowercase, strip_accents)
    counts: Counter[str] = Counter()
    for line in lines:
        normalised = tok.normalizer.normalize_str(line)
        counts.update(w for w, _ in tok.pre_tokenizer.pre_tokenize_str(normalised))
    learned = learn_vocabulary(counts, vocab_size - len(SPECIALS),
                               limit_alphabet=limit_alphabet if limit_alphabet > 0 else None)
    ordered = SPECIALS + [t for t in learned if t not in SPECIALS]
    tok.model = models.WordPiece(vocab={t: i for i, t in enumerate(ordered)}, unk_token="[UNK]",
                                 max_input_chars_per_word=100)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece()
    # transformers 5 drops token_type_ids unless asked (environment.md §2e): sentence pairs need them.
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])
