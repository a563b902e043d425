"""Static subword vectors (docs/embeddings.md): skip-gram fastText vectors
trained on tokenised text, one row per vocabulary entry.

TreLM's Stage B trains them on the joint en+xx corpus as its tokenizer splits it, and Stage C maps
them into the source model's embedding space (xbench/embeddings/mapping.py). The backend is gensim's
`FastText` (sg=1): a well-kept implementation of the fastText skip-gram with character n-grams, with
wheels for this Python, where the `fasttext` package needs a compiler and has no maintained release.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from xbench.errors import XbenchError

# The row of a vocabulary entry that never occurs in the corpus (docs/embeddings.md).
ABSENT_VALUE = 1e-8


@dataclass(frozen=True)
class StaticVectorSettings:
    """fastText skip-gram settings; the defaults are the fastText ones TreLM's reference uses, except `dim`
    (the source model's hidden size, which the caller passes) and `epochs` (profiles set it)."""

    dim: int = 64
    epochs: int = 10
    window: int = 5
    negative: int = 10
    min_count: int = 1  # fastText's minCount 0 and gensim's 1 both keep every token that occurs
    min_n: int = 3
    max_n: int = 6
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stable_hash(text: str) -> int:
    # gensim seeds each word's initial vector with hash(word); Python's str hash changes per process
    # (PYTHONHASHSEED), so two runs with one seed would differ. crc32 is the same everywhere.
    return zlib.crc32(text.encode("utf-8"))


def train_static_vectors(sentences: Sequence[Sequence[str]], vocabulary: Sequence[str],
                         settings: StaticVectorSettings) -> tuple[Any, dict[str, Any]]:
    """A (len(vocabulary) x dim) float32 matrix whose row i is the vector of `vocabulary[i]`, and a report.

    `sentences` are token sequences (e.g. subword pieces). Entries of `vocabulary` that never occur in
    them get the constant row ABSENT_VALUE, not fastText's n-gram guess: what the corpus did not show,
    the mapping must not pretend to know. One worker thread: gensim is reproducible only with one.
    """
    import numpy as np
    from gensim.models import FastText

    if settings.dim < 1 or settings.epochs < 1:
        raise XbenchError(f"static vectors need dim >= 1 and epochs >= 1, got {settings.dim} and {settings.epochs}")
    corpus = [list(s) for s in sentences if len(s)]
    if not corpus:
        raise XbenchError("static vectors: the corpus has no tokens")
    model = FastText(vector_size=settings.dim, window=settings.window, min_count=settings.min_count, sg=1,
                     negative=settings.negative, min_n=settings.min_n, max_n=settings.max_n, workers=1,
                     seed=settings.seed, hashfxn=_stable_hash)
    model.build_vocab(corpus_iterable=corpus)
    model.train(corpus_iterable=corpus, total_examples=len(corpus), epochs=settings.epochs)
    known = model.wv.key_to_index
    out = np.full((len(vocabulary), settings.dim), ABSENT_VALUE, dtype=np.float32)
    present = [i for i, tok in enumerate(vocabulary) if tok in known]
    if present:
        out[present] = np.stack([model.wv.get_vector(vocabulary[i]) for i in present]).astype(np.float32)
    report = {"backend": "gensim FastText skip-gram", "settings": settings.to_dict(), "sentences": len(corpus),
              "tokens": int(sum(len(s) for s in corpus)), "vocabulary": len(vocabulary), "present": len(present),
              "absent": len(vocabulary) - len(present)}
    return out, report


def token_frequencies(sentences: Iterable[Sequence[str]], vocabulary: Sequence[str]) -> list[int]:
    """How often each vocabulary entry occurs: the frequency order the mapping's dictionary and criterion use."""
    from collections import Counter

    counts = Counter(tok for s in sentences for tok in s)
    return [counts.get(tok, 0) for tok in vocabulary]
