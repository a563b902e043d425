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
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path / "work")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("RANK_RESULT")]
    assert sorted(int(r[1]) for r in rows) == [0, 1] and {r[2] for r in rows} == {"2"}
    assert {r[3] for r in rows} == {"6"}  # six optimizer steps on both ranks
    assert len({r[4] for r in rows}) == 1  # global token count agrees across ranks
    assert len({r[5] for r in rows}) == 1  # the logged loss is the all-reduced mean
    assert (tmp_path / "work" / "checkpoints" / "step-6" / "trainer_state.json").is_file()
