"""`xbench sweep --executor slurm` on a real Slurm cluster (tools/slurm_single_node.sh starts one on this
machine; .ci/run does): a build that fails on purpose cancels its dependants, which the sweep reports
naming the build job; the rerun builds and runs everything; the results equal a local sweep's."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.test_cli import xbench

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


def _slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0 and any(s.strip() in ("idle", "mix", "alloc") for s in proc.stdout.splitlines())


@pytest.fixture
def slurm() -> None:
    if not _slurm_up():
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs a running Slurm (tools/slurm_single_node.sh start), and sinfo shows no usable node")
        pytest.skip("no running Slurm cluster here (tools/slurm_single_node.sh start)")


def test_a_failed_build_cancels_its_runs_and_the_rerun_finishes_them(slurm, data_root, tmp_path):
    # The shared cache (the tiny source model is reused), and a scratch encoder of its own: a pretrain seed
    # no other run uses, so that its build really trains (and is killed) on every run of this test.
    env = {"XBENCH_DATA": str(data_root)}
    seed = int.from_bytes(os.urandom(3), "big") + 1000
    grid = tmp_path / "grid.yaml"
    # scratch on a tiny token budget: a real (short) encoder build, killed at its second step
    grid.write_text("profile: smoke\nmethods: [scratch]\ntasks:\n  - {task: xnli, langs: [de]}\nseeds: [1, 2]\n"
                    f"method_params: {{scratch: {{budget_tokens: 20000, pretrain_seed: {seed}}}}}\n"
                    "set: {finetune.max_steps: 4, finetune.eval_every: 4}\n", encoding="utf-8")
    res = tmp_path / "slurm"
    failed = xbench("sweep", str(grid), "--executor", "slurm", "--results-dir", str(res),
                    env={**env, "XBENCH_TEST_KILL_AT_STEP": "2"})
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr[-3000:]
    state = json.loads((res / ".sweep" / "grid" / "state.json").read_text())
    by_kind = {}
    for job in state["jobs"]:
        by_kind.setdefault(job["kind"], []).append(job)
    [build] = by_kind["encoder"]
    assert build["state"] == "failed" and build["scheduler_id"]
    assert [j["state"] for j in by_kind["run"]] == ["failed", "failed"]
    for job in by_kind["run"]:
        assert "encoder job 'build scratch encoder de" in job["error"] and build["stderr"] in job["error"]
    assert "failed build scratch encoder de" in failed.stdout

    done = xbench("sweep", str(grid), "--executor", "slurm", "--results-dir", str(res), env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    local = tmp_path / "local"
    proc = xbench("sweep", str(grid), "--executor", "local", "--max-parallel", "2", "--results-dir", str(local), env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "done 3" in proc.stdout and "skipped 0" in proc.stdout  # its own runs (the encoder comes from the cache)
    ours = sorted(p.relative_to(res) for p in res.glob("xnli/**/seed-*.json"))
    assert len(ours) == 2
    for rel in ours:
        a, b = json.loads((res / rel).read_text()), json.loads((local / rel).read_text())
        assert a["scores"] == b["scores"] and a["config_hash"] == b["config_hash"]
