"""Translation language modelling, PPA's layout (docs/methods/ppa.md, "TLM").

TLM is MLM on a parallel pair packed into one sequence, `[CLS] a [SEP] b [SEP]`: a masked word can
be recovered from its translation, which pulls the two languages' word representations together.
In PPA's layout the position ids run on across both sentences (no reset), the segment ids are 0 for
the first sentence and 1 for the second, and there is no language embedding (XLM's layout, with a
position reset and language embeddings, is not built).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from xbench.errors import XbenchError
from xbench.objectives.mlm import MLMObjective


def pack_pairs(first: Sequence[Sequence[int]], second: Sequence[Sequence[int]], *, cls_id: int, sep_id: int,
               pad_id: int, max_len_each: int) -> dict[str, torch.Tensor]:
    """`[CLS] a [SEP] b [SEP]` for each pair of token-id lists (no special tokens in them), each side cut
    to `max_len_each` subwords, right-padded to the longest: input ids, attention mask, segment ids
    0/1 and position ids 0 … T−1 without a reset."""
    if len(first) != len(second) or not first:
        raise XbenchError(f"pack_pairs: expected as many first as second sentences (at least one), got "
                          f"{len(first)} and {len(second)}")
    if max_len_each < 1:
        raise XbenchError(f"pack_pairs: max_len_each must be >= 1, got {max_len_each}")
    rows, types = [], []
    for a, b in zip(first, second):
        a, b = list(a)[:max_len_each], list(b)[:max_len_each]
        rows.append([cls_id, *a, sep_id, *b, sep_id])
        types.append([0] * (len(a) + 2) + [1] * (len(b) + 1))
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    segment = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, seg) in enumerate(zip(rows, types)):
        ids[i, :len(row)] = torch.tensor(row)
        segment[i, :len(seg)] = torch.tensor(seg)
        mask[i, :len(row)] = 1
    positions = torch.arange(width).unsqueeze(0).expand(len(rows), width).clone()
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": segment, "position_ids": positions}


class TLMObjective(MLMObjective):
    """L_TLM: MLM (15 %, 80/10/10, token-level mean over selected positions) on packed pairs; `[CLS]`,
    `[SEP]` and padding are never selected. The loss is returned as `tlm`."""

    def __call__(self, model: torch.nn.Module, batch: dict[str, Any], ctx: Any) -> dict[str, torch.Tensor]:
        return {"tlm": super().__call__(model, batch, ctx)["mlm"]}
