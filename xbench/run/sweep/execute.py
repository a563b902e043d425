"""Running a sweep's jobs through submitit (docs/sweeps.md, "Executors"), and the state file `xbench sweep
status` reads.

- `slurm`: submitit's Slurm executor. Encoder jobs go in one job array; the run jobs that read the same
  encoders go in one array each, submitted with `--dependency=afterok:<those jobs>` and
  `--kill-on-invalid-dep=yes`, so Slurm starts them only after their encoders are built and cancels
  them when a build fails. A large grid is a handful of submissions.
- `local`: submitit's local executor, at most `max_parallel` jobs at once (submitit's own local executor
  starts every job it is given at once, whatever the CPU count), a run job only after its encoder jobs
  have succeeded.

Either way the sweep's folder (`<results_dir>/.sweep/<grid name>/`) holds submitit's job folders (logs,
pickled job payloads written by xbench itself) and `state.json`: every job's kind, label, dependencies,
scheduler id, state, log paths and result file, rewritten atomically as states change.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xbench.atomic import atomic_write_json
from xbench.errors import XbenchError
from xbench.run.sweep.jobs import Job, encoder_job, run_job

STATES = ("pending", "running", "done", "failed", "skipped")
_FINAL = {"done", "failed", "skipped"}


@dataclass
class SlurmOptions:
    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int = 1
    mem_gb: float | None = None
    time_min: int = 60
    account: str | None = None
    qos: str | None = None
    sbatch: dict[str, str] = field(default_factory=dict)  # extra sbatch flags, e.g. {"constraint": "a100"}


def sweep_folder(grid: Any) -> Path:
    return Path(grid.results_dir) / ".sweep" / grid.path.stem


class SweepState:
    """The jobs of a sweep and where each stands; persisted as JSON (never a pickle) after every change."""

    def __init__(self, folder: Path, jobs: list[Job], skipped: list[Job], executor: str) -> None:
        self.folder, self.executor = folder, executor
        self.jobs = {j.id: j for j in jobs}
        self.rows: dict[str, dict[str, Any]] = {}
        for job in jobs:
            self.rows[job.id] = {"state": "pending", "scheduler_id": None, "stdout": None, "stderr": None,
                                 "error": None, "started": None, "ended": None}
        earlier = self._earlier()
        for job in skipped:
            self.jobs[job.id] = job
            old = earlier.get(job.id, {})  # the job that wrote the result, if this folder's last sweep ran it
            self.rows[job.id] = {"state": "skipped", "scheduler_id": old.get("scheduler_id"),
                                 "stdout": old.get("stdout"), "stderr": old.get("stderr"),
                                 "error": "its result exists with this grid's identity", "started": old.get("started"),
                                 "ended": old.get("ended")}

    def _earlier(self) -> dict[str, dict[str, Any]]:
        import json

        try:
            rows = json.loads((self.folder / "state.json").read_text(encoding="utf-8"))["jobs"]
        except (OSError, ValueError, KeyError, TypeError):
            return {}
        return {r["id"]: r for r in rows if isinstance(r, dict) and "id" in r}

    def set(self, job_id: str, **values: Any) -> None:
        row = self.rows[job_id]
        if values.get("state") == "running" and row["started"] is None:
            values.setdefault("started", time.time())
        if values.get("state") in _FINAL and row["ended"] is None:
            values.setdefault("ended", time.time())
        row.update(values)
        self.save()

    def save(self) -> None:
        atomic_write_json(self.folder / "state.json", {
            "format": 1, "executor": self.executor,
            "jobs": [{**self.jobs[k].to_dict(), **self.rows[k]} for k in self.jobs]})

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATES}
        for row in self.rows.values():
            out[row["state"]] += 1
        return out


def _payload(job: Job) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    if job.kind == "encoder":
        return encoder_job, (job.request, job.encoder_langs)
    return run_job, (job.request,)


def _paths(sub: Any) -> dict[str, str]:
    paths = sub.paths
    return {"stdout": str(paths.stdout), "stderr": str(paths.stderr)}


def _error_of(sub: Any) -> str:
    try:
        exc = sub.exception()
    except Exception as read_error:  # noqa: BLE001 -- the scheduler lost the job: say so instead
        return f"no result from the job ({type(read_error).__name__}: {read_error})"
    if exc is None:
        return "the job ended without a result"
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else type(exc).__name__


def run_local(state: SweepState, max_parallel: int, on_change: Callable[[], None] = lambda: None,
              poll_s: float = 0.5) -> None:
    """Run the pending jobs with submitit's LocalExecutor, `max_parallel` at a time, in dependency order."""
    import submitit

    if max_parallel < 1:
        raise XbenchError(f"--max-parallel must be at least 1, got {max_parallel}")
    import os

    # The jobs share this machine's cores: each gets its part as torch threads, unless the user said.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max_parallel)))
    executor = submitit.LocalExecutor(folder=str(state.folder / "jobs" / "%j"))
    executor.update_parameters(timeout_min=60 * 24 * 7)
    live: dict[str, Any] = {}
    while True:
        for job_id, sub in list(live.items()):
            if sub.done():
                del live[job_id]
                failed = _has_error(sub)
                state.set(job_id, state="failed" if failed else "done", error=_error_of(sub) if failed else None)
                on_change()
        for job_id, job in state.jobs.items():
            row = state.rows[job_id]
            if row["state"] != "pending":
                continue
            failed_needs = [n for n in job.needs if state.rows[n]["state"] == "failed"]
            if failed_needs:
                dep = state.jobs[failed_needs[0]]
                state.set(job_id, state="failed",
                          error=f"not run: encoder job '{dep.label}' failed (log {state.rows[dep.id]['stderr']})")
                on_change()
                continue
            if len(live) >= max_parallel or any(state.rows[n]["state"] != "done" for n in job.needs):
                continue
            fn, args = _payload(job)
            sub = executor.submit(fn, *args)
            live[job_id] = sub
            state.set(job_id, state="running", scheduler_id=str(sub.job_id), **_paths(sub))
            on_change()
        if not live and not any(r["state"] == "pending" for r in state.rows.values()):
            return
        time.sleep(poll_s)


def _has_error(sub: Any) -> bool:
    try:
        sub.result()
    except Exception:  # noqa: BLE001 -- any exception of the job is its failure
        return True
    return False


def run_slurm(state: SweepState, opts: SlurmOptions, on_change: Callable[[], None] = lambda: None,
              poll_s: float = 3.0, wait: bool = True) -> None:
    """Submit the pending jobs to Slurm (encoder array first, run arrays with afterok dependencies) and, with
    `wait`, follow them to the end."""
    import submitit

    def executor(extra: dict[str, str]) -> Any:
        ex = submitit.AutoExecutor(folder=str(state.folder / "jobs" / "%j"), cluster="slurm")
        params: dict[str, Any] = {"timeout_min": opts.time_min, "cpus_per_task": opts.cpus_per_job,
                                  "slurm_additional_parameters": {**opts.sbatch, **extra},
                                  # torch's threads = the job's CPUs, not the node's cores
                                  "slurm_setup": [f"export OMP_NUM_THREADS={opts.cpus_per_job}"]}
        if opts.partition:
            params["slurm_partition"] = opts.partition
        if opts.gpus_per_job:
            params["gpus_per_node"] = opts.gpus_per_job
        if opts.mem_gb:
            params["mem_gb"] = opts.mem_gb
        if opts.account:
            params["slurm_account"] = opts.account
        if opts.qos:
            params["slurm_qos"] = opts.qos
        ex.update_parameters(**params)
        return ex

    pending = [j for j in state.jobs.values() if state.rows[j.id]["state"] == "pending"]
    subs: dict[str, Any] = {}
    encoders = [j for j in pending if j.kind == "encoder"]
    if encoders:
        ex = executor({})
        with ex.batch():
            for job in encoders:
                subs[job.id] = ex.submit(*_flat(job))
    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in pending:
        if job.kind == "run":
            groups.setdefault(tuple(job.needs), []).append(job)
    for needs, jobs in groups.items():
        ids = [str(subs[n].job_id) for n in needs if n in subs]
        extra = {"dependency": "afterok:" + ":".join(ids), "kill-on-invalid-dep": "yes"} if ids else {}
        ex = executor(extra)
        with ex.batch():
            for job in jobs:
                subs[job.id] = ex.submit(*_flat(job))
    for job_id, sub in subs.items():
        state.set(job_id, state="pending", scheduler_id=str(sub.job_id), **_paths(sub))
    on_change()
    if wait:
        follow_slurm(state, subs, on_change, poll_s)


def _flat(job: Job) -> tuple[Any, ...]:
    """The call a Slurm job makes: a checkpointable one, so that a preempted job is requeued and resumes."""
    from xbench.run.sweep.requeue import RequeuedEncoder, RequeuedRun

    _, args = _payload(job)
    return (RequeuedEncoder() if job.kind == "encoder" else RequeuedRun(), *args)


_SLURM_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING"}
_SLURM_DONE = {"COMPLETED", "DONE", "FINISHED"}
_SLURM_PENDING = {"PENDING", "REQUEUED", "RESIZING", "SUSPENDED", "UNKNOWN"}


def follow_slurm(state: SweepState, subs: dict[str, Any], on_change: Callable[[], None], poll_s: float) -> None:
    """Poll the scheduler (through submitit, which asks sacct) until every submitted job has ended."""
    while True:
        open_jobs = 0
        # submitit's watcher asks sacct at most once a minute on its own (and, measured here, stopped
        # asking for the last jobs of an array): force one sacct call per poll for every job instead.
        watcher = next(iter(subs.values())).watcher if subs else None
        if watcher is not None:
            watcher.update()
        for job_id, sub in subs.items():
            row = state.rows[job_id]
            if row["state"] in _FINAL:
                continue
            raw = watcher.get_state(str(sub.job_id), mode="standard") if watcher is not None else sub.state
            slurm_state = raw.split()[0] if raw else "UNKNOWN"
            if slurm_state in _SLURM_DONE:
                new, error = "done", None
            elif slurm_state in _SLURM_RUNNING:
                new, error = "running", None
            elif slurm_state in _SLURM_PENDING:
                new, error = "pending", None
            else:  # FAILED, CANCELLED (a failed dependency), TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, ...
                job = state.jobs[job_id]
                failed = [state.jobs[n] for n in job.needs if state.rows[n]["state"] == "failed"]
                error = (f"not run ({slurm_state}): encoder job '{failed[0].label}' failed "
                         f"(log {state.rows[failed[0].id]['stderr']})" if failed else f"{slurm_state}: {_error_of(sub)}")
                new = "failed"
            if new != row["state"]:
                state.set(job_id, state=new, error=error)
                on_change()
            open_jobs += new not in _FINAL
        if not open_jobs:
            return
        time.sleep(poll_s)
