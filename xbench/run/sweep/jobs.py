"""A sweep's job graph (docs/sweeps.md, "Jobs"): encoder-build jobs first, then one run job per (run, seed),
each depending on the encoder jobs it reads.

Runs that read the same encoder (same method, source model, profile, resolved parameters, data, and
target language, or language set for a method with one encoder for all) depend on one build job,
so nothing is built twice in a sweep; two overlapping sweeps, or a build job and a run job that
reach the same cache entry, are kept apart by the cache's own lock. A run whose result file already
exists with this grid's identity is skipped, so a rerun of a sweep submits only what is missing or
failed. The job functions take plain dicts and are functions of the installed package, so that a
Slurm job on another node can import them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xbench.atomic import hash_json


@dataclass
class Job:
    id: str                      # stable within a grid: "enc-<hash>" or "run-<hash>"
    kind: str                    # "encoder" or "run"
    label: str                   # what a person reads in the status table
    request: dict[str, Any]      # the RunRequest, as a dict
    encoder_langs: list[str | None] = field(default_factory=list)  # encoder jobs: the encoders they build
    needs: list[str] = field(default_factory=list)                 # run jobs: the encoder jobs they read
    result: str | None = None    # run jobs: the result file they write

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _request_dict(req: Any) -> dict[str, Any]:
    return dataclasses.asdict(req)


def plan_jobs(grid: Any, *, force: bool = False) -> tuple[list[Job], list[Job]]:
    """(jobs to run, jobs skipped because their result exists). Encoder jobs come first."""
    from xbench.registry import get_method, load_object
    from xbench.results.schema import result_path
    from xbench.run.record import resume_differences
    from xbench.run.request import data_plan, resolve

    encoders: dict[str, Job] = {}
    runs: list[Job] = []
    skipped: list[Job] = []
    for req in grid.requests():
        rr = resolve(req)
        method_cls = load_object(get_method(req.method).target)
        scope = method_cls.scope
        plan = data_plan(rr, scope)
        langs = list(dict.fromkeys(g.encoder_lang for g in plan.groups))
        identity = {"method": method_cls.encoder_method or req.method, "model": rr.model, "profile": rr.profile["name"], "params": rr.params,
                    "data_dir": req.data_dir, "slots": rr.config.get("slots"),
                    # one encoder for every language: the language set is part of what it is built from
                    "langs": sorted(req.langs) if scope == "shared" and method_cls.encoder_uses_langs else None}
        needs = []
        for lang in langs:
            key = "enc-" + hash_json({**identity, "lang": lang})[:12]
            if key not in encoders:
                encoders[key] = Job(key, "encoder", f"build {identity['method']} encoder" + (f" {lang}" if lang else "")
                                    + f" ({rr.model})", _request_dict(req), encoder_langs=[lang])
            needs.append(key)
        for seed in rr.seeds:
            one = dataclasses.replace(req, seeds=[seed], overwrite=force)
            path = result_path(Path(req.output_dir), rr.card.name, rr.protocol, rr.profile["name"], req.method,
                               rr.model, seed, variant=rr.variant)
            label = f"{req.method} × {rr.card.name} {rr.protocol}" + (f" [{rr.variant}]" if rr.variant else "") \
                    + f" {','.join(req.langs)} seed {seed}"
            job = Job("run-" + hash_json(_request_dict(one))[:12], "run", label, _request_dict(one), needs=list(needs),
                      result=str(path))
            # The same identity as `xbench run --resume` checks: languages, options, config and data hashes.
            if path.exists() and not force and not resume_differences(rr, path):
                skipped.append(job)
            else:
                runs.append(job)
    wanted = {n for job in runs for n in job.needs}
    return [encoders[k] for k in encoders if k in wanted] + runs, skipped


# ---------------------------------------------------------------------- what a job runs (in its own process)


def _request(spec: dict[str, Any]) -> Any:
    from xbench.run.request import RunRequest

    return RunRequest(**spec)


def encoder_job(spec: dict[str, Any], langs: list[str | None]) -> list[str]:
    """Build (or find in the cache) the encoders a sweep's runs read; returns their cache keys."""
    from xbench.hfquiet import quiet_transformers
    from xbench.methods.base import RunContext
    from xbench.registry import get_method, load_object
    from xbench.run.preflight import preflight
    from xbench.run.request import resolve

    req = _request(spec)
    rr = resolve(req)
    preflight(rr)
    quiet_transformers()
    ctx = RunContext(profile=rr.profile, model=rr.model, data_dir=req.data_dir, params=rr.params, resume=True,
                     langs=list(req.langs), slots=rr.slots)
    method = load_object(get_method(req.method).target)(ctx)
    return [method.build_encoder(lang).key for lang in langs]


def run_job(spec: dict[str, Any]) -> list[str]:
    """One seed of one run, exactly as `xbench run --resume` would do it; returns the result files."""
    from xbench.run.orchestrate import run

    return [str(p) for p in run(_request(spec))]
