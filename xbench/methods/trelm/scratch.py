"""The randomly initialised TreLM model of `scratch-trelm` (docs/methods/baselines.md, "scratch-trelm")."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from xbench.models.trelm import TrelmBertModel


def random_trelm(config: Any, *, seed: int, reference_quirks: bool = False) -> TrelmBertModel:
    """TreLM's architecture (L + 1 layers, language embeddings, tied MLM head) with BERT's initialisation:
    every linear and embedding matrix N(0, initializer_range) (the pad row zero), biases zero, LayerNorms
    at 1 and 0, as `from_config` initialises a BERT. Seeded; the caller's RNG is left as it was."""
    std = config.initializer_range
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TrelmBertModel(copy.deepcopy(config), reference_quirks=reference_quirks)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.Linear):
                    module.weight.normal_(0.0, std)
                    if module.bias is not None:
                        module.bias.zero_()
                elif isinstance(module, nn.Embedding):
                    module.weight.normal_(0.0, std)
                    if module.padding_idx is not None:
                        module.weight[module.padding_idx].zero_()
                elif isinstance(module, nn.LayerNorm):
                    module.weight.fill_(1.0)
                    module.bias.zero_()
            model.mlm_head.bias.zero_()
    return model
