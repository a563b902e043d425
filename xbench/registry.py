"""Registries of methods and task types: the built-in ones and those of other installed packages.

Nothing here imports torch or transformers: `xbench list` and `xbench validate` must answer in
well under a second. Implementations are named by "module:attribute" strings and imported only
when a run needs them; methods and task types from other installed packages are Python entry
points (groups `xbench.methods`, `xbench.task_types`), read from package metadata and likewise
imported only when used. The task cards and their schema are xbench/cards.py.
"""
from __future__ import annotations

import importlib
import importlib.resources
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

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
        MethodInfo("trelm", "transfer",
                   "TreLM: joint vocabulary mapped into BERT's space, a TRILayer, CdLM on aligned pairs, target MLM",
                   "xbench.methods.trelm:TrelmMethod", paper="arXiv 2107.12627"),
        MethodInfo("scratch-trelm", "baseline",
                   "scratch matched to trelm: its L+1-layer architecture, joint tokenizer, target data and E+F+H tokens",
                   "xbench.methods.trelm:TrelmScratchMethod"),
        MethodInfo("ppa", "transfer",
                   "PPA: a multilingual BERT aligned on en-xx pairs by a MoCo [CLS] loss with input shuffling plus TLM",
                   "xbench.methods.ppa:PpaMethod", paper="arXiv 2010.12547"),
        MethodInfo("mlm-control", "baseline",
                   "ppa's control: the same source model, pairs and tokens, plain MLM on both sides as separate lines",
                   "xbench.methods.ppa:MlmControlMethod"),
        MethodInfo("scratch-ppa", "baseline",
                   "scratch matched to ppa: the source's architecture and tokenizer, random init, MLM on the pairs, same tokens",
                   "xbench.methods.ppa:PpaScratchMethod"),
        MethodInfo("clism", "transfer",
                   "CLISM+CACR: [QUE] span masking on aligned en-xx pairs, contrastive consistency and MLM; QA through the [QUE] head",
                   "xbench.methods.clism:ClismMethod", paper="arXiv 2204.05210"),
        MethodInfo("clism-mlm-control", "baseline",
                   "clism's control: the same source model, pairs and tokens, plain MLM on both sides as separate lines",
                   "xbench.methods.clism:ClismMlmControlMethod"),
        MethodInfo("clism-span-head", "baseline",
                   "ablation: the clism encoder fine-tuned with the standard start/end span head instead of [QUE]",
                   "xbench.methods.clism:ClismSpanHeadMethod"),
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


def known_task_types() -> dict[str, str]:
    """Every task type name a card may use, without raising on plugin clashes (`xbench validate` reports
    those once, through `plugin_problems`)."""
    return {**TASK_TYPES, **{p.name: p.target for p in _plugins()[0] if p.group == TASK_TYPE_GROUP}}


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
