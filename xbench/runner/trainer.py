"""The one training loop every stage of every method runs through.

It knows nothing of tasks or methods: it gets a model, a batch plan, a loss function and
optionally an evaluation callback, and owns the optimizer, schedule, accumulation, clipping,
precision, seeding, evaluation, checkpoints and the compute record. It is built on accelerate,
so the same loop runs on one CPU, one GPU or many (torchrun / accelerate launch).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from xbench.atomic import atomic_dir, atomic_write_json
from xbench.errors import TrainingDiverged, XbenchError
from xbench.runner.compute import StageRecord, parameter_counts, peak_memory_bytes


@dataclass
class TrainArgs:
    lr: float
    max_steps: int | None = None
    epochs: float | None = None
    max_tokens: int | None = None  # stop once this many non-pad tokens were trained on
    grad_accum: int = 1
    warmup_steps: int | None = None
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    optimizer: str = "adamw"
    mixed_precision: str = "auto"  # "auto": bf16 where the device has it natively, else fp32
    seed: int = 0
    eval_every: int | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int = 1
    compile: bool = False
    progress: bool = True


class BatchPlan(Protocol):
    def batches(self, epoch: int) -> list[Any]: ...

    def collate(self, item: Any) -> dict[str, Any]: ...


@dataclass
class StepContext:
    """Per-micro-batch context; `generator` is seeded by (seed, step, micro, rank) so random
    corruption (MLM masking) does not depend on RNG state and survives resume exactly."""

    step: int
    micro: int
    generator: torch.Generator


LossFn = Callable[[torch.nn.Module, dict[str, Any], StepContext], dict[str, torch.Tensor]]


class Stateful(Protocol):
    """Extra training state a stage hands to `Runner.fit(extra_state=...)`: a MoCo key queue, a
    momentum encoder (any `torch.nn.Module`), a sampler's position. Its `state_dict()` may hold
    only tensors and plain values (bool, int, float, str, None, and lists, tuples and dicts of
    them), because checkpoints are read back with `torch.load(weights_only=True)`."""

    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any], /) -> Any: ...


# Extra state lives in its own file of each checkpoint folder, written inside the same atomic folder
# as state.pt and trainer_state.json, so a checkpoint's healthy/confirmed verdict covers it too.
#
# accelerate's register_for_checkpointing + save_state/load_state is not used for this (checked in
# accelerate 1.15): load_custom_state reads each object with torch.load(weights_only=False), i.e. it
# unpickles whatever a planted file says; objects are matched by registration index, not by name;
# the registry lives on the process-wide Accelerator that every stage shares, with no way to
# unregister; load_state skips RNG states it cannot read with only a log line; and save_state writes
# in place, outside the atomic checkpoint folders that the healthy-checkpoint rule relies on.
EXTRA_STATE_FILE = "extra.pt"
# Exact types, not isinstance: a numpy float64 is a float and an IntEnum an int, but weights_only
# refuses both, which would only show at resume time.
_PLAIN = (bool, int, float, str, type(None), torch.dtype, torch.device)


@dataclass
class FitResult:
    record: StageRecord
    losses: list[float]
    evals: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None


def default_count_tokens(batch: dict[str, Any]) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def resolve_precision(requested: str) -> str:
    if requested != "auto":
        return requested
    # CPUs without native bf16 run it ~100x slower (environment.md §3a): only GPUs that have it.
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


_ACCELERATOR = None


# `xbench run/sweep --report-to` (docs/sweeps.md, "Watching runs"): the trackers every stage of this
# process logs to, through accelerate's tracking, and where file-based ones write. Environment
# variables, so that the jobs of a sweep inherit them.
REPORT_TO_ENV = "XBENCH_REPORT_TO"
TRACKING_DIR_ENV = "XBENCH_TRACKING_DIR"
TRACKERS = ("tensorboard", "mlflow", "wandb")


def report_to() -> list[str]:
    return [t for t in os.environ.get(REPORT_TO_ENV, "").split(",") if t]


def tracker_problems(names: list[str]) -> list[str]:
    """Trackers that are unknown or not installed, said before any work."""
    import importlib.util

    problems = []
    packages = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
    for name in names:
        if name not in TRACKERS:
            problems.append(f"--report-to: unknown tracker '{name}'; valid: {', '.join(TRACKERS)}")
        elif importlib.util.find_spec(packages[name]) is None:
            problems.append(f"--report-to {name}: the '{packages[name]}' package is not installed "
                            f"(pip install {packages[name]}, or pip install -e \".[track]\" for tensorboard)")
    return problems


def _tracker_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:120]


def get_accelerator(mixed_precision: str):
    """accelerate's state is a process-wide singleton, so every stage shares one Accelerator."""
    global _ACCELERATOR
    from accelerate import Accelerator

    if _ACCELERATOR is None:
        # Without cpu=True a CPU-only torchrun launch sets up one non-distributed process per rank,
        # each training alone on its shard with unsynchronised weights (tests/test_distributed.py).
        trackers = report_to()
        _ACCELERATOR = Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available(),
                                   log_with=trackers or None,
                                   project_dir=os.environ.get(TRACKING_DIR_ENV, "tracking") if trackers else None)
    elif _ACCELERATOR.mixed_precision != mixed_precision:
        raise XbenchError(f"mixed precision '{mixed_precision}' requested after '{_ACCELERATOR.mixed_precision}' "
                          "was set up in this process")
    return _ACCELERATOR


def _linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _optimizer(model: torch.nn.Module, args: TrainArgs) -> torch.optim.Optimizer:
    # Only trainable tensors reach the optimizer, so weight decay can never touch a frozen one.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if args.optimizer == "adam":
        return torch.optim.Adam(groups, lr=args.lr, betas=args.betas, eps=args.eps)
    if args.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=args.lr, betas=args.betas, eps=args.eps)
    raise XbenchError(f"unknown optimizer '{args.optimizer}' (valid: adamw, adam)")


class Runner:
    """Train one stage. `workdir` holds checkpoints/ and best/; nothing else is written there."""

    def __init__(self, args: TrainArgs, workdir: str | Path, *, name: str = "train") -> None:
        self.args = args
        self.workdir = Path(workdir)
        self.name = name
        self.precision = resolve_precision(args.mixed_precision)
        self.accelerator = get_accelerator(self.precision)

    # ------------------------------------------------------------------ checkpoints
    @property
    def ckpt_root(self) -> Path:
        return self.workdir / "checkpoints"

    def _checkpoints(self) -> list[tuple[Path, dict[str, Any]]]:
        """Complete checkpoints, oldest first, with their trainer state."""
        if not self.ckpt_root.is_dir():
            return []
        out = []
        for p in self.ckpt_root.glob("step-*"):
            try:
                out.append((int(p.name.split("-")[1]), p, json.loads((p / "trainer_state.json").read_text())))
            except (ValueError, OSError):  # a foreign folder, or a checkpoint without its state
                continue
        return [(p, st) for _, p, st in sorted(out, key=lambda t: t[0])]

    def latest_checkpoint(self) -> Path | None:
        ckpts = self._checkpoints()
        return ckpts[-1][0] if ckpts else None

    def healthy_checkpoint(self) -> Path | None:
        """The newest checkpoint named good (see `checkpoint_is_healthy`): the one resume starts from."""
        good = [p for p, st in self._checkpoints() if checkpoint_is_healthy(st)]
        return good[-1] if good else None

    def _save_checkpoint(self, model, optimizer, scheduler, state: dict[str, Any],
                         extra: Mapping[str, Stateful]) -> None:
        acc = self.accelerator
        target = self.ckpt_root / f"step-{state['step']}"
        acc.wait_for_everyone()
        if acc.is_main_process:
            with atomic_dir(target) as tmp:
                torch.save({"model": acc.unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict()}, tmp / "state.pt")
                # Tensors only, so that it loads with weights_only=True (the python RNG is never used here).
                rng = {"torch": torch.get_rng_state()}
                if torch.cuda.is_available():
                    rng["cuda"] = torch.cuda.get_rng_state_all()
                torch.save(rng, tmp / "rng.pt")
                if extra:
                    torch.save({name: _extra_state_dict(name, obj) for name, obj in extra.items()},
                               tmp / EXTRA_STATE_FILE)
                atomic_write_json(tmp / "trainer_state.json", state)
            self._prune()
        acc.wait_for_everyone()

    def _confirm_checkpoint(self, state: dict[str, Any], next_loss: float) -> None:
        """Record the first loss computed from the newest checkpoint's weights, which decides whether
        those weights are good: with a huge learning rate the loss before a step is fine and the
        weights after it are already ruined."""
        pending = state.get("unconfirmed_checkpoint")
        if pending is None:
            return
        state["unconfirmed_checkpoint"] = None
        if not self.accelerator.is_main_process:
            return
        path = self.ckpt_root / f"step-{pending}" / "trainer_state.json"
        try:
            saved = json.loads(path.read_text())
        except OSError:
            return
        saved["next_loss"] = next_loss
        saved["healthy"] = bool(saved.get("healthy")) and loss_is_healthy(next_loss, saved["losses"][0])
        saved["confirmed"] = True
        atomic_write_json(path, saved)
        self._prune()

    def _prune(self) -> None:
        """Keep the newest `keep_checkpoints` and, always, the newest confirmed healthy one."""
        ckpts = self._checkpoints()
        keep = {p for p, _ in ckpts[-max(1, self.args.keep_checkpoints):]}
        good = [p for p, st in ckpts if checkpoint_is_healthy(st) and st.get("confirmed")]
        if good:
            keep.add(good[-1])
        for p, _ in ckpts:
            if p not in keep:
                shutil.rmtree(p, ignore_errors=True)

    def _load_checkpoint(self, path: Path, model, optimizer, scheduler,
                         extra: Mapping[str, Stateful]) -> dict[str, Any]:
        # Extra state is checked first, so that a checkpoint lacking some of it changes nothing.
        saved_extra = _load_tensors(path / EXTRA_STATE_FILE) if (path / EXTRA_STATE_FILE).exists() else {}
        if not isinstance(saved_extra, dict):
            raise XbenchError(f"{path / EXTRA_STATE_FILE}: expected a mapping of state names, found "
                              f"{type(saved_extra).__name__}; delete {path} to resume from an earlier checkpoint")
        missing = sorted(set(extra) - set(saved_extra))
        unknown = sorted(set(saved_extra) - set(extra))
        if missing or unknown:
            raise XbenchError(
                f"{path}: cannot resume stage '{self.name}' exactly from this checkpoint: "
                + "; ".join(([f"it lacks the registered state {', '.join(repr(n) for n in missing)}"] if missing else [])
                            + ([f"it holds state {', '.join(repr(n) for n in unknown)} that the stage does not "
                                "register"] if unknown else []))
                + f" (it was written by a stage with other state); delete {self.workdir} to start the stage again")
        blob = _load_tensors(path / "state.pt")
        self.accelerator.unwrap_model(model).load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        rng = _load_tensors(path / "rng.pt")
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        for name, obj in extra.items():
            obj.load_state_dict(saved_extra[name])
        return json.loads((path / "trainer_state.json").read_text())

    def _save_best(self, model, state: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with atomic_dir(self.workdir / "best") as tmp:
                torch.save(self.accelerator.unwrap_model(model).state_dict(), tmp / "model.pt")
                atomic_write_json(tmp / "best.json", state)
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ main loop
    def total_steps(self, plan: BatchPlan) -> int:
        a = self.args
        if a.max_steps is not None:
            return a.max_steps
        if a.epochs is not None:
            per_epoch = len(plan.batches(0)) // (a.grad_accum * self.accelerator.num_processes)
            return max(1, math.ceil(a.epochs * per_epoch))
        raise XbenchError(f"stage '{self.name}': set max_steps or epochs")

    def fit(self, model: torch.nn.Module, plan: BatchPlan, loss_fn: LossFn, *,
            evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
            select_metric: str | None = None,
            count_tokens: Callable[[dict[str, Any]], int] = default_count_tokens,
            after_optimizer_step: Callable[[torch.nn.Module, int], None] | None = None,
            extra_state: Mapping[str, Stateful] | None = None,
            resume: bool = False) -> FitResult:
        """Train to the end of the stage. `extra_state` names objects beyond the model (a key queue,
        a momentum encoder, a sampler's position) that checkpoints save and `resume` restores with
        the model and optimizer; they are saved from the main process, like the model, so their state
        must be the same on every rank."""
        from accelerate.utils import set_seed

        a, acc = self.args, self.accelerator
        extra = dict(extra_state or {})
        for name, obj in extra.items():
            # Fail before any training, not at the first checkpoint or, worse, at resume time.
            _extra_state_dict(name, obj)
        set_seed(a.seed)
        if acc.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        total = self.total_steps(plan)
        warmup = a.warmup_steps if a.warmup_steps is not None else int(a.warmup_ratio * total)
        optimizer = _optimizer(model, a)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_schedule(warmup, total))
        model, optimizer = acc.prepare(model, optimizer)
        if a.compile:
            model = torch.compile(model, dynamic=True)

        state: dict[str, Any] = {"step": 0, "epoch": 0, "position": 0, "tokens_seen": 0, "losses": [],
                                 "evals": [], "best": None, "wall_seconds": 0.0}
        ckpt = self.healthy_checkpoint() if resume else None
        if ckpt is not None:
            state = self._load_checkpoint(ckpt, model, optimizer, scheduler, extra)
            state["unconfirmed_checkpoint"] = None if state.get("confirmed") else state["step"]
            if acc.is_main_process:
                # Newer checkpoints are bad ones of the abandoned trajectory: never resume from them.
                for p, _ in self._checkpoints():
                    if int(p.name.split("-")[1]) > state["step"]:
                        shutil.rmtree(p, ignore_errors=True)
            acc.wait_for_everyone()
        elif self.workdir.exists() and acc.is_main_process:
            # Not resuming, or nothing good to resume from: start clean.
            shutil.rmtree(self.ckpt_root, ignore_errors=True)
            shutil.rmtree(self.workdir / "best", ignore_errors=True)

        params = parameter_counts(acc.unwrap_model(model))
        world, rank = acc.num_processes, acc.process_index
        epoch, position = state["epoch"], state["position"]
        batches = self._shard(plan.batches(epoch), world, rank)
        kill_at = int(os.environ.get("XBENCH_TEST_KILL_AT_STEP", "0"))  # real SIGKILL, for the resume test
        model.train()
        t0 = time.perf_counter() - state["wall_seconds"]
        progress = _Progress(self.name, total, enabled=a.progress and acc.is_main_process)
        progress.advance_to(state["step"])
        tracking = bool(acc.log_with)
        if tracking:  # one tracker run per stage, named after it
            acc.init_trackers(_tracker_name(self.name), config={k: v for k, v in asdict(a).items()
                                                                if isinstance(v, (int, float, str, bool))})
        tokens_before, clock_before = state["tokens_seen"], time.perf_counter()
        while state["step"] < total:
            step = state["step"]
            step_loss = 0.0
            for micro in range(a.grad_accum):
                if position >= len(batches):
                    epoch, position = epoch + 1, 0
                    batches = self._shard(plan.batches(epoch), world, rank)
                    if not batches:
                        raise XbenchError(f"stage '{self.name}': the batch plan is empty")
                batch = plan.collate(batches[position])
                position += 1
                batch = {k: v.to(acc.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
                gen = torch.Generator(device="cpu").manual_seed(hash((a.seed, step, micro, rank)) & 0x7FFFFFFF)
                ctx = StepContext(step, micro, gen)
                sync = micro == a.grad_accum - 1
                with acc.autocast(), (acc.no_sync(model) if not sync and world > 1 else _null()):
                    losses = loss_fn(model, batch, ctx)
                    loss = sum(losses.values())
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        self._confirm_checkpoint(state, value)
                        good = self.healthy_checkpoint()
                        any_ckpt = self.latest_checkpoint()
                        raise TrainingDiverged(
                            f"stage '{self.name}': non-finite loss ({value}) at step {step + 1}; "
                            + (f"the last good checkpoint is {good} (--resume starts from it)" if good else
                               "no good checkpoint exists (the losses of every one were exploding; a resumed run "
                               "starts from step 0)" if any_ckpt else "no checkpoint was written yet")
                            + "; lower the learning rate or check the data")
                    acc.backward(loss / a.grad_accum)
                step_loss += value / a.grad_accum
                state["tokens_seen"] += count_tokens(batch)
            if a.max_grad_norm:
                acc.clip_grad_norm_(model.parameters(), a.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if after_optimizer_step is not None:
                after_optimizer_step(model, step + 1)
            state["step"] = step + 1
            state["epoch"], state["position"] = epoch, position
            if world > 1:
                step_loss = float(acc.reduce(torch.tensor(step_loss, device=acc.device), "mean"))
            state["losses"].append(step_loss)
            self._confirm_checkpoint(state, step_loss)
            progress.update(state["step"], step_loss)
            if tracking:
                now = time.perf_counter()
                logged = {"loss": step_loss, "lr": scheduler.get_last_lr()[0],
                          "tokens_per_second": (state["tokens_seen"] - tokens_before) / max(now - clock_before, 1e-9),
                          **{f"loss/{k}": float(v.detach()) for k, v in losses.items()}}
                tokens_before, clock_before = state["tokens_seen"], now
                acc.log(logged, step=state["step"])
            tokens_total = self._global_tokens(state["tokens_seen"])
            done = state["step"] >= total or (a.max_tokens is not None and tokens_total >= a.max_tokens)
            if evaluate is not None and (done or (a.eval_every and state["step"] % a.eval_every == 0)):
                model.eval()
                metrics = evaluate(acc.unwrap_model(model))
                model.train()
                entry = {"step": state["step"], **metrics}
                state["evals"].append(entry)
                if select_metric is not None:
                    best = state["best"]
                    if best is None or metrics[select_metric] > best[select_metric]:
                        state["best"] = entry
                        self._save_best(model, entry)
            state["wall_seconds"] = time.perf_counter() - t0
            if a.checkpoint_every and (state["step"] % a.checkpoint_every == 0 or done):
                window = state["losses"][state.get("last_checkpoint_step", 0):]
                state["healthy"] = all(loss_is_healthy(x, state["losses"][0]) for x in window)
                state["confirmed"] = False
                state.pop("next_loss", None)
                state["last_checkpoint_step"] = state["step"]
                self._save_checkpoint(model, optimizer, scheduler, state, extra)
                state["unconfirmed_checkpoint"] = state["step"]
            if kill_at and state["step"] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if done:
                break
        progress.close()
        if tracking:
            acc.end_training()

        if select_metric is not None and state["best"] is not None:
            best_state = _load_tensors(self.workdir / "best" / "model.pt")
            acc.unwrap_model(model).load_state_dict(best_state)
        record = StageRecord(
            name=self.name, optimizer_steps=state["step"], tokens_seen=self._global_tokens(state["tokens_seen"]),
            wall_seconds=round(time.perf_counter() - t0, 3), peak_memory_bytes=peak_memory_bytes(acc.device.type),
            peak_memory_kind="cuda max allocated" if acc.device.type == "cuda" else "process peak RSS",
            device=_device(acc), precision="bf16" if self.precision == "bf16" else self.precision.replace("no", "fp32"),
            params=params, extra={"train_args": asdict(self.args), "world_size": world},
        )
        record.finalize_flops()
        return FitResult(record, state["losses"], state["evals"], state["best"])

    def _global_tokens(self, local: int) -> int:
        if self.accelerator.num_processes == 1:
            return local
        t = torch.tensor(local, device=self.accelerator.device)
        return int(self.accelerator.reduce(t, "sum"))

    @staticmethod
    def _shard(batches: list[Any], world: int, rank: int) -> list[Any]:
        # Every rank must take the same number of steps, so drop the ragged tail.
        usable = len(batches) - len(batches) % world
        return batches[rank:usable:world]


# A loss "explodes" once it exceeds this many times the stage's first loss (floored at 1, so that a
# stage starting near zero loss is not flagged for noise). Divergence with a too-high learning rate
# goes up by orders of magnitude within a few steps (1.1 -> 9,153 -> 838,397 -> NaN), while healthy
# training stays below its first loss, so the factor is not delicate.
EXPLODE_FACTOR = 10.0


def loss_is_healthy(loss: float, first_loss: float) -> bool:
    return math.isfinite(loss) and loss <= EXPLODE_FACTOR * max(first_loss, 1.0)


def checkpoint_is_healthy(state: dict[str, Any]) -> bool:
    """A checkpoint is good when every loss since the previous checkpoint, and the first loss computed
    from its own weights (once known), is finite and not exploding (`loss_is_healthy`). Checkpoints
    written before this rule are judged on all their recorded losses."""
    if "healthy" in state:
        return bool(state["healthy"])
    losses = state.get("losses") or []
    return bool(losses) and all(loss_is_healthy(x, losses[0]) for x in losses)


def _extra_state_dict(name: str, obj: Any) -> Mapping[str, Any]:
    """`obj.state_dict()`, refused with a message naming the state and the offending entry unless
    it holds only what a weights_only load gives back."""
    if not isinstance(name, str) or not name:
        raise XbenchError(f"extra training state names must be non-empty strings, got {name!r}")
    if not (callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))):
        raise XbenchError(f"extra training state '{name}': {type(obj).__name__} has no state_dict()/load_state_dict()")
    sd = obj.state_dict()
    if type(sd) not in (dict, OrderedDict):
        raise XbenchError(f"extra training state '{name}': state_dict() returned {type(sd).__name__}, expected a dict")

    def check(value: Any, where: str) -> None:
        if isinstance(value, torch.Tensor) or type(value) in _PLAIN:
            return
        if type(value) in (list, tuple, torch.Size):
            for i, v in enumerate(value):
                check(v, f"{where}[{i}]")
            return
        if type(value) in (dict, OrderedDict):
            for k, v in value.items():
                if type(k) not in (str, int, float, bool):
                    raise XbenchError(f"extra training state '{name}': key {k!r} of {where} is a "
                                      f"{type(k).__name__}; keys must be strings or numbers")
                check(v, f"{where}[{k!r}]")
            return
        raise XbenchError(f"extra training state '{name}': {where} is a {type(value).__name__}; a checkpoint holds "
                          "only tensors and plain values (bool, int, float, str, None, lists and dicts of them)")

    check(sd, "state_dict()")
    return sd


def _load_tensors(path: Path) -> Any:
    """torch.load that unpickles nothing but tensors and plain containers: checkpoints sit in
    cache folders that may be shared, and a full unpickle would run whatever a planted file says."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for a refused object, RuntimeError/EOFError for a broken file
        raise XbenchError(f"{path}: not a checkpoint xbench can load safely (only tensors and plain containers "
                          f"are read, never pickled objects): {str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                          "delete it (or the whole work folder) to start that stage again") from e


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _device(acc) -> dict[str, Any]:
    from xbench.envinfo import device_description

    d = device_description()
    d["processes"] = acc.num_processes
    return d


class _Progress:
    """A rich progress bar with ETA on a terminal; a few plain lines otherwise (CI logs)."""

    def __init__(self, name: str, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.name = total, enabled, name
        self.bar = None
        self._next_line = 0
        if not enabled:
            return
        from rich.console import Console

        console = Console(stderr=True)
        if console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TextColumn("ETA"),
                                TimeRemainingColumn(), console=console, transient=False)
            self.task = self.bar.add_task(name, total=total, loss=float("nan"))
            self.bar.start()
        else:
            self.console = console
            self.t0 = time.perf_counter()

    def advance_to(self, step: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step)

    def update(self, step: int, loss: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=loss)
        elif step >= self._next_line or step == self.total:
            elapsed = time.perf_counter() - self.t0
            self.console.print(f"  {self.name}: step {step}/{self.total} loss {loss:.4f} ({elapsed:.0f}s)")
            self._next_line = step + max(1, self.total // 4)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
