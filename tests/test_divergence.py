"""Divergence: a checkpoint is named good, kept and resumed from only if its losses were finite and
not exploding, judged also on the first loss computed from its own weights."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.helpers.toy_training import ce_loss, toy_features, toy_model
from xbench.errors import TrainingDiverged
from xbench.runner.batching import FeaturePlan
from xbench.runner.trainer import EXPLODE_FACTOR, Runner, TrainArgs, checkpoint_is_healthy, loss_is_healthy


def _plan() -> FeaturePlan:
    return FeaturePlan(toy_features(), seed=7, batch_size=8, pad_values={"input_ids": 0, "labels": -100})


def _args(**kw) -> TrainArgs:
    return TrainArgs(**{"lr": 1e-3, "max_steps": 12, "warmup_steps": 3, "seed": 11, "checkpoint_every": 2,
                        "keep_checkpoints": 1, "progress": False, **kw})


def _blow_up_after(first_bad: int):
    """What a far too high learning rate does, made exact: from optimizer step `first_bad` on, the
    weights grow by 1e3 per step (losses 1.1 -> ~1e4 -> ~1e10 ...), then become inf (loss NaN)."""

    def hook(model: torch.nn.Module, step: int) -> None:
        if step >= first_bad:
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1e3 if step < first_bad + 2 else float("inf"))

    return hook


def _states(work: Path) -> dict[str, dict]:
    return {p.name: json.loads((p / "trainer_state.json").read_text())
            for p in sorted((work / "checkpoints").glob("step-*"))}


def _max_abs_weight(ckpt: Path) -> float:
    blob = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    return max(float(t.abs().max()) for t in blob["model"].values() if t.is_floating_point())


def test_rule_flags_non_finite_and_exploding_losses():
    assert loss_is_healthy(1.1, 1.1) and loss_is_healthy(0.01, 1.1)
    assert not loss_is_healthy(float("nan"), 1.1) and not loss_is_healthy(float("inf"), 1.1)
    assert not loss_is_healthy(EXPLODE_FACTOR * 1.1 + 1, 1.1)
    # A stage that starts near zero loss is not flagged for ordinary noise (the floor of 1).
    assert loss_is_healthy(0.5, 0.01)
    # Checkpoints written before the rule are judged on their recorded losses.
    assert checkpoint_is_healthy({"losses": [1.1, 0.9]})
    assert not checkpoint_is_healthy({"losses": [1.1, 9153.0]})


def test_divergence_names_keeps_and_resumes_from_the_newest_healthy_checkpoint(tmp_path):
    work = tmp_path / "w"
    runner = Runner(_args(), work, name="boom")
    with pytest.raises(TrainingDiverged) as err:
        runner.fit(toy_model(), _plan(), ce_loss, after_optimizer_step=_blow_up_after(6))
    states = _states(work)
    # step-6 was saved while every loss so far was fine, but its own weights already give an
    # exploding loss: it is not good (and pruned), nor is step-8; step-4 is, and survives
    # keep_checkpoints=1 although it is not the newest.
    assert set(states) == {"step-4", "step-8"}
    losses = states["step-8"]["losses"]
    assert losses[6] > EXPLODE_FACTOR * losses[0] and not states["step-8"]["healthy"]
    assert states["step-4"]["healthy"] and states["step-4"]["confirmed"]
    assert "step-4" in str(err.value) and "step-8" not in str(err.value)
    assert _max_abs_weight(work / "checkpoints" / "step-4") < 100
    assert runner.healthy_checkpoint() == work / "checkpoints" / "step-4"

    # Resume starts from step 4 (not from the bad step 8) and drops the bad checkpoints.
    resumed = Runner(_args(), work, name="boom").fit(toy_model(), _plan(), ce_loss, resume=True)
    clean = Runner(_args(), tmp_path / "clean", name="boom").fit(toy_model(), _plan(), ce_loss)
    assert len(resumed.losses) == 12
    assert max(abs(a - b) for a, b in zip(resumed.losses, clean.losses)) < 1e-6
    assert all(math.isfinite(x) and x < 10 for x in resumed.losses)


def test_no_healthy_checkpoint_is_said_and_resume_starts_over(tmp_path):
    work = tmp_path / "w"
    with pytest.raises(TrainingDiverged, match="no good checkpoint exists"):
        Runner(_args(), work, name="boom").fit(toy_model(), _plan(), ce_loss, after_optimizer_step=_blow_up_after(1))
    assert (work / "checkpoints").is_dir() and not any(checkpoint_is_healthy(s) for s in _states(work).values())
    resumed = Runner(_args(max_steps=6), work, name="boom").fit(toy_model(), _plan(), ce_loss, resume=True)
    clean = Runner(_args(max_steps=6), tmp_path / "clean", name="boom").fit(toy_model(), _plan(), ce_loss)
    assert resumed.losses == pytest.approx(clean.losses, abs=1e-6)


def test_healthy_run_marks_its_checkpoints_good(tmp_path):
    work = tmp_path / "w"
    Runner(_args(max_steps=6, keep_checkpoints=3), work).fit(toy_model(), _plan(), ce_loss)
    states = _states(work)
    assert set(states) == {"step-2", "step-4", "step-6"}
    assert all(s["healthy"] for s in states.values())
    # The last one has no later loss to confirm it; the others were confirmed by the next step's loss.
    assert states["step-2"]["confirmed"] and states["step-4"]["confirmed"] and not states["step-6"]["confirmed"]
