"""Registries of task types, task cards and methods.

Nothing here imports torch or transformers: `xbench list` and `xbench validate` must answer in
well under a second. Implementations are named by "module:attribute" strings and imported only
when a run needs them.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from xbench.errors import ConfigError, XbenchError

REPO_ROOT = Path(__file__).resolve().parent.parent

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
    kind: str  # "baseline" or "transfer"
    summary: str
    target: str  # "module:Class"
    paper: str = ""


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


def load_object(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_method(name: str) -> MethodInfo:
    if name not in METHODS:
        raise XbenchError(f"unknown method '{name}'; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


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
        return load_object(TASK_TYPES[self.task_type])(self, options or {})


REQUIRED_CARD_KEYS = {"name": str, "version": int, "task_type": str, "description": str, "metric": str,
                      "languages": list, "protocols": dict, "data": dict}


def tasks_dir() -> Path:
    return Path(os.environ.get("XBENCH_TASKS", REPO_ROOT / "tasks"))


def _validate_card(raw: Any, path: Path) -> list[str]:
    problems: list[str] = []
    if not isinstance(raw, dict):
        return [f"expected a mapping at the top level, got {type(raw).__name__}"]
    for key, typ in REQUIRED_CARD_KEYS.items():
        if key not in raw:
            problems.append(f"missing required key '{key}'")
        elif not isinstance(raw[key], typ):
            problems.append(f"key '{key}' must be a {typ.__name__}, got {type(raw[key]).__name__}")
    if isinstance(raw.get("task_type"), str) and raw["task_type"] not in TASK_TYPES:
        problems.append(f"task_type '{raw['task_type']}' is unknown; valid: {', '.join(TASK_TYPES)}")
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
    cards: dict[str, TaskCard] = {}
    problems: list[str] = []
    directory = tasks_dir()
    if not directory.is_dir():
        return cards, [f"task directory {directory} does not exist (set XBENCH_TASKS)"]
    for path in sorted(directory.glob("*.yaml")):
        try:
            cards[path.stem] = parse_card(path)
        except ConfigError as exc:
            problems.extend(f"{path}: {p}" for p in exc.problems)
    return cards, problems


@lru_cache(maxsize=1)
def all_cards() -> dict[str, TaskCard]:
    cards, problems = validate_all_cards()
    if problems:
        raise ConfigError(problems, source="task cards")
    return cards


def get_task(name: str) -> TaskCard:
    cards = all_cards()
    if name not in cards:
        raise XbenchError(f"unknown task '{name}'; valid tasks: {', '.join(sorted(cards))}")
    return cards[name]
