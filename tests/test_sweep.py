"""`xbench sweep` (docs/sweeps.md): the grid file's checks, the job graph (one encoder job per shared encoder,
run jobs depending on it, finished runs skipped), and a local sweep end to end with a failure and a rerun."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import xbench
from xbench.errors import ConfigError


def _grid(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_grid_file_reports_every_problem_at_once(tmp_path):
    from xbench.run.sweep import read_grid

    path = _grid(tmp_path, "profile: smoke\nmethods: []\ntasks:\n  - {task: xnli, lang: [de]}\n  - 3\n"
                           "seeds: [1, 1]\ncolour: blue\nmethod_params: {clp: {lr: 1}}\n")
    with pytest.raises(ConfigError) as err:
        read_grid(path)
    text = str(err.value)
    assert str(path) in text
    for fragment in ("unknown key 'colour'", "methods must be a non-empty list", "tasks[0]: unknown key 'lang'",
                     "tasks[0].langs must be", "tasks[1]: expected a mapping", "seeds lists a seed twice"):
        assert fragment in text, fragment


def test_grid_runs_are_checked_like_xbench_run(tmp_path):
    from xbench.run.sweep import check_grid

    path = _grid(tmp_path, "methods: [source, nosuch]\ntasks:\n  - {task: xnli, langs: [de, xx], protocols: [zero-shot, "
                           "sideways]}\n  - {task: mlqa, langs: [de], options: {few_shot: none}}\nseeds: [1]\n"
                           "method_params: {source: {lr: 1}}\n")
    with pytest.raises(ConfigError) as err:
        check_grid(path)
    text = str(err.value)
    for fragment in ("unknown method 'nosuch'", "no language(s) xx", "no protocol 'sideways'", "few_shot",
                     "has no parameter 'lr'"):
        assert fragment in text, fragment
    assert "source × xnli (zero-shot)" in text


def test_runs_that_share_an_encoder_depend_on_one_build_job(tmp_path):
    from xbench.run.sweep import read_grid
    from xbench.run.sweep.jobs import plan_jobs

    path = _grid(tmp_path, f"methods: [clism, clism-mlm-control, source]\ntasks:\n  - {{task: mlqa, langs: [de, zh]}}\n"
                           f"  - {{task: mlqa, langs: [de], options: {{question_langs: [en, de]}}}}\n"
                           f"  - {{task: xquad, langs: [de]}}\nseeds: [1, 2]\nresults_dir: {tmp_path / 'res'}\n")
    jobs, skipped = plan_jobs(read_grid(path))
    encoders = [j for j in jobs if j.kind == "encoder"]
    runs = [j for j in jobs if j.kind == "run"]
    assert skipped == [] and len(runs) == 3 * 3 * 2
    # per language for clism and its control, one for every language for source (a shared encoder)
    assert sorted((j.request["method"], j.encoder_langs[0]) for j in encoders) == [
        ("clism", "de"), ("clism", "zh"), ("clism-mlm-control", "de"), ("clism-mlm-control", "zh"), ("source", None)]
    by_id = {j.id: j for j in encoders}
    for run in runs:
        needs = [by_id[n] for n in run.needs]
        assert all(n.request["method"] == run.request["method"] for n in needs)
        assert len(needs) == (1 if run.request["method"] == "source" else len(run.request["langs"]))
        assert run.request["seeds"] in ([1], [2]) and run.request["resume"]
    assert jobs[:len(encoders)] == encoders  # encoder jobs first
    again, _ = plan_jobs(read_grid(path))
    assert [j.id for j in again] == [j.id for j in jobs]  # stable ids: a rerun finds its jobs


def test_an_ablation_row_shares_the_encoder_job_of_its_method(tmp_path):
    from xbench.run.sweep import read_grid
    from xbench.run.sweep.jobs import plan_jobs

    path = _grid(tmp_path, f"methods: [clism, clism-span-head]\ntasks:\n  - {{task: mlqa, langs: [de]}}\nseeds: [1, 2]\n"
                           f"results_dir: {tmp_path / 'res'}\n")
    jobs, _ = plan_jobs(read_grid(path))
    [encoder] = [j for j in jobs if j.kind == "encoder"]
    runs = [j for j in jobs if j.kind == "run"]
    assert len(runs) == 4 and all(r.needs == [encoder.id] for r in runs)
    assert encoder.label.startswith("build clism encoder de")


def test_a_single_process_slurm_job_is_the_main_process(monkeypatch):
    from xbench.run.record import is_main_process

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("SLURM_PROCID", "3")  # a job array task's own process: not a rank of a distributed run
    assert is_main_process()
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()


@pytest.mark.slow
def test_a_local_sweep_runs_fails_reruns_and_matches_xbench_run(data_root, tmp_path):
    env = {"XBENCH_DATA": str(data_root)}
    res = tmp_path / "res"
    path = _grid(tmp_path, f"profile: smoke\nmethods: [source]\ntasks:\n  - {{task: xnli, langs: [de]}}\nseeds: [1, 2]\n"
                           f"set: {{finetune.max_steps: 4, finetune.eval_every: 4}}\nresults_dir: {res}\n")
    # Every fine-tuning is killed at its second step: the run jobs fail, the encoder job (no training) does not.
    failed = xbench("sweep", str(path), "--max-parallel", "2", env={**env, "XBENCH_TEST_KILL_AT_STEP": "2"})
    assert failed.returncode == 1, failed.stderr[-2000:]
    state = json.loads((res / ".sweep" / "grid" / "state.json").read_text())
    kinds = {j["kind"]: [] for j in state["jobs"]}
    for j in state["jobs"]:
        kinds[j["kind"]].append(j["state"])
    assert kinds == {"encoder": ["done"], "run": ["failed", "failed"]}
    assert all(Path(j["stderr"]).is_file() for j in state["jobs"])
    assert failed.stdout.count("failed") >= 2 and "log " in failed.stdout

    done = xbench("sweep", str(path), "--max-parallel", "2", env=env)  # reruns only what failed
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    status = xbench("sweep", "status", str(path), env=env)
    assert status.returncode == 0 and status.stdout.count("done") >= 3
    results = sorted(res.glob("xnli/zero-shot/smoke/source/*/seed-*.json"))
    assert len(results) == 2

    again = xbench("sweep", str(path), env=env)  # nothing left to do
    assert again.returncode == 0 and "skipped 2" in again.stdout

    solo = tmp_path / "solo"  # the same run by hand: the same scores
    proc = xbench("run", "--method", "source", "--task", "xnli", "--langs", "de", "--seeds", "1,2", "--output-dir",
                  str(solo), "--set", "finetune.max_steps=4", "--set", "finetune.eval_every=4", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for path_ in results:
        mine = json.loads(path_.read_text())
        theirs = json.loads((solo / path_.relative_to(res)).read_text())
        assert mine["scores"] == theirs["scores"] and mine["config_hash"] == theirs["config_hash"]


def test_a_preempted_job_is_requeued_with_the_same_call():
    from submitit.helpers import DelayedSubmission

    from xbench.run.sweep.execute import _flat
    from xbench.run.sweep.jobs import Job

    job = Job("run-1", "run", "a run", {"method": "source"}, needs=["enc-1"])
    fn, *args = _flat(job)
    again = fn.checkpoint(*args)  # what submitit calls when Slurm signals a preemption or the time limit
    assert isinstance(again, DelayedSubmission) and again.function is fn and list(again.args) == args
    encoder = Job("enc-1", "encoder", "a build", {"method": "source"}, encoder_langs=["de"])
    fn, *args = _flat(encoder)
    assert args == [{"method": "source"}, ["de"]] and fn.checkpoint(*args).function is fn
