"""Pre-split words to subword pieces and back (shared by dependency parsing and NER).

Words come from the treebank / NER file and are never re-tokenised from raw text: a fast
tokenizer is called with ``is_split_into_words=True`` and ``word_ids()`` links every piece to its
word. Two cases need care:

- **Words with zero pieces.** BERT's normaliser deletes control and format characters, so a word
  that is only e.g. U+200B ZERO WIDTH SPACE (present in PAN-X dev zh) or U+200E LEFT-TO-RIGHT MARK
  (dev ko) vanishes. Such a word is encoded as the unk token so that every word keeps a position
  and a label/head.
- **Sentences longer than max_length.** Whole words are dropped from the end (never half a word)
  and ``n_truncated`` reports how many per sentence, so the caller can record it, split the
  sentence, or refuse to evaluate.

Caveat: a word spelled exactly like a special token (``[SEP]``, ``<s>``) is matched as that
special token by HF tokenizers; no such word occurs in the shared UD or PAN-X files.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from xbench.errors import XbenchError

__all__ = ["encode_words", "pool_words"]


def _word_ids(encoding: Any, i: int) -> np.ndarray:
    return np.array([-1 if w is None else w for w in encoding.word_ids(i)], dtype=np.int64)


def encode_words(words_batch: list[list[str]], tokenizer: Any, max_length: int) -> dict[str, Any]:
    """Tokenise a batch of pre-split sentences.

    Returns a dict with
      - ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the tokenizer produces
        them): LongTensor [B, T], padded to the longest sequence;
      - ``word_index``: LongTensor [B, T], the word each piece belongs to, -1 for special
        tokens and padding;
      - ``first_subword``: LongTensor [B, W], position of each word's first piece (0 for padded
        word slots, use ``word_mask``);
      - ``word_mask``: BoolTensor [B, W], True for words that were kept;
      - ``n_words``: list[int], words kept per sentence (a prefix of the input words);
      - ``n_truncated``: list[int], words dropped from the end to fit ``max_length`` pieces;
      - ``n_unk_words``: list[int], words that had no pieces and were encoded as the unk token.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise XbenchError(
            f"{type(tokenizer).__name__} is not a fast tokenizer; word alignment needs word_ids() "
            "(load the tokenizer with use_fast=True or provide tokenizer.json)"
        )
    if not words_batch:
        raise ValueError("encode_words needs at least one sentence")
    words_batch = [list(words) for words in words_batch]
    full = tokenizer(words_batch, is_split_into_words=True, add_special_tokens=True, verbose=False)

    kept_batch: list[list[str]] = []
    n_truncated: list[int] = []
    n_unk: list[int] = []
    for i, words in enumerate(words_batch):
        wid = _word_ids(full, i)
        n_special = int((wid < 0).sum())
        pieces = np.bincount(wid[wid >= 0], minlength=len(words))
        empty = np.flatnonzero(pieces == 0)
        if empty.size:
            if tokenizer.unk_token is None:
                raise XbenchError(
                    f"words {[words[j] for j in empty[:5]]} have no subword pieces and the tokenizer "
                    "has no unk token to stand in for them"
                )
            for j in empty:
                words[j] = tokenizer.unk_token
            pieces[empty] = 1
        budget = max_length - n_special
        if budget < 1:
            raise XbenchError(f"max_length={max_length} leaves no room for words after {n_special} special tokens")
        keep = int(np.searchsorted(np.cumsum(pieces), budget, side="right"))
        kept_batch.append(words[:keep])
        n_truncated.append(len(words) - keep)
        n_unk.append(int((empty < keep).sum()))

    enc = tokenizer(
        kept_batch, is_split_into_words=True, add_special_tokens=True, padding=True, return_tensors="pt"
    )
    b = len(kept_batch)
    n_words = [len(w) for w in kept_batch]
    w_max = max(n_words)
    word_index = torch.from_numpy(np.stack([_word_ids(enc, i) for i in range(b)]))
    prev = torch.cat([word_index.new_full((b, 1), -1), word_index[:, :-1]], dim=1)
    is_first = (word_index >= 0) & (word_index != prev)
    found = is_first.sum(dim=1).tolist()
    if found != n_words:
        bad = next(i for i in range(b) if found[i] != n_words[i])
        raise XbenchError(
            f"the tokenizer gives no pieces to some words of sentence {bad} even after replacing them with "
            f"{tokenizer.unk_token!r} ({found[bad]} of {n_words[bad]} words have pieces)"
        )
    word_mask = torch.arange(w_max)[None, :] < torch.tensor(n_words, dtype=torch.long)[:, None]
    first_subword = torch.zeros(b, w_max, dtype=torch.long)
    # nonzero() walks rows in order and words are contiguous, so this fills word slots in order.
    first_subword[word_mask] = torch.nonzero(is_first)[:, 1]

    out: dict[str, Any] = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if "token_type_ids" in enc:
        out["token_type_ids"] = enc["token_type_ids"]
    out.update(
        word_index=word_index,
        first_subword=first_subword,
        word_mask=word_mask,
        n_words=n_words,
        n_truncated=n_truncated,
        n_unk_words=n_unk,
    )
    return out


def pool_words(
    hidden: Tensor, word_index: Tensor, n_words: int, mode: Literal["first", "mean"] = "first"
) -> Tensor:
    """Word vectors [B, n_words, H] from subword vectors [B, T, H].

    ``word_index`` [B, T] gives each piece's word (-1: special/padding). ``first`` takes each
    word's first piece (the xbench default, as in BERT's NER setup); ``mean`` averages its pieces.
    Word slots with no piece are zero. Pieces with index >= n_words are ignored.
    """
    if mode not in ("first", "mean"):
        raise ValueError(f"unknown pooling mode {mode!r}; expected 'first' or 'mean'")
    b, t, h = hidden.shape
    valid = (word_index >= 0) & (word_index < n_words)
    # Pieces that belong to no word go to an extra slot n_words that is cut off at the end.
    slot = torch.where(valid, word_index, torch.full_like(word_index, n_words))
    if mode == "first":
        prev = torch.cat([word_index.new_full((b, 1), -1), word_index[:, :-1]], dim=1)
        slot = torch.where(valid & (word_index != prev), slot, torch.full_like(slot, n_words))
        out = hidden.new_zeros(b, n_words + 1, h).scatter(1, slot[..., None].expand(-1, -1, h), hidden)
        return out[:, :n_words]
    summed = hidden.new_zeros(b, n_words + 1, h).scatter_add(1, slot[..., None].expand(-1, -1, h), hidden)
    counts = torch.zeros(b, n_words + 1, dtype=hidden.dtype, device=hidden.device)
    counts = counts.scatter_add(1, slot, valid.to(hidden.dtype))
    return summed[:, :n_words] / counts[:, :n_words, None].clamp(min=1)
