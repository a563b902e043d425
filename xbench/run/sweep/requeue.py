"""Slurm jobs that come back after a preemption or a time limit (docs/sweeps.md, "Preemption").

submitit calls a job's `checkpoint()` when Slurm signals it (preemption, or the time limit near);
returning the same call requeues the job. A requeued run job is `xbench run --resume` again, so its
fine-tuning resumes from the runner's last checkpoint, and a requeued encoder job resumes its build
from the cache entry's work folder: both are where the runner already keeps resumable state.
"""
from __future__ import annotations

from typing import Any

import submitit

from xbench.run.sweep.jobs import encoder_job, run_job


class RequeuedRun(submitit.helpers.Checkpointable):
    def __call__(self, spec: dict[str, Any]) -> list[str]:
        return run_job(spec)


class RequeuedEncoder(submitit.helpers.Checkpointable):
    def __call__(self, spec: dict[str, Any], langs: list[str | None]) -> list[str]:
        return encoder_job(spec, langs)
