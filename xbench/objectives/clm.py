"""Causal-LM objective (docs/methods/README.md, "Shared building blocks"): next-token prediction."""
from __future__ import annotations

from typing import Any

import torch


class CLMObjective:
    """L_CLM: next-token cross-entropy, -100 at padding, token-level mean."""

    def __call__(self, model: torch.nn.Module, batch: dict[str, Any], ctx: Any) -> dict[str, torch.Tensor]:
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        out = model(input_ids=ids, attention_mask=mask)
        logits = out.logits[:, :-1]
        labels = ids[:, 1:].clone()
        if mask is not None:
            labels[mask[:, 1:] == 0] = -100
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                                                 ignore_index=-100)
        return {"clm": loss}
