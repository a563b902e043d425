"""The same runner under torchrun with two CPU processes (gloo): ranks stay in sync."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent

SCRIPT = r'''
import sys, torch, torch.distributed as dist
from tests.helpers.toy_training import train
out = train(sys.argv[1], steps=6, checkpoint_every=3)
print("RANK_RESULT", dist.get_rank(), dist.get_world_size(), out.record.optimizer_steps, out.record.tokens_seen, out.losses[-1])
'''


def test_two_process_training_with_torchrun(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path / "work")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "RANK_RESULT" not in proc.stdout:
        # The launcher itself fails now and then on a loaded 2-core VM before any rank trains
        # (environment.md §4); one fresh try from scratch. A failure after training is not retried.
        import shutil

        shutil.rmtree(tmp_path / "work", ignore_errors=True)
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("RANK_RESULT")]
    assert sorted(int(r[1]) for r in rows) == [0, 1] and {r[2] for r in rows} == {"2"}
    assert {r[3] for r in rows} == {"6"}  # six optimizer steps on both ranks
    assert len({r[4] for r in rows}) == 1  # global token count agrees across ranks
    assert len({r[5] for r in rows}) == 1  # the logged loss is the all-reduced mean
    assert (tmp_path / "work" / "checkpoints" / "step-6" / "trainer_state.json").is_file()
