"""Contrastive sentence losses and the MoCo key queue (docs/methods/README.md, "Shared building blocks").

PPA's sentence-level alignment (docs/methods/ppa.md) contrasts a query sentence with its translation
(the positive key, from a momentum encoder) and with the keys of earlier batches kept in a queue;
`info_nce_in_batch` is the queue-free variant whose negatives are the other pairs of the batch.
The momentum encoder and the queue are training state the runner checkpoints beside the model.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xbench.errors import XbenchError


def info_nce_queue(q: torch.Tensor, k_pos: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """MoCo's InfoNCE: logits [q·k⁺, q·queueᵀ] / τ with the positive in column 0, cross-entropy with
    target 0, mean over the batch. q, k_pos (B × d) and queue (K × d) are L2-normalised here (a no-op
    for inputs that already are), so the logits are cosines over τ."""
    if q.shape != k_pos.shape or q.dim() != 2 or queue.dim() != 2 or queue.shape[1] != q.shape[1]:
        raise XbenchError(f"info_nce_queue: expected q and k_pos of shape B x d and a queue of K x d, got "
                          f"{tuple(q.shape)}, {tuple(k_pos.shape)} and {tuple(queue.shape)}")
    if not tau > 0:
        raise XbenchError(f"info_nce_queue: the temperature must be > 0, got {tau}")
    q, k_pos, queue = F.normalize(q, dim=1), F.normalize(k_pos, dim=1), F.normalize(queue, dim=1)
    positive = (q * k_pos).sum(dim=1, keepdim=True)
    negatives = q @ queue.T
    logits = torch.cat([positive, negatives], dim=1) / tau
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def info_nce_in_batch(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """In-batch InfoNCE: logits_ij = scale · cos(a_i, b_j), cross-entropy with target i for row i, mean
    over the batch; the other rows of b are row i's negatives."""
    if a.shape != b.shape or a.dim() != 2:
        raise XbenchError(f"info_nce_in_batch: expected a and b of one shape B x d, got {tuple(a.shape)} and "
                          f"{tuple(b.shape)}")
    logits = scale * (F.normalize(a, dim=1) @ F.normalize(b, dim=1).T)
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


class KeyQueue:
    """A ring buffer of the last K keys (K × d) and its write pointer.

    `enqueue(keys)` writes rows [ptr, ptr + B) modulo K and advances the pointer by B modulo K. The
    initial content is K random unit vectors from a seeded generator (an xbench default: MoCo starts
    from random normalised vectors too). It is training state: `state_dict()` / `load_state_dict()`
    hold only a tensor and ints, so the runner checkpoints it beside the model and a resumed stage
    sees the same negatives (xbench/runner/trainer.py, `extra_state`).
    """

    def __init__(self, size: int, dim: int, *, seed: int = 0, device: Any = None) -> None:
        if size < 1 or dim < 1:
            raise XbenchError(f"KeyQueue: size and dim must be >= 1, got {size} and {dim}")
        g = torch.Generator().manual_seed(seed)
        self.keys = F.normalize(torch.randn(size, dim, generator=g), dim=1).to(device or "cpu")
        self.ptr = 0

    def __len__(self) -> int:
        return len(self.keys)

    def enqueue(self, keys: torch.Tensor) -> None:
        """Write `keys` (B × d, B <= K) at the pointer, wrapping around; gradients are never kept."""
        size = len(self.keys)
        if keys.dim() != 2 or keys.shape[1] != self.keys.shape[1] or not 1 <= len(keys) <= size:
            raise XbenchError(f"KeyQueue.enqueue: expected 1 to {size} keys of dimension {self.keys.shape[1]}, "
                              f"got shape {tuple(keys.shape)}")
        rows = (self.ptr + torch.arange(len(keys))) % size
        # A new tensor, not an in-place write: the old one may still be in this step's autograd graph.
        updated = self.keys.clone()
        updated[rows.to(updated.device)] = keys.detach().to(updated.device, updated.dtype)
        self.keys = updated
        self.ptr = (self.ptr + len(keys)) % size

    def state_dict(self) -> dict[str, Any]:
        return {"keys": self.keys.detach().clone(), "ptr": int(self.ptr)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        keys, ptr = state["keys"], int(state["ptr"])
        if keys.shape != self.keys.shape or not 0 <= ptr < len(keys):
            raise XbenchError(f"KeyQueue: a saved queue of shape {tuple(keys.shape)} with pointer {ptr} does not fit "
                              f"this queue of shape {tuple(self.keys.shape)}")
        self.keys = keys.detach().clone().to(self.keys.device, self.keys.dtype)
        self.ptr = ptr


class MomentumEncoder(nn.Module):
    """A frozen deep copy of `model` that `update(online)` moves towards `online`:
    θ_k ← m·θ_k + (1 − m)·θ_q for every parameter, computed in fp32 in that order and stored in the
    parameter's dtype; buffers (position ids, running statistics) are copied.

    It is an `nn.Module`, so its `state_dict()` is training state the runner checkpoints beside the
    query model (`Runner.fit(extra_state=...)`); its train/eval mode is the caller's to set.
    """

    def __init__(self, model: nn.Module, m: float) -> None:
        super().__init__()
        if not 0.0 <= m <= 1.0:
            raise XbenchError(f"MomentumEncoder: the momentum must be in [0, 1], got {m}")
        self.m = float(m)
        self.encoder = copy.deepcopy(model)
        for p in self.encoder.parameters():
            p.requires_grad_(False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.encoder(*args, **kwargs)

    @torch.no_grad()
    def update(self, online: nn.Module) -> None:
        """One momentum step towards `online` (the query model after its optimizer step)."""
        mine, theirs = dict(self.encoder.named_parameters()), dict(online.named_parameters())
        if mine.keys() != theirs.keys():
            raise XbenchError("MomentumEncoder.update: the online model's parameters are not the copied model's "
                              f"({len(mine)} vs {len(theirs)} named parameters)")
        m = self.m
        for name, p_k in mine.items():
            p_q = theirs[name].detach()
            p_k.copy_(m * p_k.float() + (1.0 - m) * p_q.float())
        own_buffers = dict(self.encoder.named_buffers())
        for name, buf in online.named_buffers():
            if name in own_buffers:
                own_buffers[name].copy_(buf)
