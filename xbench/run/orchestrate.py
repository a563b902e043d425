"""`xbench run`: resolve the config, build encoders, fine-tune and evaluate, write result files.

This is the recipe layer: it composes a method (how the encoder is built), a task type (how the
task is loaded, trained and scored) and the shared runner, through the run's parts: the request
(run/request.py), the pre-flight (run/preflight.py), fine-tuning (run/finetune.py), evaluation
(run/evaluate.py) and the result record (run/record.py). Fine-tuning is identical for every
method, so rows of one leaderboard differ only in their encoders.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from xbench.atomic import atomic_write_json, atomic_write_text
from xbench.registry import get_method, load_object
from xbench.results.schema import result_path
from xbench.run.record import SeedLedger, check_existing, is_main_process, result_document, result_lock
from xbench.run.request import ResolvedRun, RunRequest, data_plan, resolve

__all__ = ["RunRequest", "resolve", "run"]


def run(req: RunRequest, console: Any = None) -> list[Path]:
    rr = resolve(req)
    from xbench.run.preflight import preflight

    preflight(rr)  # every data file, the method's parameters and --model, before anything is built
    method_info = get_method(req.method)
    out_root = Path(req.output_dir)
    targets = {seed: result_path(out_root, rr.card.name, rr.protocol, rr.profile["name"], req.method, rr.model, seed,
                                 variant=rr.variant)
               for seed in rr.seeds}
    check_existing(rr, targets)

    from xbench.hfquiet import quiet_transformers
    from xbench.methods.base import RunContext

    quiet_transformers()
    written: list[Path] = []
    with contextlib.ExitStack() as locks:
        if is_main_process():  # the ranks of one torchrun job are one run
            for path in targets.values():
                locks.enter_context(result_lock(out_root, path))
            check_existing(rr, targets)  # again: a run that held the lock may have finished a seed meanwhile
        for seed in rr.seeds:
            path = targets[seed]
            if path.exists() and req.resume and not req.overwrite:
                _say(console, f"[dim]seed {seed}: {path} exists with this run's identity, skipping (--resume)[/dim]")
                written.append(path)
                continue
            ctx = RunContext(profile=rr.profile, model=rr.model, data_dir=req.data_dir, params=rr.params,
                             resume=req.resume, langs=list(req.langs), slots=rr.slots)
            method = load_object(method_info.target)(ctx)
            result = _run_seed(rr, method, seed, out_root, console)
            report = method.extra_report(result)
            if report is not None:
                result["report"] = report
            if not is_main_process():  # every rank computed the same result; one writes it
                continue
            pred_dir = path.with_suffix("").with_name(path.stem + ".predictions")
            for lang, records in result.pop("_predictions").items():
                atomic_write_text(pred_dir / f"{lang}.jsonl",
                                  "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            atomic_write_json(path, result)
            shutil.rmtree(_workdir(out_root, rr, req.method, seed), ignore_errors=True)
            written.append(path)
            _say(console, f"[green]wrote[/green] {path}")
    return written


def _workdir(out_root: Path, rr: ResolvedRun, method: str, seed: int) -> Path:
    return (out_root / ".work" / rr.card.name / rr.protocol / rr.profile["name"] / method
            / f"seed-{seed}-{rr.config_hash[:8]}")


def _run_seed(rr: ResolvedRun, method: Any, seed: int, out_root: Path, console: Any) -> dict[str, Any]:
    from xbench.data.slots import bind_task_slots, run_slots
    from xbench.models.source_models import source_text
    from xbench.run.evaluate import diagnostic_warnings, evaluate_units
    from xbench.run.finetune import finetune

    req = rr.request
    task_type = rr.card.task_type_impl(req.options)
    task_slots_read = bind_task_slots(task_type, rr.slots)  # filled task slots (mnli_train, ...) replace their splits
    plan = data_plan(rr, method.scope)
    led = SeedLedger(task_type, plan.groups, plan.train_split, plan.select_split, plan.eval_split)
    # The text an xbench-built source model learnt from is data of the run: in the data hash, and its
    # hash in the model block, so a model built from other text is another model.
    led.source = source_text(rr.model, req.data_dir) if getattr(method, "uses_model", True) else None
    if led.source is not None:
        led.data[f"source-text/{led.source['model']}"] = {"source": "local", "files": led.source["files"]}
    led.flags = {"transductive": set(), "eval_split": plan.eval_split, "data_setting": rr.profile["data_setting"]}
    # The data slots the method reads are data of the run: recorded with their hash, and in the data hash
    # (docs/protocols.md, "Data slots"); a shared-data stand-in flags the rows.
    slot_block, fallback = run_slots(method, rr.slots)
    for name, record in slot_block.items():
        if name not in fallback:
            led.data[f"slot/{name}"] = record
    if fallback:
        led.flags["fallback"] = fallback
    led.method_slots, led.task_slots = slot_block, task_slots_read
    # What the method changes in the shared fine-tuning (docs/methods/README.md, "Shaping fine-tuning"):
    # recorded in the result and flagged on the leaderboard, since the row is not fine-tuned like its baseline.
    hooks = method.finetune_hooks(task_type)
    led.finetune_changes = hooks.changes() if hooks is not None else []
    if hooks is not None and hooks.inputs:  # e.g. every QA question ends with [QUE], evaluation included
        task_type.set_method_inputs(hooks.inputs)
    led.started = time.time()
    for gi, group in enumerate(plan.groups):
        enc = method.build_encoder(group.encoder_lang)
        if enc.key not in led.encoders:
            led.encoders[enc.key] = {"key": enc.key, "lang": group.encoder_lang, "provenance": enc.provenance}
            led.compute["transfer"].extend({**s, "encoder": enc.key} for s in enc.stages)
            led.uses_source = led.uses_source or enc.uses_source_weights
            if enc.uses_source_weights and not led.compute["source_pretraining"]:
                led.compute["source_pretraining"] = enc.source_stages
        led.flags["transductive"].update(enc.flags.get("transductive", []))
        led.flags.update({k: v for k, v in enc.flags.items() if k != "transductive"})
        _say(console, f"[bold]seed {seed}[/bold] · encoder {enc.key[:24]} · fine-tune on {group.train_lang}/"
                      f"{plan.train_split} · eval {','.join(group.eval_langs)}/{plan.eval_split}")
        tuned = finetune(rr, task_type, enc, group, plan.train_split, plan.select_split, seed,
                         _workdir(out_root, rr, req.method, seed) / f"group-{gi}", led.data,
                         hooks=hooks if led.finetune_changes else None)
        if tuned.cached:
            _say(console, f"[dim]fine-tuned model reused from the cache ({tuned.record['cache_entry']})[/dim]")
        led.compute["finetune"].append({**tuned.record, "group": gi})
        if tuned.best is not None:
            led.selection.append({"group": gi, "train_lang": group.train_lang, **tuned.best})
        evaluate_units(led, tuned.model, tuned.tokenizer, task_type.eval_units(group.eval_langs), req.data_dir)
    for warning in diagnostic_warnings(led):
        led.flags.setdefault("warnings", []).append(warning)
        _say(console, f"[yellow]warning:[/yellow] {warning}")
    return result_document(rr, method, seed, led)


def _say(console: Any, msg: str) -> None:
    if console is not None:
        console.print(msg)
