"""TreLM's training stages (docs/methods/trelm.md, "Stages"): the batch plans and losses of Stages E, F
and H (and of the matched scratch run), trained through the shared runner.

- `TaggedLines` / `tagged_lines`: one example per line, each with a language id; a line longer than
  the block is cut into windows of block − 2 subwords, each wrapped as [CLS] window [SEP]; a batch
  mixes languages and is padded to its longest example (docs/methods/trelm.md, "Stages E and H").
- `LanguageMLM`: MLM (80/10/10, masks from the runner's per-step generator) on a model that takes
  `lang_ids`; the TRILayer runs in place with the example's language.
- `CdlmExamples`: Stage F's shuffled CdLM and xx-MLM examples, collated by the CdLM collator with a
  generator seeded by (seed, epoch, batch), so a resumed run masks exactly as an uninterrupted one.
- `CdlmLoss`: the Stage-F loss of xbench/objectives/cdlm.py.
- `train_stage`: one stage through the runner, with the loss trend in its record.

The model is passed in (a `TrelmBertModel` or anything with its forward signature): this floor does
not import the models.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xbench.errors import XbenchError
from xbench.stages.lm import LMArgs

if TYPE_CHECKING:
    import torch

    from xbench.runner.trainer import FitResult


@dataclass
class StageArgs(LMArgs):
    """The LM stage settings plus the two optimiser settings TreLM's reference fixes (docs/methods/trelm.md,
    "Defaults")."""

    adam_eps: float = 1e-6
    max_grad_norm: float = 5.0
    # micro-batches per optimizer step: the paper profile's batch of 128 as 32 x 4 on one GPU
    grad_accum: int = 1


def line_windows(ids: list[int], body: int) -> list[list[int]]:
    """`ids` cut into consecutive windows of at most `body` subwords (an empty line gives none)."""
    if body < 1:
        raise XbenchError(f"a window needs at least one subword, got a body of {body}")
    return [ids[i:i + body] for i in range(0, len(ids), body)]


class TaggedLines:
    """A batch plan over language-tagged examples (ids with their specials); see the module docstring.

    `batches(epoch)` is a seeded permutation of the examples, cut into batches with the ragged tail
    dropped, so it is a pure function of (seed, epoch) and the runner's (epoch, position) pins it.
    """

    def __init__(self, examples: list[tuple[int, list[int]]], *, batch_size: int, seed: int, pad_id: int) -> None:
        if len(examples) < batch_size:
            raise XbenchError(f"too little text for one batch: {len(examples)} examples for a batch of {batch_size}")
        self.langs = [lang for lang, _ in examples]
        self.ids = [ids for _, ids in examples]
        self.batch_size, self.seed, self.pad_id = batch_size, seed, pad_id

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, epoch: int) -> list[list[int]]:
        import numpy as np

        order = np.random.default_rng([self.seed, epoch, 5]).permutation(len(self.ids))
        usable = len(order) - len(order) % self.batch_size
        return [order[i:i + self.batch_size].tolist() for i in range(0, usable, self.batch_size)]

    def item_tokens(self, item: list[int]) -> int:
        """The non-padding tokens of a batch: what the runner counts as `tokens_seen`."""
        return sum(len(self.ids[i]) for i in item)

    def collate(self, item: list[int]) -> dict[str, torch.Tensor]:
        import torch

        width = max(len(self.ids[i]) for i in item)
        input_ids = torch.full((len(item), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(item), width), dtype=torch.long)
        for r, i in enumerate(item):
            input_ids[r, : len(self.ids[i])] = torch.tensor(self.ids[i])
            mask[r, : len(self.ids[i])] = 1
        return {"input_ids": input_ids, "attention_mask": mask,
                "lang_ids": torch.tensor([[self.langs[i]] for i in item], dtype=torch.long)}

    def language_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for lang in self.langs:
            counts[lang] = counts.get(lang, 0) + 1
        return counts


def tagged_lines(tokenizer: Any, texts: list[tuple[int, list[str]]], *, seq_len: int, batch_size: int,
                 seed: int) -> TaggedLines:
    """A `TaggedLines` plan of every (language id, lines) group: each line tokenised without specials,
    cut into windows of `seq_len` − 2 subwords and wrapped as [CLS] window [SEP]."""
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    examples: list[tuple[int, list[int]]] = []
    for lang, lines in texts:
        if not lines:
            continue
        for ids in tokenizer(lines, add_special_tokens=False)["input_ids"]:
            examples.extend((lang, [cls, *window, sep]) for window in line_windows(ids, seq_len - 2))
    return TaggedLines(examples, batch_size=batch_size, seed=seed, pad_id=tokenizer.pad_token_id)


class LanguageMLM:
    """L_MLM on a model that takes `lang_ids` (TreLM's Stages E and H, and scratch-trelm)."""

    def __init__(self, tokenizer: Any, mlm_prob: float = 0.15) -> None:
        from xbench.objectives.mlm import MLMObjective

        self.objective = MLMObjective.for_tokenizer(tokenizer, mlm_prob=mlm_prob)

    def __call__(self, model: torch.nn.Module, batch: dict[str, Any], ctx: Any) -> dict[str, torch.Tensor]:
        import torch

        from xbench.objectives.mlm import mask_tokens

        o = self.objective
        ids, labels = mask_tokens(batch["input_ids"], special_mask=o.special_mask(batch["input_ids"], batch["attention_mask"]),
                                  mask_id=o.mask_id, vocab_size=o.vocab_size, generator=ctx.generator,
                                  mlm_prob=o.mlm_prob)
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"], lang_ids=batch["lang_ids"]).logits
        return {"mlm": torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                                                         ignore_index=-100)}


class CdlmExamples:
    """Stage F's batch plan: the CdLM and xx-MLM examples (xbench.objectives.cdlm.stage_f_examples)
    shuffled together, collated by `collator` with a generator seeded by (seed, epoch, batch)."""

    def __init__(self, examples: list[Any], collator: Any, *, batch_size: int, seed: int) -> None:
        if len(examples) < batch_size:
            raise XbenchError(f"too few Stage-F examples for one batch: {len(examples)} for a batch of {batch_size}")
        self.examples, self.collator, self.batch_size, self.seed = examples, collator, batch_size, seed

    def batches(self, epoch: int) -> list[tuple[int, int, list[int]]]:
        import numpy as np

        order = np.random.default_rng([self.seed, epoch, 6]).permutation(len(self.examples))
        usable = len(order) - len(order) % self.batch_size
        return [(epoch, k, order[i:i + self.batch_size].tolist())
                for k, i in enumerate(range(0, usable, self.batch_size))]

    def collate(self, item: tuple[int, int, list[int]]) -> dict[str, Any]:
        import torch

        epoch, k, idx = item
        gen = torch.Generator(device="cpu").manual_seed(hash((self.seed, epoch, k)) & 0x7FFFFFFF)
        return self.collator([self.examples[i] for i in idx], gen)


class CdlmLoss:
    """The Stage-F loss (`stage_f_loss`) of a collated CdLM batch."""

    def __init__(self, reduction: str) -> None:
        from xbench.objectives.cdlm import STAGE_F_REDUCTIONS

        if reduction not in STAGE_F_REDUCTIONS:
            raise XbenchError(f"stage_f_reduction must be one of {STAGE_F_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def __call__(self, model: torch.nn.Module, batch: dict[str, Any], ctx: Any) -> dict[str, torch.Tensor]:
        from xbench.objectives.cdlm import MODEL_INPUT_KEYS, stage_f_loss

        out = model(**{k: batch[k] for k in MODEL_INPUT_KEYS})
        return stage_f_loss(out.logits, batch["labels"], batch["is_mlm"], self.reduction)  # type: ignore[arg-type]


def steps_for_tokens(plan: Any, budget: int, grad_accum: int = 1) -> int:
    """The number of optimizer steps after which the runner has seen at least `budget` tokens of `plan`
    (`grad_accum` micro-batches per step): walks the plan's batches in order, as the runner does across
    epochs, so a matched run stops at the step its token budget is reached and its learning-rate schedule
    ends there."""
    if budget < 1:
        raise XbenchError(f"a token budget must be positive, got {budget}")
    seen, steps, epoch = 0, 0, 0
    while True:
        batches = plan.batches(epoch)
        if not batches:
            raise XbenchError("the batch plan is empty")
        for item in batches:
            seen += plan.item_tokens(item)
            steps += 1
            if seen >= budget:
                return -(-steps // grad_accum)
        epoch += 1


def train_stage(model: torch.nn.Module, plan: Any, loss_fn: Any, args: StageArgs, workdir: Path, *, name: str,
                role: str, max_tokens: int | None = None, resume: bool = True) -> FitResult:
    """Train one TreLM stage through the shared runner (AdamW with `adam_eps`, clipping at `max_grad_norm`,
    linear warm-up then decay); the record gets `role` and the loss trend (first and last tenth)."""
    from xbench.runner.trainer import Runner, TrainArgs
    from xbench.stages.lm import loss_trend

    targs = TrainArgs(lr=args.lr, max_steps=args.max_steps, max_tokens=max_tokens, warmup_steps=args.warmup_steps,
                      weight_decay=args.weight_decay, eps=args.adam_eps, max_grad_norm=args.max_grad_norm,
                      grad_accum=args.grad_accum, seed=args.seed, checkpoint_every=max(1, args.max_steps // 4))
    fit = Runner(targs, workdir, name=name).fit(model, plan, loss_fn, resume=resume)
    fit.record.extra["role"] = role
    fit.record.extra.update(loss_trend(fit.losses))
    if not fit.record.extra["loss_decreased"]:
        warnings.warn(f"stage '{name}': the training loss did not go down (mean of the first tenth of steps "
                      f"{fit.record.extra['loss_start']:.4f}, of the last tenth {fit.record.extra['loss_end']:.4f})",
                      stacklevel=2)
    return fit
