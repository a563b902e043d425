"""`--report-to tensorboard` (docs/sweeps.md, "Watching runs"): a short run logs every stage's loss, learning
rate and throughput through accelerate's tracker, and the event files read back with TensorBoard's reader."""
from __future__ import annotations

import pytest

from tests.test_cli import xbench


def test_a_run_logs_its_stages_to_tensorboard(data_root, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "res"
    proc = xbench("run", "--method", "source", "--task", "xnli", "--langs", "de", "--seeds", "1", "--output-dir",
                  str(out), "--set", "finetune.max_steps=6", "--set", "finetune.eval_every=6", "--report-to",
                  "tensorboard", env={"XBENCH_DATA": str(data_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [p for p in (out / "tracking").iterdir() if p.is_dir()]
    assert len(runs) == 1 and runs[0].name.startswith("fine-tune")
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "lr", "tokens_per_second"} <= tags
    losses = events.Scalars("loss")
    assert [e.step for e in losses] == [1, 2, 3, 4, 5, 6] and all(e.value > 0 for e in losses)
    assert events.Scalars("lr")[0].value > 0 and events.Scalars("tokens_per_second")[-1].value > 0


def test_an_unknown_or_missing_tracker_stops_the_run_before_any_work(tmp_path):
    proc = xbench("run", "--method", "source", "--task", "xnli", "--langs", "de", "--output-dir", str(tmp_path),
                  "--report-to", "tensorboard,neptune")
    assert proc.returncode != 0 and "unknown tracker 'neptune'" in proc.stderr and "Traceback" not in proc.stderr
