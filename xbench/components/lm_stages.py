"""Language-model pretraining stages shared by the transfer methods (docs/methods/README.md, "Shared building
blocks"; the tiny causal model: docs/data.md, "Tiny source models").

- `heldout_split`: a fixed share of a pool held out by line hash, so held-out text is the same
  whatever the order or size of the rest of the pool, and no training stage ever sees it.
- `packed_blocks` / `MultilingualBlocks`: batch plans over packed token blocks, for one language or
  several with one language per batch drawn by the α-smoothed `LanguageSampler`.
- `PerplexityEval` and `train_lm`: MLM or CLM through the shared runner, with held-out perplexity
  at a fixed step schedule (the learning curves of CLP and the "steps saved" of docs/protocols.md,
  "Steps saved").
- `tiny-en-gpt2` (docs/data.md, "Tiny source models"), built like the tiny BERT in source_models.py but
  with byte-level BPE and CLM.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from xbench import cache
from xbench.errors import ConfigError, XbenchError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from xbench.components.objectives import PackedBlocks
    from xbench.components.source_models import SourceModel
    from xbench.runner.trainer import FitResult

Objective = Literal["mlm", "clm"]

CODE_VERSION = 1
HELDOUT_SALT = "xbench-heldout-v1"
# Held-out MLM perplexity masks the same positions at every evaluation and in every run that
# shares a tokenizer, so two curves differ only by their models.
EVAL_MASK_SEED = 20240229
MAX_EXP_ARG = 709.0  # math.exp overflows a float64 just above this

TINY_CAUSAL_MODELS: dict[str, dict[str, Any]] = {
    "xbench/tiny-en-gpt2": {
        "lang": "en",
        "vocab_size": 2000,
        "config": {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 256},
        # The steps, batch, lr and warm-up of tiny-en-bert (docs/data.md, "Tiny source models").
        "pretrain": {"lr": 5e-4, "batch_size": 16, "seq_len": 64, "max_steps": 600, "warmup_steps": 30,
                     "weight_decay": 0.01, "seed": 0},
    },
}


# --------------------------------------------------------------------------- data


def heldout_split(lines: list[str], share: float, *, salt: str = HELDOUT_SALT) -> tuple[list[str], list[str]]:
    """(train, held-out): a line is held out when the SHA-256 of salt + line falls below `share`."""
    if not 0.0 < share < 1.0:
        raise ConfigError(f"held-out share must be between 0 and 1 (exclusive), got {share}")
    train: list[str] = []
    held: list[str] = []
    limit = share * 2**64
    for line in lines:
        h = int.from_bytes(hashlib.sha256((salt + line).encode("utf-8")).digest()[:8], "big")
        (held if h < limit else train).append(line)
    return train, held


def lm_objective_of(config: Any) -> Objective:
    """MLM for masked-LM architectures (BERT-style), CLM for causal ones (GPT-2, BLOOM)."""
    archs = list(getattr(config, "architectures", None) or [])
    if any(a.endswith("ForMaskedLM") for a in archs):
        return "mlm"
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
        return "clm"
    raise XbenchError(f"cannot tell whether '{getattr(config, 'name_or_path', '?')}' is a masked or a causal LM "
                      f"(architectures: {archs or 'none recorded'}); a pretraining stage needs a model with an LM head")


def load_lm(path: str, objective: Objective) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from xbench.components.source_models import load_pretrained

    return load_pretrained(AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM, path)


def token_ids(tokenizer: Any, lines: list[str], objective: Objective) -> list[list[int]]:
    """Per-line ids without specials; causal streams end each line with the eos token."""
    ids = tokenizer(lines, add_special_tokens=False)["input_ids"]
    if objective == "clm":
        eos = tokenizer.eos_token_id
        if eos is None:
            raise XbenchError(f"tokenizer '{tokenizer.name_or_path}' has no eos token to separate causal-LM documents")
        ids = [x + [eos] for x in ids]
    return ids


def packed_blocks(tokenizer: Any, lines: list[str], objective: Objective, *, seq_len: int, batch_size: int,
                  seed: int, ids: list[list[int]] | None = None) -> PackedBlocks:
    """MLM: [CLS] block [SEP] with [SEP] between lines; CLM: a plain stream with eos between lines.

    `ids` are `token_ids(tokenizer, lines, objective)` when the caller has them already.
    """
    from xbench.components.objectives import PackedBlocks

    ids = token_ids(tokenizer, lines, objective) if ids is None else ids
    try:
        if objective == "mlm":
            return PackedBlocks(ids, seq_len=seq_len, batch_size=batch_size, seed=seed,
                                cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id)
        return PackedBlocks(ids, seq_len=seq_len, batch_size=batch_size, seed=seed, cls_id=None, sep_id=None)
    except ValueError as exc:
        raise XbenchError(f"too little text for a pretraining batch ({len(lines)} lines): {exc}") from None


class MultilingualBlocks:
    """One language per batch, drawn with q_i ∝ p_i^α (docs/methods/README.md,
    "Shared building blocks"); blocks of a language in shuffled passes.

    `batches(epoch)` is a pure function of (seed, epoch): the runner's checkpoint stores
    (epoch, position), which therefore pins the sampler's state, and a resumed run draws exactly
    the languages and blocks an uninterrupted run would. An epoch has as many batches as all
    languages' blocks fill; a small language sampled above its share starts another pass of its
    blocks within the epoch, so upsampling repeats text rather than stopping early.
    """

    def __init__(self, blocks: dict[str, np.ndarray], sizes: dict[str, int], *, alpha: float, batch_size: int,
                 seed: int) -> None:
        from xbench.components.sampler import language_probs

        if set(blocks) != set(sizes):
            raise ConfigError(f"languages with blocks ({sorted(blocks)}) and with sizes ({sorted(sizes)}) differ")
        widths = {b.shape[1] for b in blocks.values()}
        if len(widths) != 1:
            raise ConfigError(f"all languages need blocks of one length, got {sorted(widths)}")
        self.blocks, self.sizes, self.alpha, self.batch_size, self.seed = blocks, dict(sizes), alpha, batch_size, seed
        self.languages = list(blocks)
        self.probs = language_probs(self.sizes, alpha)
        self.epoch_batches = max(1, sum(len(b) for b in blocks.values()) // batch_size)

    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * next(iter(self.blocks.values())).shape[1]

    def sampler(self, epoch: int) -> Any:
        from xbench.components.sampler import LanguageSampler

        return LanguageSampler(self.sizes, self.alpha, seed=self.seed * 1_000_003 + epoch)

    def batches(self, epoch: int) -> list[tuple[str, list[int]]]:
        import numpy as np

        sampler = self.sampler(epoch)
        order: dict[str, list[int]] = {}
        passes = dict.fromkeys(self.languages, 0)
        out = []
        for _ in range(self.epoch_batches):
            lang = sampler.sample()
            li = self.languages.index(lang)
            pending = order.setdefault(lang, [])
            while len(pending) < self.batch_size:
                rng = np.random.default_rng([self.seed, epoch, li, passes[lang]])
                pending.extend(rng.permutation(len(self.blocks[lang])).tolist())
                passes[lang] += 1
            out.append((lang, pending[: self.batch_size]))
            del pending[: self.batch_size]
        return out

    def collate(self, item: tuple[str, list[int]]) -> dict[str, Any]:
        import torch

        lang, idx = item
        ids = torch.from_numpy(self.blocks[lang][idx])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def drawn(self, steps: int) -> dict[str, int]:
        """How many batches of each language the first `steps` batches hold (single process)."""
        counts = dict.fromkeys(self.languages, 0)
        epoch = 0
        while steps > 0:
            for lang, _ in self.batches(epoch)[:steps]:
                counts[lang] += 1
            steps -= self.epoch_batches
            epoch += 1
        return counts


def blocks_by_language(tokenizer: Any, pools: dict[str, list[str]], objective: Objective, *, seq_len: int,
                       batch_size: int, alpha: float, seed: int) -> MultilingualBlocks:
    """A `MultilingualBlocks` plan whose language sizes are token counts under `tokenizer` (docs/methods/meta.md,
    "Departures from the paper")."""
    blocks, sizes = {}, {}
    for lang, lines in pools.items():
        ids = token_ids(tokenizer, lines, objective)
        sizes[lang] = sum(len(x) for x in ids)
        blocks[lang] = packed_blocks(tokenizer, lines, objective, seq_len=seq_len, batch_size=1, seed=seed,
                                     ids=ids).blocks
    return MultilingualBlocks(blocks, sizes, alpha=alpha, batch_size=batch_size, seed=seed)


# --------------------------------------------------------------------------- training


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
    from xbench.components.objectives import CLMObjective, MLMObjective

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

        from xbench.components.objectives import mask_tokens

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


# --------------------------------------------------------------------------- tiny causal source models


def _build_tiny_causal(name: str, spec: dict[str, Any], data_dir: str | Path | None) -> SourceModel:
    from xbench.atomic import sha256_file
    from xbench.components.pools import build_pool
    from xbench.components.source_models import SourceModel

    pool = build_pool(spec["lang"], data_dir)
    key = {"model": name, "code_version": CODE_VERSION, "spec": spec, "pool": pool.manifest()}

    def build(out: Path, work: Path) -> dict[str, Any]:
        from transformers import AutoTokenizer, GPT2Config

        from xbench.atomic import reuse_or_clear, save_pretrained_atomic
        from xbench.components.bpe import train_byte_bpe

        tok_dir = work / "tokenizer"
        if reuse_or_clear(tok_dir, also=(work / "run",)):
            tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        else:
            tokenizer = train_byte_bpe(pool.lines, spec["vocab_size"], model_max_length=spec["config"]["n_positions"])
            save_pretrained_atomic(tokenizer, tok_dir)
        args = LMArgs.from_dict(spec["pretrain"])
        config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, architectures=["GPT2LMHeadModel"], **spec["config"])
        model = init_model(config, "clm", args.seed)
        plan = packed_blocks(tokenizer, pool.lines, "clm", seq_len=args.seq_len, batch_size=args.batch_size,
                             seed=args.seed)
        run = train_lm(model, plan, "clm", tokenizer, args, work / "run", name=f"pretrain {name}", role="source")
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        losses = run.fit.losses
        return {"stages": [run.fit.record.to_dict()], "pool": pool.manifest(),
                "final_loss": sum(losses[-20:]) / min(20, len(losses))}

    path = cache.get_or_build("source-models", key, build)
    entry = cache.read_entry(path)
    return SourceModel(name, str(path), stages=entry["manifest"]["stages"],
                       weights_sha256=sha256_file(path / "model.safetensors"), manifest=entry["manifest"])


def resolve_lm_source(name: str, data_dir: str | Path | None = None) -> SourceModel:
    """A source model for a pretraining method: xbench's tiny causal models are built here, the
    tiny BERTs, local paths and hub names go through `resolve_source_model`."""
    from xbench.components.source_models import TINY_MODELS, resolve_source_model

    if name in TINY_CAUSAL_MODELS:
        return _build_tiny_causal(name, TINY_CAUSAL_MODELS[name], data_dir)
    if name.startswith("xbench/") and name not in TINY_MODELS:
        known = ", ".join([*TINY_MODELS, *TINY_CAUSAL_MODELS])
        raise XbenchError(f"unknown xbench model '{name}'; xbench builds: {known}")
    return resolve_source_model(name, data_dir)
