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

from xbench.components.merges import greedy_merges

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PREFIX = "##"


def learn_vocabulary(word_counts: dict[str, int], size: int, *, min_frequency: int = 2) -> list[str]:
    """Alphabet (first characters plain, later ones `##`-prefixed) plus merges until `size` entries.

    Deterministic: words are visited in sorted order and the best pair is the one with the
    highest count, then the smallest (left, right) strings.
    """
    words: list[list[str]] = []
    counts: list[int] = []
    for word, count in sorted(word_counts.items()):
        words.append([word[0]] + [PREFIX + ch for ch in word[1:]])
        counts.append(count)
    vocab = sorted({s for syms in words for s in syms})
    known = set(vocab)
    for _left, _right, merged in greedy_merges(words, counts, lambda a, b: a + b[len(PREFIX):],
                                               min_frequency=min_frequency):
        if len(vocab) >= size:
            break
        if merged not in known:
            known.add(merged)
            vocab.append(merged)
    return vocab


def _pipeline(lowercase: bool) -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.WordPiece(vocab={"[UNK]": 0}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None if lowercase else False,
                                                clean_text=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def train_wordpiece(lines: Iterable[str], vocab_size: int, *, lowercase: bool = False) -> Any:
    """A `PreTrainedTokenizerFast` with a deterministic vocabulary of at most `vocab_size` entries."""
    from tokenizers import decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    tok = _pipeline(lowercase)
    counts: Counter[str] = Counter()
    for line in lines:
        normalised = tok.normalizer.normalize_str(line)
        counts.update(w for w, _ in tok.pre_tokenizer.pre_tokenize_str(normalised))
    learned = learn_vocabulary(counts, vocab_size - len(SPECIALS))
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
