"""CLISM+CACR's continued-pretraining stage (docs/methods/clism.md, "The stage"), through the shared runner.

Per step, three forward passes of the encoder being trained, run as one module forward so a
data-parallel wrapper sees one forward per backward:

1. X (`[QUE]`-masked source + target) → the final states, which give the CLISM loss through the
   `[QUE]` span head and the segment vectors r̂^s and r^t;
2. the original source sentence → r^s;
3. a separately masked copy of X → the MLM loss (special tokens, `[QUE]` among them, never masked).

L = L_CLISM + L_CACR + L_MLM. The per-part losses are runner state, so a resumed stage reports them all.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xbench.errors import XbenchError
from xbench.objectives.clism import CACR_SCALE, QueSpanHead, cacr_loss, clism_loss, segment_mean
from xbench.objectives.mlm import MLMObjective
from xbench.runner.batching import consumed_batches
from xbench.runner.trainer import FitResult
from xbench.stages.clism_examples import ClismExample
from xbench.stages.ppa import LossLog

QUE_TOKEN = "[QUE]"


@dataclass
class ClismArgs:
    lr: float
    batch_size: int
    max_steps: int
    warmup_steps: int = 0
    weight_decay: float = 0.0
    mlm_prob: float = 0.15
    cacr_scale: float = CACR_SCALE
    restrict_to_target: bool = False
    seed: int = 0


def add_que_token(model: Any, tokenizer: Any, token: str = QUE_TOKEN) -> int:
    """Add `token` as a special token and give it an embedding row: the mean of the existing rows
    (docs/methods/clism.md, "The [QUE] token"). Returns its id; a tokenizer that has it already is left
    as it is."""
    if token in tokenizer.get_vocab():
        return tokenizer.convert_tokens_to_ids(token)
    tokenizer.add_special_tokens({"additional_special_tokens": [token]})
    emb = model.get_input_embeddings()
    with torch.no_grad():
        mean = emb.weight.mean(dim=0)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    tid = tokenizer.convert_tokens_to_ids(token)
    with torch.no_grad():
        model.get_input_embeddings().weight[tid] = mean
    return tid


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


class ClismPlan:
    """Batches of CLISM examples in a seeded order per pass, collated into the three passes' inputs."""

    def __init__(self, examples: list[ClismExample], *, batch_size: int, seed: int, pad_id: int) -> None:
        if not examples:
            raise XbenchError("CLISM needs pretraining examples; none were built from the pairs")
        self.examples, self.batch_size, self.seed, self.pad_id = examples, batch_size, seed, pad_id

    def batches(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.examples)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def collate(self, item: list[int]) -> dict[str, Any]:
        exs = [self.examples[i] for i in item]
        ids = _pad([e.input_ids for e in exs], self.pad_id)
        seg = _pad([e.segments for e in exs], -1)
        src = _pad([e.source_ids for e in exs], self.pad_id)
        src_seg = _pad([e.source_segments for e in exs], -1)
        answers = [(row, *a) for row, e in enumerate(exs) for a in e.answers]
        ans = torch.tensor(answers, dtype=torch.long).reshape(-1, 4)
        return {"input_ids": ids, "attention_mask": (_pad([[1] * len(e.input_ids) for e in exs], 0)), "segments": seg,
                "source_ids": src, "source_mask": _pad([[1] * len(e.source_ids) for e in exs], 0),
                "source_segments": src_seg, "que_rows": ans[:, 0], "que_pos": ans[:, 1], "ans_start": ans[:, 2],
                "ans_end": ans[:, 3]}


def count_clism_tokens(batch: dict[str, Any]) -> int:
    """Tokens fed to forward passes with gradients: X twice (CLISM and the masked copy) and the source."""
    return 2 * int(batch["attention_mask"].sum()) + int(batch["source_mask"].sum())


def planned_counts(plan: ClismPlan, steps: int, world: int = 1) -> dict[str, Any]:
    """What `steps` steps of `plan` on `world` processes feed the three passes, counted without a model:
    the budget a control trained on "the same tokens" reads before CLISM has run."""
    tokens = ques = examples = 0
    for item in consumed_batches(plan, steps, world, who="CLISM"):
        for i in item:
            e = plan.examples[i]
            tokens += 2 * len(e.input_ids) + len(e.source_ids)
            ques += len(e.answers)
            examples += 1
    return {"tokens_seen": tokens, "que_tokens": ques, "examples": examples}


class ClismModule(torch.nn.Module):
    """The masked LM being trained and its `[QUE]` span head, with one forward for the three passes."""

    def __init__(self, lm: torch.nn.Module, head: QueSpanHead) -> None:
        super().__init__()
        self.lm = lm
        self.head = head
        self.config = lm.config

    def get_output_embeddings(self) -> Any:  # so that the stage's N_nonemb leaves out the unembedding
        return self.lm.get_output_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, source_ids: torch.Tensor,
                source_mask: torch.Tensor, masked_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        encoder = self.lm.base_model
        hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        source = encoder(input_ids=source_ids, attention_mask=source_mask).last_hidden_state
        logits = self.lm(input_ids=masked_ids, attention_mask=attention_mask).logits
        return hidden, source, logits


def clism_parts(module: ClismModule, batch: dict[str, Any], masked_ids: torch.Tensor, labels: torch.Tensor,
                *, cacr_scale: float, restrict_to_target: bool) -> dict[str, torch.Tensor]:
    """The three losses of one batch (L_CACR as its sum and its three terms)."""
    hidden, source, logits = module(batch["input_ids"], batch["attention_mask"], batch["source_ids"],
                                    batch["source_mask"], masked_ids)
    head = module.module.head if hasattr(module, "module") else module.head
    rows = batch["que_rows"].to(hidden.device)
    que = hidden[rows, batch["que_pos"].to(hidden.device)]
    allowed = batch["segments"] == 1 if restrict_to_target else batch["attention_mask"] == 1
    start, end = head(hidden, que, rows, allowed.to(hidden.device))
    span = clism_loss(start, end, batch["ans_start"].to(hidden.device), batch["ans_end"].to(hidden.device))
    seg = batch["segments"].to(hidden.device)
    terms = cacr_loss(segment_mean(hidden, seg == 1), segment_mean(hidden, seg == 0),
                      segment_mean(source, batch["source_segments"].to(hidden.device) == 0), scale=cacr_scale)
    mlm = MLMObjective.loss_of(logits, labels)
    return {"clism": span, "cacr": terms["t_shat"] + terms["s_shat"] + terms["t_s"], "mlm": mlm, **terms}


def train_clism(model: torch.nn.Module, head: QueSpanHead, plan: ClismPlan, tokenizer: Any, args: ClismArgs,
                workdir: Path, *, name: str, resume: bool = True) -> tuple[FitResult, dict[str, list[float]]]:
    """Run the stage on `model` (a masked LM whose tokenizer has `[QUE]`) and `head`, trained in place.
    Returns the fit and the per-step values of clism, cacr and mlm (and CACR's three terms)."""
    from xbench.runner.trainer import Runner, TrainArgs

    targs = TrainArgs(lr=args.lr, max_steps=args.max_steps, warmup_steps=args.warmup_steps,
                      weight_decay=args.weight_decay, seed=args.seed, checkpoint_every=max(1, args.max_steps // 4))
    runner = Runner(targs, workdir, name=name)
    acc = runner.accelerator
    world = acc.num_processes
    mlm = MLMObjective.for_tokenizer(tokenizer, mlm_prob=args.mlm_prob)
    if QUE_TOKEN not in tokenizer.all_special_tokens:
        raise XbenchError(f"stage '{name}': the tokenizer has no special token {QUE_TOKEN}; add it first (add_que_token)")
    parts = ("clism", "cacr", "mlm", "t_shat", "s_shat", "t_s")
    log = LossLog(parts)

    def loss_fn(m: Any, batch: dict[str, Any], ctx: Any) -> dict[str, torch.Tensor]:
        masked, labels = mlm.select(batch, ctx)
        out = clism_parts(m, batch, masked, labels, cacr_scale=args.cacr_scale,
                          restrict_to_target=args.restrict_to_target)
        for part in parts:
            log.add(part, float(out[part].detach()))
        return {"clism": out["clism"], "cacr": out["cacr"], "mlm": out["mlm"]}

    def mean_over_processes(value: float) -> float:
        return float(acc.reduce(torch.tensor(value, device=acc.device), "mean"))

    def after_step(m: Any, step: int) -> None:
        log.end_step(mean_over_processes if world > 1 else None)

    fit = runner.fit(ClismModule(model, head), plan, loss_fn, count_tokens=count_clism_tokens,
                     after_optimizer_step=after_step, extra_state={"loss_parts": log}, resume=resume)
    return fit, log.values
