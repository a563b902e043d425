"""The language-model pretraining stage shared by the transfer methods (docs/methods/README.md, "Shared
building blocks").

`train_lm` trains MLM or CLM on a batch plan (stages/blocks.py) through the shared runner, with
held-out perplexity (`PerplexityEval`) at a fixed step schedule: the learning curves of CLP and
the "steps saved" of docs/protocols.md, "Steps saved".
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xbench.errors import ConfigError, XbenchError
from xbench.stages.blocks import Objective, packed_blocks

if TYPE_CHECKING:
    import torch

    from xbench.runner.trainer import FitResult

# Held-out MLM perplexity masks the same positions at every evaluation and in every run that
# shares a tokenizer, so two curves differ only by their models.
EVAL_MASK_SEED = 20240229
MAX_EXP_ARG = 709.0  # math.exp overflows a float64 just above this


# Encoder families pretrained with MLM: a checkpoint saved without its head (a sentence-embedding model
# such as all-MiniLM-L6-v2, saved as BertModel) continues MLM with a fresh head (see `has_lm_head`).
MASKED_FAMILIES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta", "deberta-v2", "camembert")


def has_lm_head(config: Any) -> bool:
    """Whether the checkpoint was saved with its LM head; without one, loading it for MLM adds a fresh head
    (transform and bias newly initialised, decoder tied to the input embeddings), which stage records say."""
    archs = list(getattr(config, "architectures", None) or [])
    return any(a.endswith(("ForMaskedLM", "ForCausalLM", "LMHeadModel", "ForPreTraining")) for a in archs)


def lm_objective_of(config: Any) -> Objective:
    """MLM for masked-LM architectures (BERT-style), CLM for causal ones (GPT-2, BLOOM)."""
    archs = list(getattr(config, "architectures", None) or [])
    if any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in archs):
        return "mlm"
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
        return "clm"
    if getattr(config, "model_type", None) in MASKED_FAMILIES:
        return "mlm"  # a headless encoder of a masked-LM family
    raise XbenchError(f"cannot tell whether '{getattr(config, 'name_or_path', '?')}' is a masked or a causal LM "
                      f"(architectures: {archs or 'none recorded'}); a pretraining stage needs a model with an LM head")


def load_lm(path: str, objective: Objective) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from xbench.loading import load_pretrained

    return load_pretrained(AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM, path)


@dataclass
class LMArgs:
    lr: float
    batch_size: int
    seq_len: int
    max_steps: int
    warmup_steps: int = 0
    weight_decay: float = 0.0
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LMArgs:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def objective_fn(objective: Objective, tokenizer: Any) -> Any:
    from xbench.objectives.clm import CLMObjective
    from xbench.objectives.mlm import MLMObjective

    return MLMObjective.for_tokenizer(tokenizer) if objective == "mlm" else CLMObjective()


class PerplexityEval:
    """Held-out token-level mean NLL (`loss`) and its exp (`perplexity`) on packed blocks (docs/methods/README.md,
    "Shared building blocks").

    CLM: next-token NLL over every position but the first of a block. MLM: NLL of the selected
    positions under a fixed masking (EVAL_MASK_SEED), i.e. the exponentiated held-out MLM loss.
    `perplexity` is None where exp overflows a float (a loss above ~709 nats: CLP rows built on a
    near-zero denominator can do that at step 0), so that curve files stay strict JSON.
    """

    def __init__(self, tokenizer: Any, lines: list[str], objective: Objective, *, seq_len: int,
                 batch_size: int = 64) -> None:
        self.objective, self.batch_size = objective, batch_size
        self.blocks = packed_blocks(tokenizer, lines, objective, seq_len=seq_len, batch_size=1, seed=0).blocks
        self.mlm = objective_fn("mlm", tokenizer) if objective == "mlm" else None

    @property
    def tokens(self) -> int:
        return int(self.blocks.size)

    def __call__(self, model: torch.nn.Module) -> dict[str, float | None]:
        import torch
        from torch.nn.functional import cross_entropy

        from xbench.objectives.mlm import mask_tokens

        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        gen = torch.Generator(device="cpu").manual_seed(EVAL_MASK_SEED)
        nll, count = 0.0, 0
        try:
            with torch.no_grad():
                for start in range(0, len(self.blocks), self.batch_size):
                    ids = torch.from_numpy(self.blocks[start:start + self.batch_size])
                    if self.mlm is None:
                        logits = model(input_ids=ids.to(device)).logits[:, :-1]
                        labels = ids[:, 1:]
                    else:
                        ids, labels = mask_tokens(ids, special_mask=self.mlm.special_mask(ids, None),
                                                  mask_id=self.mlm.mask_id, vocab_size=self.mlm.vocab_size,
                                                  generator=gen, mlm_prob=self.mlm.mlm_prob)
                        logits = model(input_ids=ids.to(device)).logits
                    labels = labels.to(device)
                    nll += float(cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                                               ignore_index=-100, reduction="sum"))
                    count += int((labels != -100).sum())
        finally:
            model.train(was_training)
        if count == 0:
            raise XbenchError("held-out perplexity: the held-out text has no scorable token")
        loss = nll / count
        return {"loss": loss, "perplexity": math.exp(loss) if loss < MAX_EXP_ARG else None}


@dataclass
class LMRun:
    fit: FitResult
    curve: list[dict[str, float | None]] = field(default_factory=list)  # {"step", "tokens", "loss", "perplexity"}


def train_lm(model: torch.nn.Module, plan: Any, objective: Objective, tokenizer: Any, args: LMArgs,
             workdir: Path, *, name: str, max_tokens: int | None = None, evaluate: PerplexityEval | None = None,
             eval_steps: list[int] | tuple[int, ...] = (), resume: bool = True, role: str = "") -> LMRun:
    """Train `model` with MLM or CLM on `plan` through the shared runner; returns the fit and the curve.

    With `max_tokens` the stage stops at that budget (`tokens_seen`, docs/protocols.md) and the step count is derived
    from it. `evaluate` runs at every step of `eval_steps` (0 = before the first update); the runner
    keeps these points in its checkpoints, so a resumed stage returns the whole curve. `role` is
    recorded in the stage record (e.g. "transfer", "helper").
    """
    from xbench.runner.trainer import Runner, TrainArgs

    steps = args.max_steps
    if max_tokens is not None:
        steps = max(1, -(-max_tokens // plan.tokens_per_batch))
    schedule = sorted({int(s) for s in eval_steps})
    bad = [s for s in schedule if not 0 <= s <= steps]
    if bad:
        raise ConfigError(f"stage '{name}': evaluation steps {bad} lie outside 0..{steps}")
    current = {"step": 0}

    def after_step(_model: torch.nn.Module, step: int) -> None:
        current["step"] = step

    def scheduled_eval(m: torch.nn.Module) -> dict[str, float]:
        # The runner evaluates at every multiple of the schedule's gcd; only scheduled steps count.
        return evaluate(m) if evaluate is not None and current["step"] in schedule else {}

    positive = [s for s in schedule if s > 0]
    targs = TrainArgs(lr=args.lr, max_steps=steps, max_tokens=max_tokens, warmup_steps=args.warmup_steps,
                      weight_decay=args.weight_decay, seed=args.seed, checkpoint_every=max(1, steps // 4),
                      eval_every=reduce(math.gcd, positive) if positive and evaluate is not None else None)
    start = evaluate(model) if evaluate is not None and 0 in schedule else None
    fit = Runner(targs, workdir, name=name).fit(
        model, plan, objective_fn(objective, tokenizer),
        evaluate=scheduled_eval if positive and evaluate is not None else None,
        after_optimizer_step=after_step, resume=resume)
    if role:
        fit.record.extra["role"] = role
    fit.record.extra.update(loss_trend(fit.losses))
    if not fit.record.extra["loss_decreased"]:
        import warnings

        warnings.warn(f"stage '{name}': the training loss did not go down (mean of the first tenth of steps "
                      f"{fit.record.extra['loss_start']:.4f}, of the last tenth {fit.record.extra['loss_end']:.4f})",
                      stacklevel=2)
    per_step = plan.tokens_per_batch
    curve = [] if start is None else [{"step": 0, "tokens": 0, **start}]
    curve += [{"step": e["step"], "tokens": e["step"] * per_step, "loss": e["loss"], "perplexity": e["perplexity"]}
              for e in fit.evals if "loss" in e]
    return LMRun(fit, curve)


def pretrain_mlm(model: Any, tokenizer: Any, lines: list[str], args: dict[str, Any], workdir: Path, *,
                 name: str, resume: bool = True, max_tokens: int | None = None, seed: int | None = None) -> Any:
    """MLM on packed blocks of `lines` through `train_lm`; returns the FitResult."""
    lm_args = LMArgs.from_dict({**args, "seed": args.get("seed", 0) if seed is None else seed})
    plan = packed_blocks(tokenizer, lines, "mlm", seq_len=lm_args.seq_len, batch_size=lm_args.batch_size,
                         seed=lm_args.seed)
    return train_lm(model, plan, "mlm", tokenizer, lm_args, workdir, name=name, max_tokens=max_tokens,
                    resume=resume).fit


def loss_trend(losses: list[float]) -> dict[str, Any]:
    """Mean loss over the first and the last tenth of the steps, and whether it went down (smoke stages
    must show finite, decreasing losses, docs/methods/README.md, "Shared building blocks"; the runner
    already stops on a non-finite one)."""
    if not losses:
        return {"loss_start": None, "loss_end": None, "loss_decreased": False}
    k = max(1, len(losses) // 10)
    start, end = sum(losses[:k]) / k, sum(losses[-k:]) / k
    return {"loss_start": start, "loss_end": end, "loss_decreased": end < start}


def init_model(config: Any, objective: Objective, seed: int) -> Any:
    """A randomly initialised LM from `config`, seeded without touching the caller's RNG."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return (AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM).from_config(config)


def state_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and raw bytes (bitwise identity check)."""
    import torch

    h = hashlib.sha256()
    for key, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
