"""PPA's alignment stage (docs/methods/ppa.md, "The stage"): a sentence-level MoCo loss with random input
shuffling plus TLM, trained through the shared runner.

Per step, for a batch of parallel pairs: each pair's query side is English with probability
p_shuffle (else the target sentence), the other side is the key. The query encoder (the model being
trained) embeds `[CLS] first [SEP]`, the momentum encoder embeds `[CLS] second [SEP]` without
gradients, and the last-layer `[CLS]` vectors, L2-normalised, meet in InfoNCE against the key queue.
TLM runs on `[CLS] first [SEP] second [SEP]` with the query encoder, a separate forward pass. The loss
is L_sent + λ·L_TLM; after the optimizer step the momentum encoder moves towards the model and the
step's keys replace the oldest ones in the queue. The queue, the momentum encoder and the per-part
loss log are runner state, checkpointed with the model, so a killed stage resumes exactly.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from xbench.errors import XbenchError
from xbench.objectives.contrastive import KeyQueue, MomentumEncoder, info_nce_queue
from xbench.objectives.tlm import TLMObjective, pack_pairs
from xbench.runner.batching import consumed_batches
from xbench.runner.trainer import FitResult


@dataclass
class PPAArgs:
    lr: float
    batch_size: int
    max_steps: int
    warmup_steps: int = 0
    weight_decay: float = 0.01
    max_len: int = 64  # subwords per sentence, before [CLS]/[SEP]
    queue_size: int = 128
    momentum: float = 0.99
    tau: float = 0.05
    tlm_weight: float = 1.0
    p_shuffle: float = 0.5
    seed: int = 0


def _single(rows: list[list[int]], *, cls_id: int, sep_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`[CLS] s [SEP]` per row, right-padded: (input ids, attention mask)."""
    width = max(len(r) for r in rows) + 2
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r) + 2] = torch.tensor([cls_id, *r, sep_id])
        mask[i, :len(r) + 2] = 1
    return ids, mask


class PairPlan:
    """Batches of parallel pairs (English ids, target ids; no special tokens), in a seeded order per epoch,
    each pair with its query side drawn per epoch: English with probability `p_shuffle`."""

    def __init__(self, pairs: list[tuple[list[int], list[int]]], *, batch_size: int, p_shuffle: float, seed: int,
                 cls_id: int, sep_id: int, pad_id: int, max_len: int) -> None:
        if not pairs:
            raise XbenchError("PPA needs parallel pairs; the list is empty")
        if not 0.0 <= p_shuffle <= 1.0:
            raise XbenchError(f"p_shuffle must be in [0, 1], got {p_shuffle}")
        self.pairs = [(list(en)[:max_len], list(xx)[:max_len]) for en, xx in pairs]
        self.batch_size, self.p_shuffle, self.seed = batch_size, p_shuffle, seed
        self.cls_id, self.sep_id, self.pad_id, self.max_len = cls_id, sep_id, pad_id, max_len

    def batches(self, epoch: int) -> list[list[tuple[int, bool]]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(len(self.pairs)))
        rng.shuffle(order)
        drawn = [(i, rng.random() < self.p_shuffle) for i in order]  # (pair, English is the query)
        return [drawn[i:i + self.batch_size] for i in range(0, len(drawn), self.batch_size)]

    def collate(self, item: list[tuple[int, bool]]) -> dict[str, Any]:
        first, second = [], []
        for i, en_query in item:
            en, xx = self.pairs[i]
            first.append(en if en_query else xx)
            second.append(xx if en_query else en)
        special = {"cls_id": self.cls_id, "sep_id": self.sep_id, "pad_id": self.pad_id}
        q_ids, q_mask = _single(first, **special)
        k_ids, k_mask = _single(second, **special)
        return {**pack_pairs(first, second, max_len_each=self.max_len, **special),
                "query_input_ids": q_ids, "query_attention_mask": q_mask,
                "key_input_ids": k_ids, "key_attention_mask": k_mask,
                "en_is_query": torch.tensor([q for _, q in item])}


def planned_counts(plan: PairPlan, steps: int, world: int = 1) -> dict[str, Any]:
    """What `steps` steps of `plan` on `world` processes will feed the passes, counted from the pairs' lengths
    without running a model: tokens with gradients (query pass + TLM pass, docs/protocols.md, "What every
    stage records"), key-pass tokens (forward only) and the share of pairs whose query side is English.
    A control trained for "the same tokens" reads its budget here before PPA has run."""
    grad = key = en_query = pairs = 0
    for item in consumed_batches(plan, steps, world, who="PPA"):
        for i, en_is_query in item:
            en, xx = plan.pairs[i]
            first, second = (en, xx) if en_is_query else (xx, en)
            grad += (len(first) + 2) + (len(first) + len(second) + 3)
            key += len(second) + 2
            en_query += en_is_query
            pairs += 1
    return {"tokens_seen": grad, "key_tokens": key, "pairs": pairs, "en_query_share": en_query / pairs if pairs else None}


def count_ppa_tokens(batch: dict[str, Any]) -> int:
    """Tokens fed to a forward pass with gradients: the query pass and the TLM pass (not the key pass)."""
    return int(batch["query_attention_mask"].sum()) + int(batch["attention_mask"].sum())


class LossLog:
    """The per-step values of each loss part, kept as runner state so a resumed stage reports them all."""

    def __init__(self, parts: tuple[str, ...]) -> None:
        self.values: dict[str, list[float]] = {p: [] for p in parts}
        self._step: dict[str, list[float]] = {p: [] for p in parts}

    def add(self, part: str, value: float) -> None:
        self._step[part].append(value)

    def end_step(self, reduce: Any = None) -> None:
        """Close the step: each part's mean over its micro-batches, averaged over processes by `reduce`
        (a float -> float function; None in one process)."""
        for part, vals in self._step.items():
            if vals:
                mean = sum(vals) / len(vals)
                self.values[part].append(reduce(mean) if reduce is not None else mean)
                vals.clear()

    def state_dict(self) -> dict[str, Any]:
        return {"values": {k: list(v) for k, v in self.values.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = {k: [float(x) for x in v] for k, v in state["values"].items()}


def _cls(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    encoder = getattr(model, "base_model", model)  # a masked LM's encoder (BertForMaskedLM.bert), or the encoder
    return F.normalize(encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0], dim=1)


class QueryEncoder(torch.nn.Module):
    """f_q: the masked LM being trained, as one module whose forward runs both of its passes (the `[CLS]`
    pass on `[CLS] first [SEP]` and the TLM pass on the packed pair), so that a data-parallel wrapper sees
    one forward per backward. The two inputs stay separate sequences; the TLM input arrives masked."""

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.lm = lm
        self.config = lm.config

    def get_output_embeddings(self) -> Any:  # so that the stage's N_nonemb leaves out the unembedding
        return self.lm.get_output_embeddings()

    def forward(self, query_input_ids: torch.Tensor, query_attention_mask: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = _cls(self.lm, query_input_ids, query_attention_mask)
        logits = self.lm(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         position_ids=position_ids).logits
        return q, logits


def train_ppa(model: torch.nn.Module, plan: PairPlan, tokenizer: Any, args: PPAArgs, workdir: Path, *, name: str,
              resume: bool = True) -> tuple[FitResult, dict[str, list[float]]]:
    """Run the PPA stage on `model` (a masked LM such as BertForMaskedLM; its encoder gives the query `[CLS]`),
    trained in place. Returns the fit and the per-step values of `sent` and `tlm` (L_TLM before its weight)."""
    from xbench.runner.trainer import Runner, TrainArgs

    targs = TrainArgs(lr=args.lr, max_steps=args.max_steps, warmup_steps=args.warmup_steps,
                      weight_decay=args.weight_decay, seed=args.seed, checkpoint_every=max(1, args.max_steps // 4))
    runner = Runner(targs, workdir, name=name)
    acc = runner.accelerator
    world = acc.num_processes
    if args.queue_size < args.batch_size * world:
        raise XbenchError(f"stage '{name}': the queue ({args.queue_size} keys) must hold at least one step's keys "
                          f"({args.batch_size} per process x {world} processes)")
    key_encoder = MomentumEncoder(model, args.momentum)
    key_encoder.eval()  # keys without dropout: an xbench default (docs/methods/ppa.md)
    queue = KeyQueue(args.queue_size, model.config.hidden_size, seed=args.seed)
    log = LossLog(("sent", "tlm"))
    tlm = TLMObjective.for_tokenizer(tokenizer)
    pending: list[torch.Tensor] = []

    def loss_fn(m: Any, batch: dict[str, Any], ctx: Any) -> dict[str, torch.Tensor]:
        ids, labels = tlm.select(batch, ctx)
        q, logits = m(batch["query_input_ids"], batch["query_attention_mask"], ids, batch["attention_mask"],
                      batch["token_type_ids"], batch["position_ids"])
        key_encoder.to(q.device)
        with torch.no_grad():
            k = _cls(key_encoder.encoder, batch["key_input_ids"], batch["key_attention_mask"])
        sent = info_nce_queue(q, k, queue.keys.to(q.device), args.tau)
        word = tlm.loss_of(logits, labels)
        pending.append(k.detach())
        log.add("sent", float(sent.detach()))
        log.add("tlm", float(word.detach()))
        return {"sent": sent, "tlm": args.tlm_weight * word}

    def all_keys(keys: torch.Tensor) -> torch.Tensor:
        """Every process's keys of a micro-batch, in process order (MoCo's gather), so that every process
        holds the same queue; batches at the end of a pass may differ in size between processes."""
        if world == 1:
            return keys
        counts = acc.gather(torch.tensor([len(keys)], device=keys.device)).tolist()
        padded = acc.pad_across_processes(keys, dim=0)
        width = padded.shape[0]
        everything = acc.gather(padded)
        return torch.cat([everything[r * width:r * width + c] for r, c in enumerate(counts)])

    def mean_over_processes(value: float) -> float:
        return float(acc.reduce(torch.tensor(value, device=acc.device), "mean"))

    def after_step(m: Any, step: int) -> None:
        key_encoder.update(getattr(m, "module", m).lm)
        for keys in pending:  # every micro-batch's keys, oldest first
            queue.enqueue(all_keys(keys).to(queue.keys.device))
        pending.clear()
        log.end_step(mean_over_processes if world > 1 else None)

    fit = runner.fit(
        QueryEncoder(model), plan, loss_fn, count_tokens=count_ppa_tokens, after_optimizer_step=after_step,
        extra_state={"key_queue": queue, "momentum_encoder": key_encoder, "loss_parts": log}, resume=resume)
    fit.record.forward_only_tokens = planned_counts(plan, fit.record.optimizer_steps, world)["key_tokens"]
    fit.record.finalize_flops()
    return fit, log.values
