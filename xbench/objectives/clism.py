"""CLISM+CACR's losses and the `[QUE]` span head (docs/methods/clism.md, "Losses").

- CLISM: from the final state x_q of a `[QUE]` token, s_q = W_s x_q and e_q = W_e x_q score every
  position k of the input as the start (x_k · s_q) and end (x_k · e_q) of the span the `[QUE]` stands
  for; the loss is the cross-entropy of the aligned target span's first and last subword, averaged over
  every `[QUE]` of the batch (Splinter-style question-aware span selection).
- CACR: three in-batch contrastive terms between mean-pooled segment vectors (the original source
  sentence, the `[QUE]`-masked source sentence, the target sentence), with cosine logits times a
  scale of 20.

The same head serves QA fine-tuning (models/heads/que_qa.py), with the question's `[QUE]` as x_q.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xbench.objectives.contrastive import info_nce_in_batch

# The paper's "temperature 20" read as a logit scale (docs/methods/clism.md, "The temperature"): dividing
# cosines by 20 would leave every logit within +-0.05 and the loss almost constant.
CACR_SCALE = 20.0


class QueSpanHead(nn.Module):
    """W_s, W_e in R^{d x d}, no bias: start and end logits of every position for each `[QUE]` vector."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.start = nn.Linear(hidden_size, hidden_size, bias=False)
        self.end = nn.Linear(hidden_size, hidden_size, bias=False)
        # nn.Linear's default init (uniform +-1/sqrt(d)) keeps the first logits small, like the encoder's
        # own initialiser would; seeded by the caller.

    def forward(self, hidden: torch.Tensor, que: torch.Tensor, rows: torch.Tensor,
                allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden (B, L, d) final states, que (N, d) the `[QUE]` states, rows (N,) the example of each,
        allowed (B, L) the positions a span may start or end at. Returns start and end logits (N, L), with
        the positions that are not allowed at the dtype's minimum, so that a softmax gives them nothing."""
        h = hidden[rows]
        start = torch.einsum("nld,nd->nl", h, self.start(que))
        end = torch.einsum("nld,nd->nl", h, self.end(que))
        blocked = ~allowed[rows].bool()
        low = torch.finfo(start.dtype).min
        return start.masked_fill(blocked, low), end.masked_fill(blocked, low)


def clism_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, starts: torch.Tensor,
               ends: torch.Tensor) -> torch.Tensor:
    """Mean over the batch's `[QUE]`s of -log P(start) - log P(end). A batch without any `[QUE]` gives a zero
    that still belongs to the graph (every process of a data-parallel run must reach the same parameters)."""
    if start_logits.shape[0] == 0:
        return start_logits.sum() * 0.0 + end_logits.sum() * 0.0
    return (F.cross_entropy(start_logits.float(), starts, reduction="none")
            + F.cross_entropy(end_logits.float(), ends, reduction="none")).mean()


def segment_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `hidden` (B, L, d) over the positions where `mask` (B, L) is set; (B, d)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def cacr_loss(r_t: torch.Tensor, r_s_hat: torch.Tensor, r_s: torch.Tensor,
              scale: float = CACR_SCALE) -> dict[str, torch.Tensor]:
    """The three terms L(r^t, r^s_hat), L(r^s, r^s_hat), L(r^t, r^s) of CACR, each an in-batch InfoNCE with
    logits scale * cos; their sum is L_CACR."""
    return {"t_shat": info_nce_in_batch(r_t, r_s_hat, scale), "s_shat": info_nce_in_batch(r_s, r_s_hat, scale),
            "t_s": info_nce_in_batch(r_t, r_s, scale)}
