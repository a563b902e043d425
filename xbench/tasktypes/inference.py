"""Batched inference shared by the task types: length-sorted token-budget batches, no grad."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from xbench.runner.batching import pad_collate, sorted_batches

DEFAULT_BATCH_TOKENS = 16384


def batched_forward(model: Any, features: Sequence[dict[str, Any]], pad_values: dict[str, int], *,
                    batch_tokens: int = DEFAULT_BATCH_TOKENS, input_keys: Sequence[str] = ("input_ids", "token_type_ids", "attention_mask"),
                    ) -> Iterator[tuple[list[int], Any]]:
    """Yield (feature indices, model output) per batch; sorting by length removes most padding."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    lengths = [len(f["input_ids"]) for f in features]
    with torch.inference_mode():
        for idx in sorted_batches(lengths, batch_tokens=batch_tokens):
            batch = pad_collate([{k: features[i][k] for k in input_keys if k in features[i]} for i in idx], pad_values)
            yield idx, model(**{k: v.to(device) for k, v in batch.items()})
    model.train(was_training)
