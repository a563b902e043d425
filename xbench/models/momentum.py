"""The momentum (key) encoder of MoCo-style training (docs/methods/README.md, "Shared building blocks").

PPA's keys come from a slowly moving copy of the query encoder (docs/methods/ppa.md): a deep copy
that never receives a gradient and follows the online model by an exponential moving average after
each optimizer step.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from xbench.errors import XbenchError


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
