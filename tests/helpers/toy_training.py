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


# ------------------------------------------------------------------ a stage with state beyond the model
class KeyQueue:
    """A MoCo-style FIFO of the last `size` key embeddings, with its write position (a plain int)."""

    def __init__(self, size: int = 16, dim: int = 16, seed: int = 5) -> None:
        g = torch.Generator().manual_seed(seed)
        self.keys = torch.nn.functional.normalize(torch.randn(size, dim, generator=g), dim=1)
        self.ptr = 0
        self.pushed = 0

    def push(self, k: torch.Tensor) -> None:
        self.keys = self.keys.clone()  # the old tensor is still in this step's autograd graph
        for row in k.detach():
            self.keys[self.ptr] = row
            self.ptr = (self.ptr + 1) % len(self.keys)
            self.pushed += 1

    def state_dict(self) -> dict:
        return {"keys": self.keys.clone(), "ptr": self.ptr, "pushed": self.pushed}

    def load_state_dict(self, state: dict) -> None:
        self.keys = state["keys"].clone()
        self.ptr, self.pushed = int(state["ptr"]), int(state["pushed"])


def _embed(model, batch) -> torch.Tensor:
    hidden = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)


def momentum_stage(momentum: float = 0.9, temperature: float = 0.2, queue_size: int = 16):
    """A MoCo-like stage: queries from the trained model, keys from a momentum (EMA) copy of it,
    negatives from a queue of past keys; both the queue and the EMA copy change every step, so a
    resume that lost either would give other losses. Returns (loss_fn, after_step, extra_state)."""
    import copy

    ema = copy.deepcopy(toy_model())
    ema.eval()  # no dropout: the key encoder must not draw from the RNG
    for p in ema.parameters():
        p.requires_grad_(False)
    queue = KeyQueue(queue_size, ema.config.hidden_size)

    def loss_fn(model, batch, ctx):
        q = _embed(model, batch)
        with torch.no_grad():
            k = _embed(ema, batch)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.keys.T], dim=1) / temperature
        contrastive = torch.nn.functional.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))
        queue.push(k)
        return {**ce_loss(model, batch, ctx), "contrastive": contrastive}

    def after_step(model, step):
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(momentum).add_(pm.detach(), alpha=1 - momentum)

    return loss_fn, after_step, {"key_queue": queue, "momentum_encoder": ema}


def train_with_state(workdir: str, steps: int = 24, resume: bool = False, checkpoint_every: int = 5,
                     register: tuple[str, ...] = ("key_queue", "momentum_encoder")):
    """`train` for the momentum stage; returns (FitResult, extra_state). `register` picks which of
    its states the runner is told about (all of them for a correct stage)."""
    from xbench.runner.batching import FeaturePlan
    from xbench.runner.trainer import Runner, TrainArgs

    plan = FeaturePlan(toy_features(), seed=7, batch_size=8, pad_values={"input_ids": 0, "labels": -100})
    args = TrainArgs(lr=1e-3, max_steps=steps, warmup_steps=3, seed=11, checkpoint_every=checkpoint_every,
                     progress=False)
    loss_fn, after_step, extra = momentum_stage()
    out = Runner(args, workdir, name="momentum").fit(
        toy_model(), plan, loss_fn, after_optimizer_step=after_step,
        extra_state={k: v for k, v in extra.items() if k in register}, resume=resume)
    return out, extra
