"""Masked-LM objective (docs/methods/README.md, "Shared building blocks"): MLM with 80/10/10 corruption.

Masking draws from the runner's per-step generator, never the global RNG, so a resumed run
masks exactly the same positions as an uninterrupted one.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def mask_tokens(input_ids: torch.Tensor, *, special_mask: torch.Tensor, mask_id: int, vocab_size: int,
                generator: torch.Generator, mlm_prob: float = 0.15,
                never_mask: Iterable[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Select each non-special, non-pad position with p=mlm_prob; of those 80% [MASK], 10% random, 10% kept.

    Returns (corrupted ids, labels) with labels -100 at unselected positions.
    """
    dev = input_ids.device
    ids = input_ids.clone().cpu()
    special = special_mask.cpu().bool()
    for tok in never_mask:
        special |= ids == tok
    probs = torch.full(ids.shape, mlm_prob)
    probs.masked_fill_(special, 0.0)
    selected = torch.bernoulli(probs, generator=generator).bool()
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    to_mask = torch.bernoulli(torch.full(ids.shape, 0.8), generator=generator).bool() & selected
    ids[to_mask] = mask_id
    to_random = torch.bernoulli(torch.full(ids.shape, 0.5), generator=generator).bool() & selected & ~to_mask
    ids[to_random] = torch.randint(vocab_size, ids.shape, generator=generator)[to_random]
    return ids.to(dev), labels.to(dev)


class MLMObjective:
    """L_MLM: token-level mean cross-entropy over selected positions."""

    def __init__(self, *, mask_id: int, vocab_size: int, special_ids: Iterable[int], mlm_prob: float = 0.15,
                 never_mask: Iterable[int] = ()) -> None:
        self.mask_id, self.vocab_size, self.mlm_prob = mask_id, vocab_size, mlm_prob
        self.special_ids = torch.tensor(sorted(set(special_ids)), dtype=torch.long)
        self.never_mask = tuple(never_mask)

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, **kw: Any) -> MLMObjective:
        return cls(mask_id=tokenizer.mask_token_id, vocab_size=len(tokenizer),
                   special_ids=tokenizer.all_special_ids, **kw)

    def special_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        special = torch.isin(input_ids, self.special_ids.to(input_ids.device))
        if attention_mask is not None:
            special |= attention_mask == 0
        return special

    def select(self, batch: dict[str, Any], ctx: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(input ids with the selected positions replaced 80/10/10, labels: -100 except at those positions),
        drawn from the step's seeded generator."""
        return mask_tokens(batch["input_ids"], special_mask=self.special_mask(batch["input_ids"], batch.get("attention_mask")),
                           mask_id=self.mask_id, vocab_size=self.vocab_size, generator=ctx.generator,
                           mlm_prob=self.mlm_prob, never_mask=self.never_mask)

    @staticmethod
    def loss_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)).float(), labels.view(-1),
                                                 ignore_index=-100)

    def __call__(self, model: torch.nn.Module, batch: dict[str, Any], ctx: Any) -> dict[str, torch.Tensor]:
        ids, labels = self.select(batch, ctx)
        inputs = {k: v for k, v in batch.items() if k in ("attention_mask", "token_type_ids", "position_ids")}
        out = model(input_ids=ids, **inputs)
        logits = out.logits if hasattr(out, "logits") else out[0]
        return {"mlm": self.loss_of(logits, labels)}
