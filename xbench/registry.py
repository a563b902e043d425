"""Registries of task types, task cards and methods: the built-in ones and the user's own.

Nothing here imports torch or transformers: `xbench list` and `xbench validate` must answer in
well under a second. Implementations are named by "module:attribute" strings and imported only
when a run needs them; methods and task types from other installed packages are Python entry
points (groups `xbench.methods`, `xbench.task_types`), read from package metadata and likewise
imported only when used. Task cards come from the installed package (`xbench._cards`, the
repository's tasks/ folder) and from the user's folders (`--tasks-dir`, XBENCH_TASKS_DIRS).
"""
from __future__ import annotations

import importlib
import importlib.resources
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from xbench.errors import ConfigError, XbenchError

METHOD_GROUP = "xbench.methods"
TASK_TYPE_GROUP = "xbench.task_types"

# A task card names its type; the implementation lives in the package.
TASK_TYPES: dict[str, str] = {
    "sentence-pair-classification": "xbench.tasktypes.classification:SentencePairClassification",
    "extractive-qa": "xbench.tasktypes.extractive_qa:ExtractiveQA",
    "token-labelling": "xbench.tasktypes.token_labelling:TokenLabelling",
    "parsing": "xbench.tasktypes.parsing:DependencyParsing",
}


@dataclass(frozen=True)
class MethodInfo:
    name: str
    kind: str  # "baseline" or "transfer"; "plugin" for an entry point (its class says, once loaded)
    summary: str
    target: str  # "module:Class"
    paper: str = ""
    distribution: str = ""  # "name version" of the installed package a plugin comes from; "" built in


METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in [
        MethodInfo("source", "baseline", "the source model fine-tuned as is (no transfer)",
                   "xbench.methods.source:SourceMethod"),
        MethodInfo("scratch", "baseline",
                   "same architecture and tokenizer, random init, MLM on target text for the same token budget",
                   "xbench.methods.scratch:ScratchMethod"),
        MethodInfo("clp", "transfer",
                   "CLP-Transfer: source weights, target embeddings from overlap + helper similarities, continued LM",
                   "xbench.methods.clp:ClpMethod", paper="arXiv 2301.09626"),
        MethodInfo("scratch-clp", "baseline",
                   "scratch matched to clp: its architecture, target tokenizer, target data and transfer tokens",
                   "xbench.methods.clp:ClpScratchMethod"),
        MethodInfo("meta", "transfer",
                   "meta-pretraining (xbench reconstruction): English MLM, then multilingual MLM with a reset optimizer",
                   "xbench.methods.meta:MetaMethod", paper="arXiv 2109.11129"),
        MethodInfo("meta-single", "baseline",
                   "meta's single-phase baseline: multilingual MLM only, same total steps, batch and sampler",
                   "xbench.methods.meta:MetaSingleMethod"),
    ]
}


# --------------------------------------------------------------------------- plugins


@dataclass(frozen=True)
class Plugin:
    """One entry point of another installed package; only metadata until `load_object` imports it."""

    group: str
    name: str
    target: str  # "module:attr"
    distribution: str  # "name version"


def _distribution_label(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.metadata['Name']} {dist.version}" if dist is not None else "an unnamed distribution"


@lru_cache(maxsize=1)
def _plugins() -> tuple[tuple[Plugin, ...], tuple[str, ...]]:
    """Every xbench entry point of the installed packages, and the problems with them (clashes).

    A name is one thing: a plugin that reuses a built-in name, or two packages that register one
    name, would make `--method x` mean whichever happened to be found first, so both are errors."""
    from importlib.metadata import entry_points

    builtin = {METHOD_GROUP: METHODS, TASK_TYPE_GROUP: TASK_TYPES}
    what = {METHOD_GROUP: "method", TASK_TYPE_GROUP: "task type"}
    found: list[Plugin] = []
    problems: list[str] = []
    for group in (METHOD_GROUP, TASK_TYPE_GROUP):
        seen: dict[str, Plugin] = {}
        for ep in entry_points(group=group):
            plugin = Plugin(group, ep.name, f"{ep.module}:{ep.attr}" if ep.attr else ep.module, _distribution_label(ep))
            if ep.name in builtin[group]:
                problems.append(f"{what[group]} '{ep.name}' of the installed package {plugin.distribution} (entry point "
                                f"{group}: {ep.name} = {ep.value}) has the name of a built-in {what[group]}; "
                                "rename the entry point")
            elif ep.name in seen:
                problems.append(f"{what[group]} '{ep.name}' is registered by two installed packages: "
                                f"{seen[ep.name].distribution} ({seen[ep.name].target}) and {plugin.distribution} "
                                f"({plugin.target}); uninstall one or rename its entry point")
            else:
                seen[ep.name] = plugin
                found.append(plugin)
    return tuple(found), tuple(problems)


def plugin_problems() -> list[str]:
    """Clashes among the installed entry points (for `xbench validate`)."""
    return list(_plugins()[1])


def _checked_plugins(group: str) -> list[Plugin]:
    plugins, problems = _plugins()
    if problems:
        raise ConfigError(list(problems), source="installed xbench plugins")
    return [p for p in plugins if p.group == group]


def all_methods() -> dict[str, MethodInfo]:
    """The built-in methods and those of installed packages (entry point group `xbench.methods`)."""
    out = dict(METHODS)
    for p in _checked_plugins(METHOD_GROUP):
        out[p.name] = MethodInfo(p.name, "plugin", f"from the installed package {p.distribution} ({p.target})",
                                 p.target, distribution=p.distribution)
    return out


def task_types() -> dict[str, str]:
    """Task type name -> "module:Class": the built-in ones and those of installed packages."""
    return {**TASK_TYPES, **{p.name: p.target for p in _checked_plugins(TASK_TYPE_GROUP)}}


def load_object(target: str) -> Any:
    """Import "module:attr" (attr may be dotted); a plugin that cannot be imported is the user's error,
    named with its package, not a traceback."""
    module, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        origin = next((p for p in _plugins()[0] if p.target == target), None)
        if origin is None:
            raise
        raise XbenchError(f"{origin.group} entry point '{origin.name}' of the installed package {origin.distribution}: "
                          f"cannot load {target} ({type(exc).__name__}: {exc})") from None
    origin = next((p for p in _plugins()[0] if p.target == target and p.group == METHOD_GROUP), None)
    if origin is not None and getattr(obj, "name", None) != origin.name:
        # Messages (bad --param) name the class's `name`, result files the entry point's: one name, or
        # a user reads about a method they never asked for.
        raise XbenchError(f"{METHOD_GROUP} entry point '{origin.name}' of the installed package {origin.distribution}: "
                          f"{target} declares name = {getattr(obj, 'name', None)!r}; it must be '{origin.name}'")
    return obj


def get_method(name: str) -> MethodInfo:
    methods = all_methods()
    if name not in methods:
        raise XbenchError(f"unknown method '{name}'; valid methods: {', '.join(sorted(methods))}")
    return methods[name]


# --------------------------------------------------------------------------- task cards


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    description: str
    train: dict[str, Any]
    select: dict[str, Any] | None
    eval: dict[str, Any]


@dataclass(frozen=True)
class TaskCard:
    """A declarative task: what to load, how to split it, how to score it."""

    name: str
    version: int
    task_type: str
    description: str
    metric: str
    languages: tuple[str, ...]
    protocols: dict[str, ProtocolSpec]
    default_protocol: str
    data: dict[str, Any]
    path: Path
    params: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def check_languages(self, langs: list[str]) -> None:
        bad = [lang for lang in langs if lang not in self.languages]
        if bad:
            raise XbenchError(
                f"task '{self.name}' has no language(s) {', '.join(bad)}; valid languages: {', '.join(self.languages)}"
            )

    def protocol(self, name: str | None) -> ProtocolSpec:
        name = name or self.default_protocol
        if name not in self.protocols:
            raise XbenchError(
                f"task '{self.name}' has no protocol '{name}'; valid protocols: {', '.join(self.protocols)}"
            )
        return self.protocols[name]

    def task_type_impl(self, options: dict[str, Any] | None = None) -> Any:
        return load_object(task_types()[self.task_type])(self, options or {})


REQUIRED_CARD_KEYS = {"name": str, "version": int, "task_type": str, "description": str, "metric": str,
                      "languages": list, "protocols": dict, "data": dict}


TASKS_DIRS_ENV = "XBENCH_TASKS_DIRS"
_cli_tasks_dirs: list[Path] = []


def builtin_tasks_dir() -> Path:
    """The shipped cards: the package data `xbench._cards` (the repository's tasks/ folder, see
    pyproject.toml), or the folder XBENCH_TASKS names, which replaces them (for editing copies of the
    built-in cards; to add cards beside them use XBENCH_TASKS_DIRS or --tasks-dir)."""
    if os.environ.get("XBENCH_TASKS"):
        return Path(os.environ["XBENCH_TASKS"])
    try:
        return Path(str(importlib.resources.files("xbench._cards")))
    except ModuleNotFoundError:
        # An editable install made before tasks/ became a data package maps no `xbench._cards`.
        raise XbenchError("the built-in task cards (package xbench._cards) are not installed; reinstall xbench "
                          "(`pip install -e .` in a checkout, or `pip install .`)") from None


def set_cli_tasks_dirs(dirs: list[Path]) -> None:
    """The folders of this command's --tasks-dir options (searched before XBENCH_TASKS_DIRS)."""
    _cli_tasks_dirs[:] = [Path(d) for d in dirs]


def user_tasks_dirs() -> list[tuple[Path, str]]:
    """(folder, where it was named) of every user card folder: --tasks-dir, then XBENCH_TASKS_DIRS."""
    env = os.environ.get(TASKS_DIRS_ENV, "")
    return ([(d, "--tasks-dir") for d in _cli_tasks_dirs]
            + [(Path(d), TASKS_DIRS_ENV) for d in env.split(os.pathsep) if d.strip()])


def tasks_dir() -> Path:
    return builtin_tasks_dir()


def _validate_card(raw: Any, path: Path) -> list[str]:
    problems: list[str] = []
    if not isinstance(raw, dict):
        return [f"expected a mapping at the top level, got {type(raw).__name__}"]
    for key, typ in REQUIRED_CARD_KEYS.items():
        if key not in raw:
            problems.append(f"missing required key '{key}'")
        elif not isinstance(raw[key], typ):
            problems.append(f"key '{key}' must be a {typ.__name__}, got {type(raw[key]).__name__}")
    if isinstance(raw.get("task_type"), str):
        known = {**TASK_TYPES, **{p.name: p.target for p in _plugins()[0] if p.group == TASK_TYPE_GROUP}}
        if raw["task_type"] not in known:
            problems.append(f"task_type '{raw['task_type']}' is unknown; valid: {', '.join(known)} "
                            f"(or a task type of an installed package, entry point group {TASK_TYPE_GROUP})")
    if isinstance(raw.get("name"), str) and raw["name"] != path.stem:
        problems.append(f"name '{raw['name']}' must match the file name '{path.stem}'")
    langs = raw.get("languages")
    if isinstance(langs, list):
        if not langs:
            problems.append("'languages' is empty")
        dup = sorted({x for x in langs if langs.count(x) > 1})
        if dup:
            problems.append(f"duplicate languages: {', '.join(map(str, dup))}")
    protocols = raw.get("protocols")
    if isinstance(protocols, dict):
        if not protocols:
            problems.append("'protocols' is empty")
        for pname, p in protocols.items():
            if not isinstance(p, dict):
                problems.append(f"protocols.{pname}: expected a mapping")
                continue
            for key in ("description", "train", "eval"):
                if key not in p:
                    problems.append(f"protocols.{pname}: missing '{key}'")
            lang = (p.get("train") or {}).get("lang")
            if isinstance(langs, list) and lang not in (None, "{target}") and lang not in langs:
                problems.append(f"protocols.{pname}.train.lang '{lang}' is not one of the card's languages")
        default = raw.get("default_protocol")
        if default is not None and default not in protocols:
            problems.append(f"default_protocol '{default}' is not a protocol of this card")
    return problems


def parse_card(path: Path) -> TaskCard:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=str(path)) from None
    problems = _validate_card(raw, path)
    if problems:
        raise ConfigError(problems, source=str(path))
    protocols = {
        name: ProtocolSpec(name, p["description"], p["train"], p.get("select"), p["eval"])
        for name, p in raw["protocols"].items()
    }
    return TaskCard(
        name=raw["name"], version=raw["version"], task_type=raw["task_type"], description=raw["description"],
        metric=raw["metric"], languages=tuple(raw["languages"]), protocols=protocols,
        default_protocol=raw.get("default_protocol", next(iter(protocols))), data=raw["data"], path=path,
        params=raw.get("params", {}), raw=raw,
    )


def validate_all_cards() -> tuple[dict[str, TaskCard], list[str]]:
    """Parse every card, collecting every problem in every card instead of stopping at the first."""
    return _read_cards(builtin_tasks_dir(), tuple(user_tasks_dirs()))


def _read_cards(builtin: Path, user: tuple[tuple[Path, str], ...]) -> tuple[dict[str, TaskCard], list[str]]:
    cards: dict[str, TaskCard] = {}
    problems: list[str] = []
    if not builtin.is_dir():
        problems.append(f"task directory {builtin} does not exist (XBENCH_TASKS names it; unset it to use the "
                        "built-in cards)" if os.environ.get("XBENCH_TASKS") else
                        f"the built-in task cards are missing ({builtin}); reinstall xbench")
    folders: list[Path] = [builtin] if builtin.is_dir() else []
    for folder, given_by in user:
        if not folder.is_dir():
            problems.append(f"{given_by} {folder}: no such folder")
        elif folder.resolve() not in {f.resolve() for f in folders}:  # one folder named twice is one folder
            if not any(folder.glob("*.yaml")):
                others = sorted(p.name for p in folder.glob("*.yml"))
                problems.append(f"{given_by} {folder}: holds no task card (*.yaml)"
                                + (f"; rename {', '.join(others)} to .yaml" if others else ""))
            folders.append(folder)
    origin: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.yaml")):
            if path.stem in origin:
                # Which card a name means must not depend on the order of folders.
                kind = "a built-in card" if origin[path.stem].parent == builtin else "another user card"
                problems.append(f"task '{path.stem}' is defined twice: {path} and {origin[path.stem]} ({kind}); "
                                "rename one (the file and its `name:`)")
                continue
            origin[path.stem] = path
            try:
                cards[path.stem] = parse_card(path)
            except ConfigError as exc:
                problems.extend(f"{path}: {p}" for p in exc.problems)
    return cards, problems


def all_cards() -> dict[str, TaskCard]:
    return dict(_cards_once(builtin_tasks_dir(), tuple(user_tasks_dirs())))


@lru_cache(maxsize=4)
def _cards_once(builtin: Path, user: tuple[tuple[Path, str], ...]) -> dict[str, TaskCard]:
    """The cards of these folders, read once per process (a run looks its card up several times)."""
    cards, problems = _read_cards(builtin, user)
    if problems:
        raise ConfigError(problems, source="task cards")
    return cards


def get_task(name: str) -> TaskCard:
    cards = all_cards()
    if name not in cards:
        raise XbenchError(f"unknown task '{name}'; valid tasks: {', '.join(sorted(cards))}")
    return cards[name]
