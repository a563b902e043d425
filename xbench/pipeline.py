"""`xbench run`: resolve the config, build encoders, fine-tune and evaluate, write result files.

This is the recipe layer: it composes a method (how the encoder is built), a task type (how the
task is loaded, trained and scored) and the shared runner. Fine-tuning is identical for every
method, so rows of one leaderboard differ only in their encoders.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xbench import __version__
from xbench.atomic import atomic_write_json, atomic_write_text, hash_json
from xbench.data.sources import data_hash
from xbench.errors import ConfigError, XbenchError
from xbench.profiles import SETTINGS, TOP_LEVEL, check_seeds, check_value, load_profile, load_yaml
from xbench.registry import TaskCard, get_method, get_task, load_object
from xbench.results.schema import (SCHEMA_VERSION, model_slug, path_component_problem, protocol_dir,
                                   result_path)

FINETUNE_CODE_VERSION = 1


@dataclass
class RunRequest:
    method: str
    task: str
    langs: list[str]
    protocol: str | None = None
    profile: str = "smoke"
    model: str | None = None
    seeds: list[int] | None = None
    output_dir: str = "results"
    data_dir: str | None = None
    resume: bool = False
    overwrite: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # task-type options: question_langs, treebank, ...
    overrides: dict[str, str] = field(default_factory=dict)  # --set finetune.max_steps=20, pretrain.mlm.lr=1e-3
    progress: bool = True
    # Data slots (docs/protocols.md, "Data slots"): --slot name=value items, a --slots YAML file, --allow-fallback.
    slots: dict[str, Any] = field(default_factory=dict)
    slots_file: str | None = None
    allow_fallback: bool = False


@dataclass
class ResolvedRun:
    request: RunRequest
    card: TaskCard
    protocol: str
    profile: dict[str, Any]
    model: str
    seeds: list[int]
    finetune: dict[str, Any]
    config: dict[str, Any]
    config_hash: str
    variant: str = ""  # task options that change what is evaluated ("treebank=pud"); part of the result identity
    slots: Any = None  # xbench.data.slots.SlotSet: the filled slots, read only under a standard-data profile


def resolve(req: RunRequest) -> ResolvedRun:
    """Check everything before any work starts, and report every problem at once."""
    problems: list[str] = []
    card = profile = None
    try:
        card = get_task(req.task)
    except XbenchError as exc:
        problems.append(str(exc))
    try:
        get_method(req.method)
    except XbenchError as exc:
        problems.append(str(exc))
    try:
        profile = load_profile(req.profile)
    except XbenchError as exc:
        problems.append(str(exc))
    if not req.langs:
        problems.append("no languages given (--langs de,zh)")
    if card is not None:
        bad = [lang for lang in req.langs if lang not in card.languages]
        if bad:
            problems.append(f"task '{card.name}' has no language(s) {', '.join(bad)}; "
                            f"valid languages: {', '.join(card.languages)}")
        if req.protocol and req.protocol not in card.protocols:
            problems.append(f"task '{card.name}' has no protocol '{req.protocol}'; "
                            f"valid protocols: {', '.join(card.protocols)}")
    if profile is not None and card is not None and card.task_type not in profile["finetune"]:
        profile, default_problems = _task_type_defaults(profile, card)
        problems += default_problems
    if profile is not None:
        profile, override_problems = apply_overrides(profile, req.overrides, card.task_type if card else None)
        problems += override_problems
    finetune: dict[str, Any] = {}
    if card is not None and profile is not None:
        finetune = dict(profile["finetune"].get(card.task_type, {}))
        if not finetune:
            problems.append(f"profile '{req.profile}' has no fine-tuning settings for task type '{card.task_type}'")
    seeds = req.seeds if req.seeds is not None else (profile["seeds"] if profile else [])
    if req.seeds is not None:
        problems += check_seeds(list(req.seeds), "--seeds")
    problems += _path_problems(req, card, profile)
    output_problem = output_dir_problem(Path(req.output_dir))
    if output_problem:
        problems.append(output_problem)
    from xbench.data.slots import SlotSet, parse_slots

    slot_specs, slot_problems = parse_slots(req.slots, req.slots_file)
    problems += slot_problems
    if problems:
        raise ConfigError(problems, source="xbench run")
    assert card is not None and profile is not None
    protocol = req.protocol or card.default_protocol
    model = req.model or profile["model"]
    config = {
        "xbench_version": __version__, "finetune_code_version": FINETUNE_CODE_VERSION,
        "task": {"name": card.name, "version": card.version, "card_sha256": hash_json(card.raw)},
        "method": {"name": req.method, "params": dict(sorted(req.params.items()))},
        "task_options": dict(sorted(req.options.items())),
        "protocol": protocol, "profile": profile, "model": model, "finetune": finetune,
        "overrides": dict(sorted(req.overrides.items())),
    }
    # Slots read under the standard data setting only (the paper profile); the smoke profile's config and
    # identity stay as they were when no slot option is given.
    slots = SlotSet(slot_specs, active=profile["data_setting"] == "standard", allow_fallback=req.allow_fallback)
    config.update(slots.config())
    return ResolvedRun(req, card, protocol, profile, model, list(seeds), finetune, config, hash_json(config),
                       variant=options_variant(req.options), slots=slots)


def _task_type_defaults(profile: dict[str, Any], card: TaskCard) -> tuple[dict[str, Any], list[str]]:
    """The profile with the task type's own fine-tuning block where the profile has none.

    The shipped profiles only know the built-in task types; a task type from a plugin brings its
    settings per profile (`TaskType.finetune_defaults`), checked like a profile's own block.
    """
    from xbench.profiles import block_problems
    from xbench.registry import load_object, task_types

    target = task_types().get(card.task_type)
    if target is None:
        return profile, []  # the card's unknown task type is reported on its own
    try:
        block = getattr(load_object(target), "finetune_defaults", {}).get(profile["name"])
    except XbenchError as exc:
        return profile, [str(exc)]
    if block is None:
        return profile, []
    where = f"task type '{card.task_type}' finetune_defaults['{profile['name']}']"
    problems = block_problems(where, "finetune", block)
    if problems:
        return profile, problems
    return {**profile, "finetune": {**profile["finetune"], card.task_type: dict(block)}}, []


def options_variant(options: dict[str, Any]) -> str:
    """A stable name for a run's task options: `question_langs=de,en;treebank=pud` ("" for none).

    Runs that differ in it evaluate different things (G-XLT cells, PUD test sets), so it is part of
    the result path and of the leaderboard row, and an XLT run never counts as a seed of a G-XLT run.
    """
    parts = []
    for key, value in sorted(options.items()):
        text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        parts.append(f"{key}={text}")
    return ";".join(parts)


def apply_overrides(profile: dict[str, Any], overrides: dict[str, str],
                    task_type: str | None) -> tuple[dict[str, Any], list[str]]:
    """Apply dotted --set overrides to a copy of the profile; `finetune.x` means this task type's block.

    Keys, types and ranges are checked against the profile schema (xbench.profiles.SETTINGS): a typo
    or a negative step count would otherwise be carried along, ignored or trained on silently.
    """
    import copy

    import yaml

    out, problems = copy.deepcopy(profile), []
    for dotted, raw in overrides.items():
        where = f"--set {dotted}"
        try:
            value = load_yaml(raw)
        except yaml.YAMLError:
            problems.append(f"{where}: cannot read the value {raw!r}")
            continue
        parts = dotted.split(".")
        if parts[0] in SETTINGS:
            section = parts[0]
            if section == "finetune" and len(parts) == 2:
                if task_type is None:  # the unknown task is reported on its own
                    continue
                parts = ["finetune", task_type, parts[1]]
            if len(parts) != 3:
                problems.append(f"{where}: expected {section}.<block>.<setting>"
                                + (" or finetune.<setting>" if section == "finetune" else ""))
                continue
            blocks = out[section]
            if parts[1] not in blocks:
                problems.append(f"{where}: profile '{profile['name']}' has no {section} block '{parts[1]}'; "
                                f"valid blocks: {', '.join(blocks)}")
                continue
            spec = SETTINGS[section].get(parts[2])
            if spec is None:
                problems.append(f"{where}: unknown setting '{parts[2]}' in {section}.{parts[1]}; "
                                f"valid keys: {', '.join(SETTINGS[section])}")
                continue
            value, problem = check_value(where, value, spec)
            if problem:
                problems.append(problem)
                continue
            blocks[parts[1]][parts[2]] = value
        elif len(parts) == 1 and parts[0] in TOP_LEVEL:
            value, problem = check_value(where, value, TOP_LEVEL[parts[0]])
            extra = check_seeds(value, where) if parts[0] == "seeds" and not problem else []
            if parts[0] == "data_setting" and not problem and value not in ("shared", "standard"):
                extra.append(f"{where}: expected 'shared' or 'standard', got {value!r}")
            if problem or extra:
                problems += [problem] if problem else extra
                continue
            out[parts[0]] = value
        else:
            problems.append(f"{where}: no such profile setting; valid: finetune.<setting>, "
                            f"pretrain.<block>.<setting>, {', '.join(TOP_LEVEL)}")
    return out, problems


def _path_problems(req: RunRequest, card: TaskCard | None, profile: dict[str, Any] | None) -> list[str]:
    """Every name that becomes a folder of the result path, checked by the one rule result_path applies."""
    parts: list[tuple[str, Any]] = [("method", req.method)]
    if card is not None:
        parts += [("task", card.name),
                  ("protocol", protocol_dir(req.protocol or card.default_protocol, options_variant(req.options)))]
    if profile is not None:
        parts += [("profile", profile["name"]), ("model", model_slug(req.model or profile["model"]))]
    # Seeds are checked by check_seeds; result_path applies path_component_problem to them as well.
    problems = [path_component_problem(what, value) for what, value in parts]
    return [p for p in problems if p]


def output_dir_problem(path: Path) -> str | None:
    """Why results cannot be written under `path`, found before any work rather than after training."""
    if path.exists() and not path.is_dir():
        return f"--output-dir {path} is a file, not a folder"
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"--output-dir {path}: {probe} is a file, not a folder"
    try:  # the permission bits do not tell (root, ACLs, read-only mounts): try it
        fd, tmp = tempfile.mkstemp(prefix=".xbench-write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        return f"--output-dir {path} is not writable: cannot create a file in {probe} ({exc.strerror})"
    return None


@dataclass
class TrainGroup:
    """One fine-tuning run: an encoder, a training language, and the languages it is evaluated on."""

    encoder_lang: str | None
    train_lang: str
    eval_langs: list[str]


def plan_groups(method_scope: str, train_lang_spec: str, langs: list[str]) -> list[TrainGroup]:
    if train_lang_spec == "{target}":
        return [TrainGroup(lang if method_scope == "per-language" else None, lang, [lang]) for lang in langs]
    if method_scope == "per-language":
        return [TrainGroup(lang, train_lang_spec, [lang]) for lang in langs]
    return [TrainGroup(None, train_lang_spec, list(langs))]


def _split_name(spec: dict[str, Any], data_setting: str) -> str:
    return spec.get("shared", spec["split"]) if data_setting == "shared" else spec["split"]


@dataclass
class DataPlan:
    """Which splits a run reads, for which languages: one definition for the run and its pre-flight."""

    train_split: str
    select_split: str | None
    eval_split: str
    select_lang_spec: str | None
    groups: list[TrainGroup]

    def select_lang(self, group: TrainGroup) -> str:
        assert self.select_lang_spec is not None
        return _select_lang(self.select_lang_spec, group)

    def reads(self, task_type: Any) -> list[tuple[str, str, bool]]:
        """(language or unit, split, for_eval) of every load the run makes, in the run's order."""
        out: list[tuple[str, str, bool]] = []
        for group in self.groups:
            out.append((group.train_lang, self.train_split, False))
            if self.select_split is not None:
                out.append((self.select_lang(group), self.select_split, True))
            out.extend((unit, self.eval_split, True) for unit in task_type.eval_units(group.eval_langs))
        return list(dict.fromkeys(out))


def _select_lang(spec: str, group: TrainGroup) -> str:
    return spec.replace("{target}", group.train_lang)


def data_plan(rr: ResolvedRun, method_scope: str) -> DataPlan:
    proto = rr.card.protocol(rr.protocol)
    data_setting = rr.profile["data_setting"]
    return DataPlan(train_split=_split_name(proto.train, data_setting),
                    select_split=_split_name(proto.select, data_setting) if proto.select else None,
                    eval_split=_split_name(proto.eval, data_setting),
                    select_lang_spec=proto.select["lang"] if proto.select else None,
                    groups=plan_groups(method_scope, proto.train["lang"], rr.request.langs))


def run(req: RunRequest, console: Any = None) -> list[Path]:
    rr = resolve(req)
    from xbench.preflight import preflight

    preflight(rr)  # every data file, the method's parameters and --model, before anything is built
    method_info = get_method(req.method)
    out_root = Path(req.output_dir)
    targets = {seed: result_path(out_root, rr.card.name, rr.protocol, rr.profile["name"], req.method, rr.model, seed,
                                 variant=rr.variant)
               for seed in rr.seeds}
    _check_existing(rr, targets)

    from xbench.methods.base import RunContext

    from xbench.hfquiet import quiet_transformers

    quiet_transformers()
    written: list[Path] = []
    with contextlib.ExitStack() as locks:
        if _is_main_process():  # the ranks of one torchrun job are one run
            for path in targets.values():
                locks.enter_context(_result_lock(out_root, path))
            _check_existing(rr, targets)  # again: a run that held the lock may have finished a seed meanwhile
        for seed in rr.seeds:
            path = targets[seed]
            if path.exists() and req.resume and not req.overwrite:
                _say(console, f"[dim]seed {seed}: {path} exists with this run's identity, skipping (--resume)[/dim]")
                written.append(path)
                continue
            ctx = RunContext(profile=rr.profile, model=rr.model, data_dir=req.data_dir, params=req.params,
                             resume=req.resume, langs=list(req.langs), slots=rr.slots)
            method = load_object(method_info.target)(ctx)
            result = _run_seed(rr, method, seed, out_root, console)
            report = method.extra_report(result)
            if report is not None:
                result["report"] = report
            if not _is_main_process():  # every rank computed the same result; one writes it
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


def _check_existing(rr: ResolvedRun, targets: dict[int, Path]) -> None:
    """Refuse to replace a result without --overwrite, and to keep one under --resume that is not this run's."""
    req = rr.request
    root = Path(req.output_dir).resolve()
    outside = [str(p) for p in targets.values() if not p.resolve().is_relative_to(root)]
    if outside:  # result_path's checked names cannot do this; a symlink inside the output tree can
        raise XbenchError(f"result path(s) {', '.join(outside)} resolve outside --output-dir {req.output_dir}")
    existing = [p for p in targets.values() if p.exists()]
    if not existing or req.overwrite:
        return
    if not req.resume:
        raise XbenchError("result file(s) already exist: " + ", ".join(map(str, existing))
                          + "; pass --overwrite to replace them, --resume to skip them, or choose another --output-dir")
    problems = [d for path in existing for d in resume_differences(rr, path)]
    if problems:
        raise ConfigError(problems + ["--resume keeps only results of the same identity; pass --overwrite to "
                                      "replace them, or choose another --output-dir"], source="xbench run --resume")


def resume_differences(rr: ResolvedRun, path: Path) -> list[str]:
    """How the result at `path` differs from what this run would write (empty: --resume may keep it).

    The identity is the evaluated languages and task options, the resolved config (its hash covers
    the xbench and fine-tuning code versions, settings and overrides) and the data: every file the
    result lists is hashed again, so an edited data file is not taken for the one that was scored.
    """
    from xbench.results.schema import load_result

    old = load_result(path)
    req, run_info = rr.request, old.get("run") or {}
    out: list[str] = []
    try:
        want = rr.card.task_type_impl(req.options).eval_units(list(req.langs))
    except XbenchError:
        want = list(req.langs)
    have = run_info.get("eval_langs") or (old.get("scores") or {}).get("languages") or []
    if sorted(map(str, have)) != sorted(want):
        out.append(f"{path} was made for languages {', '.join(map(str, have)) or '(none)'}, "
                   f"this run asks {', '.join(want)}")
    if run_info.get("variant", "") != rr.variant:
        out.append(f"{path} was made with task options '{run_info.get('variant', '')}', this run has '{rr.variant}'")
    diffs = _config_differences(old.get("config"), rr.config)  # the content, not only the hash it claims
    if diffs or old.get("config_hash") != rr.config_hash:
        shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
        out.append(f"{path}: config differs (result vs this run): {shown or 'config_hash only'}")
    if old.get("xbench_version") != __version__ and not any(d.startswith("xbench_version ") for d in diffs):
        out.append(f"{path} was made by xbench {old.get('xbench_version')}, this is {__version__}")
    out += _data_differences(path, old, req.data_dir)
    return out


def _config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(f"{name} {json.dumps(old.get(key)) if key in old else '(absent)'} vs "
                           f"{json.dumps(new.get(key)) if key in new else '(absent)'}")
            else:
                out += _config_differences(old[key], new[key], name)
        return out
    if old != new:
        return [f"{prefix or 'config'} {json.dumps(old)} vs {json.dumps(new)}"]
    return []


def _data_differences(path: Path, old: dict[str, Any], data_dir: str | None) -> list[str]:
    from xbench.data.sources import data_roots, file_hash

    roots = data_roots(data_dir)
    data = (old.get("task") or {}).get("data") or {}
    out = []
    for split, prov in (data.items() if isinstance(data, dict) else []):
        for rec in (prov.get("files") or []) if isinstance(prov, dict) else []:
            rel, recorded = str(rec.get("path", "")), rec.get("sha256")
            found = Path(rel) if Path(rel).is_absolute() else (roots.find(rel) if roots else None)
            if found is None or not found.is_file():
                out.append(f"{path}: its data file {rel} ({split}) is not in the data roots now")
            elif file_hash(found) != recorded:
                out.append(f"{path}: data file {found} ({split}) changed since the result was made "
                           f"(SHA-256 {str(recorded)[:12]}… vs {file_hash(found)[:12]}…)")
    return out


@contextlib.contextmanager
def _result_lock(out_root: Path, path: Path) -> Iterator[None]:
    """Hold an exclusive lock on one result path for a seed's whole run, or refuse at once.

    Two runs of the same identity would otherwise both train and the later silently replace the
    other's file. The lock file carries the holder's pid for the message.
    """
    import fcntl
    import socket

    lock = out_root / ".work" / "locks" / path.relative_to(out_root).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        f = open(lock, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise XbenchError(f"{path} is being written by another xbench run ({holder}); wait for it to finish, "
                              "or choose another --output-dir") from None
        try:  # the previous holder may have removed the file between our open and flock
            same = os.fstat(f.fileno()).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
        top, folder = out_root / ".work" / "locks", lock.parent
        while folder != top.parent and folder.is_relative_to(top):  # empty lock folders, up to .work/locks
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _workdir(out_root: Path, rr: ResolvedRun, method: str, seed: int) -> Path:
    return (out_root / ".work" / rr.card.name / rr.protocol / rr.profile["name"] / method
            / f"seed-{seed}-{rr.config_hash[:8]}")


def _run_seed(rr: ResolvedRun, method: Any, seed: int, out_root: Path, console: Any) -> dict[str, Any]:
    from xbench.components.source_models import source_text
    from xbench.envinfo import environment
    from xbench.tasktypes.diagnostics import warnings_for

    req, card = rr.request, rr.card
    task_type = card.task_type_impl(req.options)
    from xbench.data.slots import bind_task_slots

    task_slots_read = bind_task_slots(task_type, rr.slots)  # filled task slots (mnli_train, ...) replace their splits
    data_setting = rr.profile["data_setting"]
    plan = data_plan(rr, method.scope)
    train_split, select_split, eval_split, groups = plan.train_split, plan.select_split, plan.eval_split, plan.groups

    scores: dict[str, dict[str, float]] = {}
    predictions: dict[str, list[dict[str, Any]]] = {}
    diagnostics: dict[str, dict[str, Any]] = {}
    data_prov: dict[str, Any] = {}
    # The text an xbench-built source model learnt from is data of the run: in the data hash, and its
    # hash in the model block, so a model built from other text is another model.
    source = source_text(rr.model, req.data_dir) if getattr(method, "uses_model", True) else None
    if source is not None:
        data_prov[f"source-text/{source['model']}"] = {"source": "local", "files": source["files"]}
    compute: dict[str, list[dict[str, Any]]] = {"transfer": [], "finetune": [], "source_pretraining": []}
    uses_source = False
    encoders: dict[str, Any] = {}
    selection: list[dict[str, Any]] = []
    flags: dict[str, Any] = {"transductive": set(), "eval_split": eval_split, "data_setting": data_setting}
    from xbench.data.slots import run_slots

    # The data slots the method reads are data of the run: recorded with their hash, and in the data hash
    # (docs/protocols.md, "Data slots"); a shared-data stand-in flags the rows.
    slot_block, fallback = run_slots(method, rr.slots)
    for name, record in slot_block.items():
        if name not in fallback:
            data_prov[f"slot/{name}"] = record
    if fallback:
        flags["fallback"] = fallback
    # What the method changes in the shared fine-tuning (docs/methods/README.md, "Shaping fine-tuning"):
    # recorded in the result and flagged on the leaderboard, since the row is not fine-tuned like its baseline.
    hooks = method.finetune_hooks(task_type)
    finetune_changes = hooks.changes() if hooks is not None else []
    started = time.time()
    for gi, group in enumerate(groups):
        enc = method.build_encoder(group.encoder_lang)
        if enc.key not in encoders:
            encoders[enc.key] = {"key": enc.key, "lang": group.encoder_lang, "provenance": enc.provenance}
            compute["transfer"].extend({**s, "encoder": enc.key} for s in enc.stages)
            uses_source = uses_source or enc.uses_source_weights
            if enc.uses_source_weights and not compute["source_pretraining"]:
                compute["source_pretraining"] = enc.source_stages
        flags["transductive"].update(enc.flags.get("transductive", []))
        flags.update({k: v for k, v in enc.flags.items() if k != "transductive"})
        _say(console, f"[bold]seed {seed}[/bold] · encoder {enc.key[:24]} · fine-tune on {group.train_lang}/{train_split}"
                      f" · eval {','.join(group.eval_langs)}/{eval_split}")
        tuned = _finetune(rr, task_type, enc, group, train_split, select_split, seed,
                          _workdir(out_root, rr, req.method, seed) / f"group-{gi}", data_prov,
                          hooks=hooks if finetune_changes else None)
        model, tokenizer = tuned.model, tuned.tokenizer
        if tuned.cached:
            _say(console, f"[dim]fine-tuned model reused from the cache ({tuned.record['cache_entry']})[/dim]")
        compute["finetune"].append({**tuned.record, "group": gi})
        if tuned.best is not None:
            selection.append({"group": gi, "train_lang": group.train_lang, **tuned.best})
        for unit in task_type.eval_units(group.eval_langs):
            split = task_type.load(unit, eval_split, req.data_dir, for_eval=True)
            data_prov[f"{unit}/{eval_split}"] = split.provenance.to_dict()
            feats = task_type.featurize(split, tokenizer, train=False)
            preds = task_type.predict(model, split, feats, tokenizer)
            scores[unit] = task_type.score(split, preds)
            predictions[unit] = task_type.prediction_records(split, preds)
            diagnostics[unit] = task_type.diagnostics(split, feats, preds, tokenizer)
    for warning in (w for unit, d in diagnostics.items() for w in warnings_for(unit, d)):
        flags.setdefault("warnings", []).append(warning)
        _say(console, f"[yellow]warning:[/yellow] {warning}")
    metric = card.metric
    langs = task_type.eval_units(list(req.langs))
    missing = [lang for lang in card.languages if lang not in scores]
    from xbench.results.averages import named_averages, unit_sets
    from xbench.results.transductive import for_result

    excludes = sorted(card.raw.get("average_excludes") or [])
    average_units = unit_sets(langs, excludes)
    averages = named_averages({u: scores[u][metric] for u in langs}, average_units)
    from xbench.runner.compute import sum_records

    return {
        "schema_version": SCHEMA_VERSION,
        "xbench_version": __version__,
        "run_id": uuid.uuid4().hex,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "task": {"name": card.name, "version": card.version, "type": card.task_type, "metric": metric,
                 "card_sha256": rr.config["task"]["card_sha256"], "data_hash": data_hash(data_prov), "data": data_prov,
                 **({"slots": {**slot_block, **task_slots_read}} if slot_block or task_slots_read else {})},
        "method": {"name": req.method, "kind": method.kind, "params": method.params,
                   "compared_with": method.compared_with or ("scratch" if method.kind == "transfer" else ""),
                   "finetune_changes": finetune_changes},
        "model": {"name": rr.model, "source_text_hash": source["hash"] if source else None,
                  "encoders": list(encoders.values()),
                  "parameters": compute["finetune"][0]["params"] if compute["finetune"] else {}},
        "run": {"protocol": rr.protocol, "variant": rr.variant, "profile": rr.profile["name"], "seed": seed,
                "train_langs": sorted({g.train_lang for g in groups}), "train_split": train_split,
                "select_split": select_split, "eval_langs": langs, "eval_split": eval_split},
        "scores": {"metric": metric, "metrics": task_type.metrics, "per_language": scores,
                   "average": averages["card"], "averaged_over": average_units["card"], "averages": averages,
                   "average_units": average_units, "average_excludes": excludes,
                   "languages": langs, "missing_languages": missing},
        "scoring": task_type.scoring_info(),
        "selection": selection,
        "compute": {**compute, "transfer_total": sum_records(compute["transfer"]),
                    "finetune_total": sum_records(compute["finetune"]),
                    # "external": a public checkpoint whose cost xbench cannot know; "unused": no source weights.
                    "source_pretraining_total": (sum_records(compute["source_pretraining"]) if compute["source_pretraining"]
                                                 else "external" if uses_source else "unused"),
                    "wall_seconds_total": round(time.time() - started, 3)},
        "flags": {**flags, "transductive": for_result(flags["transductive"], card.name, langs)},
        "config": rr.config,
        "config_hash": rr.config_hash,
        "environment": environment(),
        "diagnostics": diagnostics,
        "_predictions": predictions,
    }


@dataclass
class FineTuned:
    """A fine-tuned model and what its training recorded (from this run or from the cache)."""

    model: Any
    tokenizer: Any
    record: dict[str, Any]
    best: dict[str, Any] | None
    cached: bool = False


def _finetune(rr: ResolvedRun, task_type: Any, enc: Any, group: TrainGroup, train_split: str,
              select_split: str | None, seed: int, workdir: Path, data_prov: dict[str, Any],
              hooks: Any = None) -> FineTuned:
    """Fine-tune `enc` on the group's training data, with model selection where the protocol has it.

    With the profile's `cache_finetuned` (default on) the fine-tuned weights are a cache entry keyed
    by everything that determines them: the encoder, the task type and its featurisation settings,
    the training (and selection) data hashes, the fine-tuning settings and the seed. MLQA, XQuAD and
    TyDiQA all fine-tune on the same English data in the same way, so a method's QA runs share one
    fine-tuning per seed, and an interrupted fine-tuning resumes from the entry's checkpoints.

    `hooks` (xbench.methods.base.FinetuneHooks, or None for the plain fine-tuning every baseline
    gets) is what the method changes: the model built, an extra loss, the training examples; what
    it changed is part of the cache key, and the loss parts are recorded.
    """
    import torch
    from transformers import AutoTokenizer

    from xbench.components.source_models import load_pretrained

    req = rr.request
    proto = rr.card.protocol(rr.protocol)
    tokenizer = load_pretrained(AutoTokenizer, enc.path)
    train = task_type.load(group.train_lang, train_split, req.data_dir, for_eval=False)
    data_prov[f"{group.train_lang}/{train_split}"] = train.provenance.to_dict()
    fit_split = _transformed(train, hooks, seed) if hooks is not None and hooks.train_transform else train
    feats = task_type.featurize(fit_split, tokenizer, train=True)
    sel = sel_feats = None
    if select_split is not None:
        sel_lang = _select_lang(proto.select["lang"], group)
        sel = task_type.load(sel_lang, select_split, req.data_dir, for_eval=True)
        data_prov[f"{sel_lang}/{select_split}"] = sel.provenance.to_dict()
        sel_feats = task_type.featurize(sel, tokenizer, train=False)

    def train_model(out_dir: Path, resume: bool) -> tuple[Any, Any]:
        from xbench.runner.batching import FeaturePlan
        from xbench.runner.trainer import Runner, TrainArgs

        ft = rr.finetune
        evaluate = None
        if sel is not None:
            def evaluate(model: Any) -> dict[str, float]:
                return {k: v for k, v in task_type.score(sel, task_type.predict(model, sel, sel_feats, tokenizer)).items()
                        if k != "n"}

        torch.manual_seed(seed)  # the head's initialisation depends on the seed, nothing else does
        model = _build_model(task_type, enc.path, hooks)
        loss_fn, parts = (task_type.loss, None) if hooks is None else _hooked_loss(task_type.loss, hooks)
        plan = FeaturePlan(feats, seed=seed, batch_size=ft.get("batch_size"), batch_tokens=ft.get("batch_tokens"),
                           pad_values=task_type.pad_values(tokenizer))
        args = TrainArgs(lr=float(ft["lr"]), max_steps=ft.get("max_steps"), epochs=ft.get("epochs"),
                         warmup_ratio=float(ft.get("warmup_ratio", 0.0)),
                         weight_decay=float(ft.get("weight_decay", 0.0)), grad_accum=int(ft.get("grad_accum", 1)),
                         seed=seed, eval_every=ft.get("eval_every"),
                         checkpoint_every=ft.get("checkpoint_every", ft.get("eval_every")), progress=req.progress)
        fit = Runner(args, out_dir, name=f"fine-tune {group.train_lang} seed {seed}").fit(
            model, plan, loss_fn, evaluate=evaluate, select_metric=rr.card.metric if evaluate else None,
            resume=resume)
        if parts is not None:  # mean of each named loss over the micro-batches this process trained on
            fit.record.extra["loss_parts"] = {k: total / n for k, (total, n) in parts.items()}
        return model, fit

    if not rr.profile.get("cache_finetuned", True):
        model, fit = train_model(workdir, req.resume)
        return FineTuned(model, tokenizer, fit.record.to_dict(), fit.best)

    from xbench import cache

    key = {"kind": "finetuned", "code_version": FINETUNE_CODE_VERSION, "encoder": enc.key,
           **task_type.training_fingerprint(with_selection=sel is not None), "train": train.provenance.hash,
           "select": sel.provenance.hash if sel is not None else None, "finetune": rr.finetune, "seed": seed,
           "select_metric": rr.card.metric if sel is not None else None}
    if hooks is not None:  # only then: a plain fine-tuning keeps the key (and the entry) it always had
        key["method_changes"] = hooks.cache_key()

    def build(out: Path, work: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        model, fit = train_model(work / "run", True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
        return {"record": fit.record.to_dict(), "best": fit.best}

    def waiting(entry: Path) -> None:
        print(f"waiting for another xbench process that is fine-tuning cache entry {entry.name} "
              f"(same encoder, data, settings and seed); its model is reused when it finishes", file=sys.stderr, flush=True)

    # Decided by the cache under its lock: an entry another run finished while we waited is reused.
    path, built = cache.get_or_build_status("finetuned", key, build, waiting=waiting)
    cached = not built
    manifest = cache.read_entry(path)["manifest"]
    from safetensors.torch import load_file

    torch.manual_seed(seed)
    model = _build_model(task_type, enc.path, hooks)
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    model.eval()
    return FineTuned(model, tokenizer, {**manifest["record"], "cache_entry": path.name, "reused": cached},
                     manifest["best"], cached)


def _build_model(task_type: Any, encoder_path: str, hooks: Any) -> Any:
    """The model fine-tuning trains: the method's head where it supplies one, else the task type's."""
    if hooks is not None and hooks.head is not None:
        return hooks.head(encoder_path, task_type)
    return task_type.build_model(encoder_path)


def _hooked_loss(task_loss: Any, hooks: Any) -> tuple[Any, dict[str, list[float]]]:
    """The task loss plus the method's extra loss terms, and the running (sum, count) of each named part."""
    parts: dict[str, list[float]] = {}

    def loss(model: Any, batch: dict[str, Any], ctx: Any) -> dict[str, Any]:
        out = dict(task_loss(model, batch, ctx))
        if hooks.extra_loss is not None:
            extra = hooks.extra_loss(model, batch, ctx)
            clash = sorted(set(extra) & set(out))
            if clash:
                raise XbenchError(f"the method's extra fine-tuning loss '{hooks.extra_loss_name}' names its term(s) "
                                  f"{', '.join(clash)} like the task loss; give them other names")
            out.update(extra)
        for name, value in out.items():
            acc = parts.setdefault(name, [0.0, 0])
            acc[0] += float(value.detach())
            acc[1] += 1
        return out

    return loss, parts


def _transformed(train: Any, hooks: Any, seed: int) -> Any:
    """The training split with the method's transform applied; its provenance names the transform, so
    the features of the transformed examples get their own feature-cache entry."""
    import dataclasses

    examples = hooks.train_transform(list(train.examples), seed)
    selection = {**(train.provenance.selection or {}),
                 "method_transform": {"name": hooks.train_transform_name, "seed": seed,
                                      "fingerprint": hooks.fingerprint}}
    return dataclasses.replace(train, examples=list(examples),
                               provenance=dataclasses.replace(train.provenance, selection=selection))


def _say(console: Any, msg: str) -> None:
    if console is not None:
        console.print(msg)
