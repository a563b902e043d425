"""Train a byte-level BPE tokenizer locally (GPT-2 style; the causal smoke models of docs/data.md, "Tiny source
models", and the CLP helper of docs/methods/clp.md).

Why not `tokenizers.trainers.BpeTrainer`: like its WordPiece trainer (see wordpiece.py) it breaks
frequency ties by hash-map order and assigns ids in no fixed order, so the same text can give a
different tokenizer on another machine, and with it a different tiny model. xbench learns the
merges itself: the most frequent adjacent pair wins, ties go to the smallest (left, right)
strings, and ids follow a fixed order (special token, the 256 byte symbols by byte value, then
merges in the order they were learnt). Pre-tokenisation, the BPE model, the decoder and the
post-processor all come from `tokenizers`.

All 256 byte symbols are always in the vocabulary, so two byte-level tokenizers trained on any
two languages share at least those 256 tokens: the overlap CLP-Transfer needs
(docs/methods/clp.md, "Departures from the paper").
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from xbench.vocab.merges import greedy_merges
from xbench.errors import ConfigError

EOS = "<|endoftext|>"  # GPT-2's single special token: beginning, end and unknown at once


def byte_symbols() -> list[str]:
    """The printable stand-in of each byte 0..255, in byte order (GPT-2's `bytes_to_unicode`)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def learn_merges(word_counts: dict[str, int], num_merges: int, *,
                 min_frequency: int = 2) -> list[tuple[str, str]]:
    """Up to `num_merges` BPE merges over words spelt in byte symbols.

    Deterministic: the best pair has the highest count, then the smallest (left, right) strings
    (vocab/merges.py).
    """
    words: list[list[str]] = []
    counts: list[int] = []
    for word, count in sorted(word_counts.items()):
        words.append(list(word))
        counts.append(count)
    merges: list[tuple[str, str]] = []
    for left, right, _merged in greedy_merges(words, counts, str.__add__, min_frequency=min_frequency):
        if len(merges) >= num_merges:
            break
        merges.append((left, right))
    return merges


def train_byte_bpe(lines: Iterable[str], vocab_size: int, *, model_max_length: int = 1024,
                   min_frequency: int = 2) -> Any:
    """A GPT-2-style `PreTrainedTokenizerFast` with a deterministic vocabulary of at most `vocab_size` entries.

    No normaliser and no prefix space (as GPT-2); `<|endoftext|>` (id 0) is the bos, eos and unk token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = byte_symbols()
    if vocab_size < len(alphabet) + 1:
        raise ConfigError(f"a byte-level BPE vocabulary needs at least {len(alphabet) + 1} entries "
                          f"(the special token and 256 byte symbols), got {vocab_size}")
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    counts: Counter[str] = Counter()
    for line in lines:
        counts.update(w for w, _ in pre.pre_tokenize_str(line))
    merges = learn_merges(counts, vocab_size - len(alphabet) - 1, min_frequency=min_frequency)
    ordered = [EOS, *alphabet]
    seen = set(ordered)
    for left, right in merges:
        # Different merge paths can spell the same string; it keeps the id of its first appearance.
        if left + right not in seen:
            seen.add(left + right)
            ordered.append(left + right)
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(ordered)}, merges=merges, unk_token=EOS))
    tok.add_special_tokens([EOS])
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                   model_max_length=model_max_length)
