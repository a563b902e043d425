"""A tiny, fast training setup for runner tests; also run as a script by the kill-and-resume test."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch


def toy_features(n: int = 96, vocab: int = 60, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    feats = []
    for _ in range(n):
        length = int(rng.integers(4, 20))
        ids = [2] + rng.integers(5, vocab, size=length).tolist() + [3]
        label = int(sum(ids) % 3)
        feats.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": label})
    return feats


def toy_model(seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, num_labels=3, hidden_dropout_prob=0.1)
    return BertForSequenceClassification(cfg)


def ce_loss(model, batch, ctx):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return {"ce": torch.nn.functional.cross_entropy(logits, batch["labels"])}


def train(workdir: str, steps: int = 24, resume: bool = False, checkpoint_every: int = 5, lr: float = 1e-3,
          grad_accum: int = 1):
    from xbench.runner.batching import FeaturePlan
    from xbench.runner.trainer import Runner, TrainArgs

    plan = FeaturePlan(toy_features(), seed=7, batch_size=8, pad_values={"input_ids": 0, "labels": -100})
    args = TrainArgs(lr=lr, max_steps=steps, warmup_steps=3, seed=11, checkpoint_every=checkpoint_every,
                     progress=False, grad_accum=grad_accum)
    return Runner(args, workdir, name="toy").fit(toy_model(), plan, ce_loss, resume=resume)


if __name__ == "__main__":
    out = train(sys.argv[1], resume=len(sys.argv) > 2 and sys.argv[2] == "resume")
    Path(sys.argv[1], "losses.json").write_text(json.dumps(out.losses))
