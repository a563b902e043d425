"""A run request resolved and checked: task, method, profile, languages, settings and data plan.

`resolve` checks every name and setting of `xbench run` and reports every problem at once, before
any work; `data_plan` says which (language, split) the run trains, selects and evaluates on, so
the pre-flight (run/preflight.py) reads exactly the files the run will read.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xbench import __version__
from xbench.atomic import hash_json
from xbench.cards import TaskCard, get_task
from xbench.errors import ConfigError, XbenchError
from xbench.profiles import SETTINGS, TOP_LEVEL, check_seeds, check_value, load_profile, load_yaml
from xbench.registry import get_method
from xbench.results.schema import model_slug, path_component_problem, protocol_dir

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
    # The method's parameters as given to it: the profile's `method_params` for it, then --param on top.
    params: dict[str, Any] = field(default_factory=dict)


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
    if profile is not None:
        problems += method_params_problems(profile)
    if profile is not None and card is not None and card.task_type not in profile["finetune"]:
        profile, default_problems = _task_type_defaults(profile, card)
        problems += default_problems
    if profile is not None and card is not None and card.task_type in profile["finetune"]:
        # The protocol's own settings first, so that --set still has the last word.
        profile = _for_protocol(profile, card, req.protocol or card.default_protocol)
    if profile is not None:
        profile, override_problems = apply_overrides(profile, req.overrides, card.task_type if card else None)
        problems += override_problems
    # After the overrides: `--set methods=[...]` narrows (or widens) the list like any other setting.
    if profile is not None and profile.get("methods") is not None and req.method not in profile["methods"]:
        problems.append(f"profile '{profile['name']}' has budgets for the method(s) {', '.join(profile['methods'])} "
                        f"only; '{req.method}' would run with settings sized for another scale (use --profile smoke, "
                        "or see the profile's file for what is measured)")
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
    model = run_model(req, profile)
    params = {**(profile.get("method_params") or {}).get(req.method, {}), **req.params}
    config = {
        "xbench_version": __version__, "finetune_code_version": FINETUNE_CODE_VERSION,
        "task": {"name": card.name, "version": card.version, "card_sha256": hash_json(card.raw)},
        "method": {"name": req.method, "params": dict(sorted(params.items()))},
        "task_options": dict(sorted(req.options.items())),
        "protocol": protocol, "profile": profile, "model": model, "finetune": finetune,
        "overrides": dict(sorted(req.overrides.items())),
    }
    # Slots read under the standard data setting only (the paper profile); the smoke profile's config and
    # identity stay as they were when no slot option is given.
    slots = SlotSet(slot_specs, active=profile["data_setting"] == "standard", allow_fallback=req.allow_fallback)
    config.update(slots.config())
    return ResolvedRun(req, card, protocol, profile, model, list(seeds), finetune, config, hash_json(config),
                       variant=options_variant(req.options), slots=slots, params=params)


def method_params_problems(profile: dict[str, Any]) -> list[str]:
    """Problems of a profile's `method_params`: unknown methods, unknown parameters, values of the wrong
    type or out of range, each named by its place in the profile's file."""
    from xbench.methods.base import parse_param
    from xbench.registry import all_methods, load_object

    where = f"profile {profile['name']}: method_params"
    blocks = profile.get("method_params") or {}
    methods = all_methods()
    problems: list[str] = [f"profile {profile['name']}: method_models.{name}: unknown method; valid methods: "
                           f"{', '.join(sorted(methods))}" for name in (profile.get("method_models") or {})
                           if name not in methods]
    for name, block in blocks.items():
        if name not in methods:
            problems.append(f"{where}.{name}: unknown method; valid methods: {', '.join(sorted(methods))}")
            continue
        if not isinstance(block, dict):
            problems.append(f"{where}.{name}: expected a mapping of parameter: value, got {block!r}")
            continue
        if profile.get("methods") is not None and name not in profile["methods"]:
            problems.append(f"{where}.{name}: the profile's `methods` does not list '{name}', so these are never used")
        try:
            cls = load_object(methods[name].target)
        except XbenchError as exc:
            problems.append(f"{where}.{name}: {exc}")
            continue
        for key, value in block.items():
            spec = cls.parameters.get(key)
            if key not in cls.defaults:
                problems.append(f"{where}.{name}.{key}: method '{name}' has no such parameter; valid: "
                                + (", ".join(sorted(cls.defaults)) or "none"))
                continue
            try:
                parsed = spec.parse(value) if spec is not None else parse_param(value, cls.defaults[key])
            except ValueError as exc:
                problems.append(f"{where}.{name}.{key}: {exc}")
                continue
            problem = spec.problem(key, parsed) if spec is not None else None
            if problem:
                problems.append(f"{where}.{name}.{problem}")
    return problems


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


def _for_protocol(profile: dict[str, Any], card: TaskCard, protocol: str) -> dict[str, Any]:
    """The profile with this task type's block as `protocol` runs it (profiles.for_protocol).

    The resolved block is what the run's config records, so a protocol's override is part of its
    identity while the other protocols' configs stay as they were before the table existed.
    """
    from xbench.profiles import for_protocol

    block = profile["finetune"][card.task_type]
    return {**profile, "finetune": {**profile["finetune"], card.task_type: for_protocol(block, protocol)}}


def protocol_override_problems(profile: dict[str, Any], cards: dict[str, TaskCard]) -> list[str]:
    """A profile's `finetune.<type>.protocols` entries that name no protocol of any card of that type.

    Such an entry never applies (a typo such as `in-langauge` would silently leave the budget as it
    was), so `xbench validate` reports it.
    """
    problems = []
    for task_type, block in profile["finetune"].items():
        known = {p for c in cards.values() if c.task_type == task_type for p in c.protocols}
        for name in (block.get("protocols") or {}):
            if name not in known:
                problems.append(f"profile {profile['name']}: finetune.{task_type}.protocols.{name}: no card of task "
                                f"type '{task_type}' has this protocol; known: {', '.join(sorted(known)) or 'none'}")
    return problems


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


def run_model(req: RunRequest, profile: dict[str, Any]) -> str:
    """The source model of a run: --model, else the profile's model for this method (`method_models`), else
    the profile's model."""
    return req.model or (profile.get("method_models") or {}).get(req.method) or profile["model"]


def _path_problems(req: RunRequest, card: TaskCard | None, profile: dict[str, Any] | None) -> list[str]:
    """Every name that becomes a folder of the result path, checked by the one rule result_path applies."""
    parts: list[tuple[str, Any]] = [("method", req.method)]
    if card is not None:
        parts += [("task", card.name),
                  ("protocol", protocol_dir(req.protocol or card.default_protocol, options_variant(req.options)))]
    if profile is not None:
        parts += [("profile", profile["name"]), ("model", model_slug(run_model(req, profile)))]
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


def split_name(spec: dict[str, Any], data_setting: str) -> str:
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
        return select_lang(self.select_lang_spec, group)

    def reads(self, task_type: Any) -> list[tuple[str, str, bool]]:
        """(language or unit, split, for_eval) of every load the run makes, in the run's order."""
        out: list[tuple[str, str, bool]] = []
        for group in self.groups:
            out.append((group.train_lang, self.train_split, False))
            if self.select_split is not None:
                out.append((self.select_lang(group), self.select_split, True))
            out.extend((unit, self.eval_split, True) for unit in task_type.eval_units(group.eval_langs))
        return list(dict.fromkeys(out))


def select_lang(spec: str, group: TrainGroup) -> str:
    return spec.replace("{target}", group.train_lang)


def data_plan(rr: ResolvedRun, method_scope: str) -> DataPlan:
    proto = rr.card.protocol(rr.protocol)
    data_setting = rr.profile["data_setting"]
    return DataPlan(train_split=split_name(proto.train, data_setting),
                    select_split=split_name(proto.select, data_setting) if proto.select else None,
                    eval_split=split_name(proto.eval, data_setting),
                    select_lang_spec=proto.select["lang"] if proto.select else None,
                    groups=plan_groups(method_scope, proto.train["lang"], rr.request.langs))
