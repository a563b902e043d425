"""Task cards: their schema, and where they are found.

A card is a YAML file (tasks/*.yaml in the repository, shipped in the wheel as `xbench._cards`)
naming a task type, its languages, protocols, data sources and metric. Cards come from the
installed package and from the user's folders (`--tasks-dir`, XBENCH_TASKS_DIRS); a name given
twice is an error naming both files. Every card is checked as a whole, so one `xbench validate`
lists every problem of every card. Nothing here imports torch or transformers.
"""
from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from xbench.errors import ConfigError, XbenchError
from xbench.registry import TASK_TYPE_GROUP, known_task_types, load_object, task_types


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    description: str
    train: dict[str, Any]
    select: dict[str, Any] | None
    eval: dict[str, Any]
    # Sentence-level code-switching of the training data (docs/protocols.md, "Code-switched training"):
    # {"originals": {"lang": ..., "split": ...}, "p_switch": p}; None: train on the data as loaded.
    code_switch: dict[str, Any] | None = None


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
        known = known_task_types()
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
            if "code_switch" in p:
                problems += _code_switch_problems(f"protocols.{pname}.code_switch", p["code_switch"], langs)
        default = raw.get("default_protocol")
        if default is not None and default not in protocols:
            problems.append(f"default_protocol '{default}' is not a protocol of this card")
    return problems


def _code_switch_problems(where: str, cs: Any, langs: Any) -> list[str]:
    if not isinstance(cs, dict):
        return [f"{where}: expected a mapping with 'originals' ({{lang, split}}) and 'p_switch', got {cs!r}"]
    problems = [f"{where}: unknown key '{k}' (valid: originals, p_switch)" for k in cs if k not in ("originals", "p_switch")]
    originals = cs.get("originals")
    if not isinstance(originals, dict) or not isinstance(originals.get("lang"), str) \
            or not isinstance(originals.get("split"), str):
        problems.append(f"{where}.originals: expected {{lang: <language>, split: <split>}} naming the line-aligned "
                        f"English originals of the training split, got {originals!r}")
    elif isinstance(langs, list) and originals["lang"] not in langs:
        problems.append(f"{where}.originals.lang '{originals['lang']}' is not one of the card's languages")
    p = cs.get("p_switch")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        problems.append(f"{where}.p_switch: expected a probability in [0, 1], got {p!r}")
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
        name: ProtocolSpec(name, p["description"], p["train"], p.get("select"), p["eval"], p.get("code_switch"))
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
