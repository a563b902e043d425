"""Biaffine dependency parser head (Dozat & Manning, ICLR 2017).

Word representations (first-subword pooled, see :mod:`xbench.vocab.words`) go through four
MLPs (arc-dep, arc-head, label-dep, label-head). A learned ROOT vector is prepended so position 0
is ROOT and position ``i`` is word ``i``, matching CoNLL-U ids. Arc scores are laid out
``[batch, dependent, head]`` as in :mod:`xbench.models.heads.mst`.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xbench.models.heads.mst import chu_liu_edmonds, eisner

__all__ = ["Biaffine", "BiaffineParserHead"]

DecodeAlgorithm = Literal["mst", "eisner", "greedy"]


class Biaffine(nn.Module):
    """``s[b, o, i, j] = [x_i; 1]^T W_o [y_j; 1]`` with the ones appended only where enabled.

    With ``bias_x=True, bias_y=False`` (the arc scorer) the extra term depends on the head only:
    Dozat & Manning's prior of a word being a head. Zero-initialised as in their code, so training
    starts from uniform scores.
    """

    def __init__(self, in1: int, in2: int, out: int = 1, bias_x: bool = True, bias_y: bool = True) -> None:
        super().__init__()
        self.in1, self.in2, self.out = in1, in2, out
        self.bias_x, self.bias_y = bias_x, bias_y
        self.weight = nn.Parameter(torch.zeros(out, in1 + int(bias_x), in2 + int(bias_y)))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """x: [B, N, in1], y: [B, M, in2] -> [B, out, N, M] (or [B, N, M] when out == 1)."""
        if self.bias_x:
            x = torch.cat([x, x.new_ones(x.shape[:-1] + (1,))], dim=-1)
        if self.bias_y:
            y = torch.cat([y, y.new_ones(y.shape[:-1] + (1,))], dim=-1)
        # Two batched matmuls; a three-operand einsum is ~7x slower on CPU for parser-sized inputs.
        s = (x.unsqueeze(1) @ self.weight) @ y.unsqueeze(1).transpose(-1, -2)
        return s.squeeze(1) if self.out == 1 else s

    def extra_repr(self) -> str:
        return f"in1={self.in1}, in2={self.in2}, out={self.out}, bias_x={self.bias_x}, bias_y={self.bias_y}"


class _MLP(nn.Sequential):
    def __init__(self, n_in: int, n_out: int, dropout: float) -> None:
        # LeakyReLU(0.1) as in Dozat & Manning's released parser.
        super().__init__(nn.Linear(n_in, n_out), nn.LeakyReLU(0.1), nn.Dropout(dropout))


class BiaffineParserHead(nn.Module):
    """Arc and label scorers over word vectors.

    ``forward(words [B, W, hidden], mask [B, W] bool)`` returns
    ``arc_scores [B, W+1, W+1]`` (dependent, head; impossible heads - padding and the word
    itself - are set to the dtype's minimum) and ``label_scores [B, W+1, W+1, n_labels]``
    (label of the arc dependent <- head). Row 0 (ROOT as a dependent) is meaningless.
    """

    def __init__(self, hidden: int, arc_mlp: int, label_mlp: int, n_labels: int, dropout: float = 0.33) -> None:
        super().__init__()
        self.n_labels = n_labels
        self.root = nn.Parameter(torch.randn(hidden) * hidden ** -0.5)
        self.arc_dep = _MLP(hidden, arc_mlp, dropout)
        self.arc_head = _MLP(hidden, arc_mlp, dropout)
        self.label_dep = _MLP(hidden, label_mlp, dropout)
        self.label_head = _MLP(hidden, label_mlp, dropout)
        self.arc_attn = Biaffine(arc_mlp, arc_mlp, 1, bias_x=True, bias_y=False)
        self.label_attn = Biaffine(label_mlp, label_mlp, n_labels, bias_x=True, bias_y=True)

    def forward(self, words: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        b = words.shape[0]
        x = torch.cat([self.root.to(words.dtype).expand(b, 1, -1), words], dim=1)  # [B, W+1, H]
        arc = self.arc_attn(self.arc_dep(x), self.arc_head(x))  # [B, W+1, W+1]
        label = self.label_attn(self.label_dep(x), self.label_head(x)).permute(0, 2, 3, 1)
        valid_head = torch.cat([mask.new_ones(b, 1), mask.bool()], dim=1)  # ROOT is always a valid head
        w1 = x.shape[1]
        invalid = ~valid_head[:, None, :] | torch.eye(w1, dtype=torch.bool, device=x.device)[None]
        arc = arc.masked_fill(invalid, torch.finfo(arc.dtype).min)
        return arc, label

    def loss(self, arc_scores: Tensor, label_scores: Tensor, heads: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        """Mean head cross-entropy plus mean label cross-entropy given the gold head.

        heads, labels, mask: [B, W]; ``heads`` holds CoNLL-U heads (0 = ROOT, i = word i), values at
        masked positions are ignored.
        """
        mask = mask.bool()
        heads = heads.masked_fill(~mask, 0)
        arc = arc_scores[:, 1:]  # [B, W, W+1]
        arc_loss = F.cross_entropy(arc[mask], heads[mask])
        lab = label_scores[:, 1:]  # [B, W, W+1, L]
        idx = heads[..., None, None].expand(-1, -1, 1, lab.shape[-1])
        gold_head_labels = lab.gather(2, idx).squeeze(2)  # [B, W, L]
        label_loss = F.cross_entropy(gold_head_labels[mask], labels[mask])
        return arc_loss + label_loss

    @torch.no_grad()
    def decode(
        self, arc_scores: Tensor, label_scores: Tensor, mask: Tensor, algorithm: DecodeAlgorithm = "mst"
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per sentence, ``(heads, labels)`` as int arrays of length n_words (heads: 0 = ROOT).

        ``mst`` (default) and ``eisner`` return single-root trees decoded from head
        log-probabilities; ``greedy`` takes each word's best head independently and may produce
        cycles or several roots (a diagnostic, not for UD scoring). ``mask`` [B, W] must mark a
        prefix of each row (words first, then padding), as ``encode_words``' ``word_mask`` does.
        """
        if algorithm not in ("mst", "eisner", "greedy"):
            raise ValueError(f"unknown decoding algorithm {algorithm!r}; expected mst, eisner or greedy")
        log_probs = arc_scores.float().log_softmax(dim=-1).cpu().numpy()
        best_labels = label_scores.argmax(dim=-1).cpu().numpy()  # [B, W+1, W+1]
        lengths = mask.bool().sum(dim=1).tolist()
        out = []
        for b, n in enumerate(lengths):
            scores = log_probs[b, : n + 1, : n + 1]
            if algorithm == "mst":
                heads = chu_liu_edmonds(scores)
            elif algorithm == "eisner":
                heads = eisner(scores)
            else:
                heads = scores[1:].argmax(axis=1)
            labels = best_labels[b, np.arange(1, n + 1), heads]
            out.append((heads.astype(np.int64), labels.astype(np.int64)))
        return out
