"""Sentence retrieval accuracy between translations (docs/methods/README.md, "Shared building blocks").

Each side is encoded on its own; a sentence is the mean of one layer's hidden states over its
non-special, non-padding tokens; a hit is when the cosine nearest neighbour among all
sentences of the other side is the sentence's own translation.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor

from xbench.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["encode_sentences", "retrieval_accuracy", "tatoeba_retrieval"]


def _num_layers(model: PreTrainedModel) -> int:
    cfg = model.config.get_text_config()
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(getattr(cfg, attr, None), int):
            return getattr(cfg, attr)
    raise ConfigError(f"cannot tell the number of layers of {type(model).__name__}; pass layer= explicitly")


def encode_sentences(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    *,
    layer: int,
    batch_size: int = 64,
    max_length: int = 128,
) -> Tensor:
    """float32 sentence vectors (n × d): mean of `hidden_states[layer]` over content tokens.

    `hidden_states[0]` is the embedding output and `hidden_states[i]` the output of layer i.
    A sentence without any content token (an empty line) gets the zero vector.
    """
    if not sentences:
        raise ConfigError("no sentences to encode")
    encoder = model.base_model  # skips the LM head: its logits are never used here
    device = next(model.parameters()).device
    encoded: list[tuple[list[int], list[int]]] = []  # (input ids, special-token mask) per sentence
    for start in range(0, len(sentences), batch_size):
        enc = tokenizer(
            list(sentences[start : start + batch_size]),
            truncation=True,
            max_length=max_length,
            return_special_tokens_mask=True,
        )
        encoded += zip(enc["input_ids"], enc["special_tokens_mask"])
    # Length-sorted batches pad far less (environment spec §3(c)); rows are put back in order.
    order = sorted(range(len(sentences)), key=lambda i: len(encoded[i][0]))
    # Padding is masked out of attention and pooling, so any id will do when the tokenizer has
    # no pad token (GPT-2).
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    pooled: list[tuple[list[int], Tensor]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                width = max(len(encoded[i][0]) for i in idx)
                input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                attention = torch.zeros((len(idx), width), dtype=torch.long)
                content = torch.zeros((len(idx), width), dtype=torch.bool)
                for row, i in enumerate(idx):
                    ids, special = encoded[i]
                    input_ids[row, : len(ids)] = torch.tensor(ids)
                    attention[row, : len(ids)] = 1
                    content[row, : len(ids)] = torch.tensor(special) == 0
                hidden = encoder(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    output_hidden_states=True,
                ).hidden_states[layer].float().cpu()
                weights = content.unsqueeze(-1).float()
                pooled.append((idx, (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)))
    finally:
        model.train(was_training)
    out = torch.empty(len(sentences), pooled[0][1].shape[1])
    for idx, vectors in pooled:
        out[idx] = vectors
    return out


def retrieval_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    src_sentences: Sequence[str],
    tgt_sentences: Sequence[str],
    layer: int | None = None,
    pooling: str = "mean",
    batch_size: int = 64,
    max_length: int = 128,
) -> dict[str, float]:
    """Bidirectional retrieval accuracy over line-aligned translations.

    `src_sentences` are the xx side and `tgt_sentences` the English side (the XTREME Tatoeba
    convention); line i of one is the translation of line i of the other. Returns `xx_to_en`
    (each xx sentence retrieves among all English ones), `en_to_xx`, and their `mean`, the
    primary number. `layer` indexes `hidden_states` (0 = embeddings); default ⌈L/2⌉.
    """
    if pooling != "mean":
        raise ConfigError(f"unknown retrieval pooling {pooling!r}; only 'mean' is defined")
    if len(src_sentences) != len(tgt_sentences):
        raise ConfigError(
            f"retrieval needs line-aligned sides, got {len(src_sentences)} xx and {len(tgt_sentences)} en sentences"
        )
    if not src_sentences:
        raise ConfigError("retrieval needs at least one sentence pair")
    num_layers = _num_layers(model)
    if layer is None:
        layer = math.ceil(num_layers / 2)
    if not 0 <= layer <= num_layers:
        raise ConfigError(f"retrieval layer {layer} is outside 0..{num_layers} for a {num_layers}-layer model")

    xx, en = (
        torch.nn.functional.normalize(
            encode_sentences(model, tokenizer, side, layer=layer, batch_size=batch_size, max_length=max_length),
            dim=1,
        )
        for side in (src_sentences, tgt_sentences)
    )
    sim = xx @ en.T
    gold = torch.arange(len(src_sentences))
    xx_to_en = (sim.argmax(dim=1) == gold).double().mean().item()
    en_to_xx = (sim.argmax(dim=0) == gold).double().mean().item()
    return {"xx_to_en": xx_to_en, "en_to_xx": en_to_xx, "mean": (xx_to_en + en_to_xx) / 2}


def tatoeba_retrieval(model: Any, tokenizer: Any, langs: list[str], data_dir: str | Path | None) -> dict[str, Any]:
    """Tatoeba retrieval accuracy on each language's retrieval test lines (the last 20%, docs/data.md,
    "Fixed splits"); a language without Tatoeba files in the data roots is left out."""
    from xbench.data.pools import TATOEBA, TATOEBA_TRAIN_SHARE
    from xbench.data.sources import data_roots

    roots = data_roots(data_dir)
    out: dict[str, Any] = {}
    for lang in langs:
        code = TATOEBA.get(lang)
        found = [roots.find(f"tatoeba/tatoeba.{code}-eng.{side}") for side in (code, "eng")] if code and roots else []
        files = [f for f in found if f is not None]
        if not found or len(files) != len(found):
            continue
        xx, en = (f.read_text(encoding="utf-8").splitlines() for f in files)
        start = int(len(xx) * TATOEBA_TRAIN_SHARE)
        scores = retrieval_accuracy(model, tokenizer, xx[start:], en[start:])
        out[lang] = {**scores, "pairs": len(xx) - start, "lines": [start, len(xx) - 1],
                     "files": [roots.record(f) for f in files]}
    return out
