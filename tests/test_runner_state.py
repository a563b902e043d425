"""Training state beyond the model (a MoCo key queue, a momentum encoder) registered with the
runner: saved in every full-state checkpoint, restored on resume so a killed run continues to the
same numbers, refused clearly when a checkpoint lacks it, and never unpickled."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.toy_training import train_with_state
from xbench.errors import XbenchError
from xbench.runner.trainer import EXTRA_STATE_FILE, Runner, TrainArgs

REPO = Path(__file__).resolve().parent.parent
STEPS, EVERY, KILL = 24, 5, 13


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The uninterrupted run every resumed one is compared with."""
    return train_with_state(str(tmp_path_factory.mktemp("full")), steps=STEPS, checkpoint_every=EVERY)


def _kill_at(work: Path, step: int, register: tuple[str, ...] = ("key_queue", "momentum_encoder")) -> None:
    """Run the stage in a subprocess that SIGKILLs itself right after optimizer step `step`."""
    env = {**os.environ, "XBENCH_TEST_KILL_AT_STEP": str(step), "PYTHONPATH": str(REPO)}
    code = ("import sys; from tests.helpers.toy_training import train_with_state; "
            f"train_with_state(sys.argv[1], steps={STEPS}, checkpoint_every={EVERY}, register={register!r})")
    proc = subprocess.run([sys.executable, "-c", code, str(work)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_kill_and_resume_restores_queue_and_momentum_encoder(full, tmp_path):
    full_out, full_extra = full
    work = tmp_path / "killed"
    _kill_at(work, KILL)
    ckpt = work / "checkpoints" / "step-10"
    assert sorted(p.name for p in (work / "checkpoints").iterdir() if not p.name.startswith(".")) == ["step-10"]
    saved = torch.load(ckpt / EXTRA_STATE_FILE, map_location="cpu", weights_only=True)
    assert set(saved) == {"key_queue", "momentum_encoder"}
    assert saved["key_queue"]["pushed"] == 10 * 8  # ten steps of batch 8 went through the queue

    resumed, extra = train_with_state(str(work), steps=STEPS, checkpoint_every=EVERY, resume=True)
    assert len(resumed.losses) == len(full_out.losses) == STEPS
    assert max(abs(a - b) for a, b in zip(resumed.losses[KILL:], full_out.losses[KILL:])) < 1e-6
    assert max(abs(a - b) for a, b in zip(resumed.losses, full_out.losses)) < 1e-6
    q, fq = extra["key_queue"], full_extra["key_queue"]
    assert (q.ptr, q.pushed) == (fq.ptr, fq.pushed) and _max_diff(q.keys, fq.keys) < 1e-6
    ema, full_ema = extra["momentum_encoder"].state_dict(), full_extra["momentum_encoder"].state_dict()
    assert max(_max_diff(ema[k], full_ema[k]) for k in ema if ema[k].is_floating_point()) < 1e-6


def test_resume_without_the_extra_state_is_not_exact(full, tmp_path):
    """The control for the test above: a stage that does not register its queue and momentum
    encoder resumes to other losses, so the equality there is the registration's doing."""
    full_out, _ = full
    work = tmp_path / "killed"
    _kill_at(work, KILL, register=())
    assert not (work / "checkpoints" / "step-10" / EXTRA_STATE_FILE).exists()
    resumed, _ = train_with_state(str(work), steps=STEPS, checkpoint_every=EVERY, resume=True, register=())
    assert max(abs(a - b) for a, b in zip(resumed.losses[10:], full_out.losses[10:])) > 1e-4


@pytest.mark.parametrize("registered", [("key_queue",), ("key_queue", "momentum_encoder")])
def test_checkpoint_lacking_registered_state_is_a_clear_error(tmp_path, registered):
    work = tmp_path / "w"
    train_with_state(str(work), steps=EVERY, checkpoint_every=EVERY, register=())
    with pytest.raises(XbenchError, match=r"step-5: cannot resume stage 'momentum'.*lacks the registered state "
                                          + ", ".join(f"'{n}'" for n in sorted(registered))):
        train_with_state(str(work), steps=STEPS, checkpoint_every=EVERY, resume=True, register=registered)
    # Nothing was loaded or trained: the checkpoint is still there, unchanged, for a correct stage.
    assert (work / "checkpoints" / "step-5" / "trainer_state.json").is_file()


def test_checkpoint_with_state_the_stage_does_not_register_is_a_clear_error(tmp_path):
    work = tmp_path / "w"
    train_with_state(str(work), steps=EVERY, checkpoint_every=EVERY)
    with pytest.raises(XbenchError, match=r"holds state 'momentum_encoder' that the stage does not register"):
        train_with_state(str(work), steps=STEPS, checkpoint_every=EVERY, resume=True, register=("key_queue",))


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_payload_is_live(tmp_path):
    m = tmp_path / "live"
    pickle.loads(pickle.dumps(Payload(m)))
    assert m.exists()


@pytest.mark.parametrize("form", ["torch.save", "raw pickle"])
def test_planted_extra_state_file_never_runs(tmp_path, form):
    work, marker = tmp_path / "w", tmp_path / "PWNED"
    train_with_state(str(work), steps=EVERY, checkpoint_every=EVERY)
    target = work / "checkpoints" / "step-5" / EXTRA_STATE_FILE
    assert target.is_file()
    payload = {"key_queue": Payload(marker), "momentum_encoder": Payload(marker)}
    if form == "torch.save":
        torch.save(payload, target)
    else:
        target.write_bytes(pickle.dumps(payload))
    with pytest.raises(XbenchError, match=rf"{EXTRA_STATE_FILE}: not a checkpoint xbench can load safely"):
        train_with_state(str(work), steps=STEPS, checkpoint_every=EVERY, resume=True)
    assert not marker.exists()


class _Sampler:
    def __init__(self, rng: object) -> None:
        self.rng = rng

    def state_dict(self):
        return {"order": [1, 2], "rng": self.rng}

    def load_state_dict(self, state):
        pass


@pytest.mark.parametrize("rng, kind", [(object(), "object"), (np.float64(0.5), "float64")])
def test_state_that_would_not_load_back_safely_is_refused_before_training(tmp_path, rng, kind):
    """Caught when fit starts, not at resume time; a numpy float passes isinstance(float) but not
    a weights_only load, so the check is on exact types."""
    from tests.helpers.toy_training import ce_loss, toy_features, toy_model
    from xbench.runner.batching import FeaturePlan

    plan = FeaturePlan(toy_features(), seed=7, batch_size=8, pad_values={"input_ids": 0, "labels": -100})
    runner = Runner(TrainArgs(lr=1e-3, max_steps=4, checkpoint_every=2, progress=False), tmp_path / "w")
    with pytest.raises(XbenchError, match=rf"extra training state 'sampler': state_dict\(\)\['rng'\] is a {kind}"):
        runner.fit(toy_model(), plan, ce_loss, extra_state={"sampler": _Sampler(rng)})
    assert not (tmp_path / "w" / "checkpoints").exists()
    with pytest.raises(XbenchError, match=r"extra training state 'x': int has no state_dict"):
        runner.fit(toy_model(), plan, ce_loss, extra_state={"x": 3})
