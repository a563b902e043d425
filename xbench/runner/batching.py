"""Batch plans: length-grouped, dynamically padded batches, by sentence count or token budget.

A plan is a pure function of (seed, epoch), so a resumed run rebuilds the same batches and
skips to its saved position without replaying any random draws.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from xbench.errors import XbenchError


def _cut(order: np.ndarray, lengths: np.ndarray, batch_size: int | None, batch_tokens: int | None) -> list[list[int]]:
    """Cut an index order into batches: fixed count, or as many as fit max_len * n <= batch_tokens."""
    if batch_tokens is None:
        assert batch_size
        return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for idx in order.tolist():
        n = int(lengths[idx])
        if current and (max(longest, n) * (len(current) + 1) > batch_tokens
                        or (batch_size is not None and len(current) >= batch_size)):
            batches.append(current)
            current, longest = [], 0
        current.append(idx)
        longest = max(longest, n)
    if current:
        batches.append(current)
    return batches


def length_grouped_batches(lengths: Sequence[int], *, seed: int, epoch: int, batch_size: int | None = None,
                           batch_tokens: int | None = None, group_factor: int = 50) -> list[list[int]]:
    """Shuffle, sort within mega-chunks of ~group_factor batches by length, then shuffle batch order.

    Sorting within chunks (not globally) keeps batches random across epochs while making most
    sequences in a batch similar in length, which removes most padding.
    """
    if batch_size is None and batch_tokens is None:
        raise ValueError("need batch_size or batch_tokens")
    lengths_arr = np.asarray(lengths)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths_arr))
    per_chunk = group_factor * (batch_size or max(1, batch_tokens // max(1, int(lengths_arr.mean()))))
    batches: list[list[int]] = []
    for start in range(0, len(order), per_chunk):
        chunk = order[start:start + per_chunk]
        chunk = chunk[np.argsort(-lengths_arr[chunk], kind="stable")]
        batches.extend(_cut(chunk, lengths_arr, batch_size, batch_tokens))
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def sorted_batches(lengths: Sequence[int], *, batch_size: int | None = None,
                   batch_tokens: int | None = None) -> list[list[int]]:
    """Inference batches: globally sorted by length (order restored by the caller via indices)."""
    lengths_arr = np.asarray(lengths)
    order = np.argsort(-lengths_arr, kind="stable")
    return _cut(order, lengths_arr, batch_size, batch_tokens)


def pad_collate(features: Sequence[dict[str, Any]], pad_values: dict[str, int], *,
                pad_to_multiple_of: int | None = None) -> dict[str, Any]:
    """Stack variable-length int sequences into padded tensors; scalars become 1-d tensors."""
    import torch

    out: dict[str, Any] = {}
    longest = max(len(f["input_ids"]) for f in features)
    if pad_to_multiple_of:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    for key, first in features[0].items():
        if isinstance(first, (list, tuple, np.ndarray)):
            pad = pad_values.get(key, 0)
            arr = np.full((len(features), longest), pad, dtype=np.int64)
            for i, f in enumerate(features):
                seq = f[key]
                arr[i, :len(seq)] = seq
            out[key] = torch.from_numpy(arr)
        elif isinstance(first, (int, np.integer)):
            out[key] = torch.tensor([f[key] for f in features], dtype=torch.long)
        elif isinstance(first, (float, np.floating)):
            out[key] = torch.tensor([f[key] for f in features], dtype=torch.float)
    return out


class FeaturePlan:
    """A training plan over a list of tokenised features (the common case for fine-tuning)."""

    def __init__(self, features: Sequence[dict[str, Any]], *, seed: int, batch_size: int | None = None,
                 batch_tokens: int | None = None, pad_values: dict[str, int] | None = None,
                 collate: Callable[[Sequence[dict[str, Any]]], dict[str, Any]] | None = None,
                 pad_to_multiple_of: int | None = None) -> None:
        self.features = features
        self.lengths = [len(f["input_ids"]) for f in features]
        self.seed, self.batch_size, self.batch_tokens = seed, batch_size, batch_tokens
        self.pad_values = pad_values or {}
        self._collate = collate
        self.pad_to_multiple_of = pad_to_multiple_of

    def batches(self, epoch: int) -> list[list[int]]:
        return length_grouped_batches(self.lengths, seed=self.seed, epoch=epoch, batch_size=self.batch_size,
                                      batch_tokens=self.batch_tokens)

    def collate(self, item: list[int]) -> dict[str, Any]:
        feats = [self.features[i] for i in item]
        if self._collate is not None:
            return self._collate(feats)
        return pad_collate(feats, self.pad_values, pad_to_multiple_of=self.pad_to_multiple_of)


def consumed_batches(plan: Any, steps: int, world: int = 1, *, who: str = "stage") -> Iterator[Any]:
    """Every batch item that `steps` optimizer steps of `plan` on `world` processes train on (one micro-batch
    per step and process), in order: what the runner reads, counted without running it. The runner gives
    process r the batches r, r + world, ... of each pass and drops a ragged tail, so a step consumes
    `world` consecutive batches. A control matched on "the same tokens" reads its budget from here."""
    epoch = done = 0
    while done < steps:
        batches = plan.batches(epoch)
        per_epoch = len(batches) // world
        if per_epoch == 0:
            raise XbenchError(f"{who}: {len(batches)} batch(es) per pass cannot feed {world} processes")
        take = min(per_epoch, steps - done)
        yield from batches[:take * world]
        done += take
        epoch += 1
