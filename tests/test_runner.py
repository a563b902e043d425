"""The shared runner: training, exact resume after a real kill, divergence, budgets, precision."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.toy_training import ce_loss, toy_features, toy_model, train
from xbench.errors import TrainingDiverged
from xbench.runner.batching import FeaturePlan
from xbench.runner.trainer import Runner, TrainArgs, resolve_precision

REPO = Path(__file__).resolve().parent.parent


def test_loss_goes_down_and_record_is_complete(tmp_path):
    out = train(str(tmp_path / "w"), steps=60, checkpoint_every=0, lr=3e-3)
    assert sum(out.losses[-10:]) / 10 < sum(out.losses[:10]) / 10
    r = out.record
    assert r.optimizer_steps == 60
    # 60 steps of batch 8 over the 96 toy features are exactly 5 epochs, so every feature is seen
    # 5 times whatever the order; tokens are the unpadded lengths (padding is not counted).
    features = toy_features()
    assert len(features) == 96 and 60 * 8 == 5 * len(features)
    assert r.tokens_seen == 5 * sum(len(f["input_ids"]) for f in features)
    assert r.flops_est == 6 * r.params["non_embedding"] * r.tokens_seen
    assert r.params["non_embedding"] < r.params["total"]
    assert r.wall_seconds > 0 and r.peak_memory_bytes > 0 and r.precision == "fp32"


def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    """A real SIGKILL mid-run, then --resume: the losses equal an uninterrupted run's to 1e-6."""
    full = train(str(tmp_path / "full"), steps=24, checkpoint_every=5)
    work = tmp_path / "killed"
    env = {**os.environ, "XBENCH_TEST_KILL_AT_STEP": "13", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "tests.helpers.toy_training", str(work)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (work / "losses.json").exists()
    # The last complete checkpoint is step 10; no partial checkpoint directory is visible.
    assert sorted(p.name for p in (work / "checkpoints").iterdir() if not p.name.startswith(".")) == ["step-10"]
    resumed = train(str(work), steps=24, checkpoint_every=5, resume=True)
    assert len(resumed.losses) == len(full.losses) == 24
    assert max(abs(a - b) for a, b in zip(resumed.losses, full.losses)) < 1e-6
    assert resumed.record.tokens_seen == full.record.tokens_seen


def test_non_finite_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path):
    plan = FeaturePlan(toy_features(), seed=1, batch_size=8, pad_values={"input_ids": 0})
    calls = {"n": 0}

    def exploding(model, batch, ctx):
        calls["n"] += 1
        loss = ce_loss(model, batch, ctx)["ce"]
        return {"ce": loss * float("nan") if calls["n"] > 6 else loss}

    runner = Runner(TrainArgs(lr=1e-3, max_steps=20, checkpoint_every=5, progress=False), tmp_path / "w", name="boom")
    with pytest.raises(TrainingDiverged, match=r"non-finite loss .* at step 7.*step-5"):
        runner.fit(toy_model(), plan, exploding)
    assert (tmp_path / "w" / "checkpoints" / "step-5" / "trainer_state.json").is_file()


def test_token_budget_stops_training(tmp_path):
    plan = FeaturePlan(toy_features(), seed=1, batch_size=8, pad_values={"input_ids": 0})
    args = TrainArgs(lr=1e-3, max_steps=100, max_tokens=500, progress=False)
    out = Runner(args, tmp_path / "w").fit(toy_model(), plan, ce_loss)
    assert out.record.tokens_seen >= 500
    assert out.record.optimizer_steps < 100


def test_gradient_accumulation_counts_micro_batches(tmp_path):
    out = train(str(tmp_path / "w"), steps=6, checkpoint_every=0, grad_accum=2)
    one = train(str(tmp_path / "v"), steps=12, checkpoint_every=0, grad_accum=1)
    assert out.record.optimizer_steps == 6
    # Six steps of two micro-batches see exactly the batches of twelve single steps.
    assert out.record.tokens_seen == one.record.tokens_seen


def test_model_selection_restores_best_weights(tmp_path):
    plan = FeaturePlan(toy_features(), seed=1, batch_size=8, pad_values={"input_ids": 0})
    scores = iter([0.2, 0.9, 0.1])
    seen = {}

    def evaluate(model):
        value = next(scores)
        seen[value] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"acc": value}

    args = TrainArgs(lr=1e-2, max_steps=15, eval_every=5, progress=False)
    model = toy_model()
    out = Runner(args, tmp_path / "w").fit(model, plan, ce_loss, evaluate=evaluate, select_metric="acc")
    assert out.best["step"] == 10 and out.best["acc"] == 0.9
    for k, v in model.state_dict().items():
        assert torch.equal(v, seen[0.9][k]), k


def test_mixed_precision_auto_is_fp32_without_native_bf16():
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        assert resolve_precision("auto") == "bf16"
    else:
        assert resolve_precision("auto") == "no"


def test_same_seed_same_losses(tmp_path):
    a = train(str(tmp_path / "a"), steps=8, checkpoint_every=0)
    b = train(str(tmp_path / "b"), steps=8, checkpoint_every=0)
    assert a.losses == b.losses


def test_frozen_parameters_are_not_optimised(tmp_path):
    from xbench.runner.trainer import _optimizer

    model = toy_model()
    frozen = {n for n, p in model.named_parameters() if n.startswith("bert.embeddings.")}
    for n, p in model.named_parameters():
        p.requires_grad_(n not in frozen)
    assert frozen and len(frozen) < len(list(model.parameters()))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    args = TrainArgs(lr=1e-2, max_steps=5, weight_decay=0.1, progress=False)
    in_optimizer = {id(p) for g in _optimizer(model, args).param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}

    plan = FeaturePlan(toy_features(), seed=1, batch_size=8, pad_values={"input_ids": 0})
    Runner(args, tmp_path / "w").fit(model, plan, ce_loss)
    after = dict(model.named_parameters())
    for n in frozen:
        assert torch.equal(after[n].detach(), before[n]), f"frozen {n} changed"
        assert after[n].grad is None  # no gradient was even computed for it
    unchanged = [n for n in after if n not in frozen and torch.equal(after[n].detach(), before[n])]
    assert not unchanged, f"trainable parameters that did not move: {unchanged}"
