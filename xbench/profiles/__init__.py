"""Run profiles: named bundles of defaults (model, seeds, fine-tuning and pretraining budgets)."""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from xbench.errors import ConfigError, XbenchError

PROFILE_DIR = Path(__file__).parent
REQUIRED = {"name": str, "description": str, "data_setting": str, "model": str, "seeds": list,
            "finetune": dict, "pretrain": dict}


class _Loader(yaml.SafeLoader):
    """PyYAML's YAML 1.1 resolver reads `1e-3` (no dot) as a string; YAML 1.2 and every user read a number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """Safe YAML with `1e-3` read as a float: for profiles and `--set` values alike."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


Range = tuple[str, Callable[[Any], bool]]
_POSITIVE: Range = ("> 0", lambda v: v > 0)
_AT_LEAST_1: Range = (">= 1", lambda v: v >= 1)
_NON_NEGATIVE: Range = (">= 0", lambda v: v >= 0)
_FRACTION: Range = ("in [0, 1)", lambda v: 0 <= v < 1)

# Every setting the code reads from a profile block, with its type and range. A key outside this
# table is a typo (`finetune.lrr=5` would otherwise be carried along and silently ignored).
SETTINGS: dict[str, dict[str, tuple[type, Range | None]]] = {
    "finetune": {
        "lr": (float, _POSITIVE), "batch_size": (int, _AT_LEAST_1), "batch_tokens": (int, _AT_LEAST_1),
        "max_steps": (int, _AT_LEAST_1), "epochs": (float, _POSITIVE), "warmup_ratio": (float, _FRACTION),
        "weight_decay": (float, _NON_NEGATIVE), "grad_accum": (int, _AT_LEAST_1), "eval_every": (int, _AT_LEAST_1),
        "checkpoint_every": (int, _AT_LEAST_1), "max_length": (int, _AT_LEAST_1), "arc_mlp": (int, _AT_LEAST_1),
        "label_mlp": (int, _AT_LEAST_1), "dropout": (float, _FRACTION), "pooling": (str, None), "decode": (str, None),
    },
    "pretrain": {
        "lr": (float, _POSITIVE), "batch_size": (int, _AT_LEAST_1), "seq_len": (int, _AT_LEAST_1),
        "max_steps": (int, _AT_LEAST_1), "max_tokens": (int, _AT_LEAST_1), "warmup_steps": (int, _NON_NEGATIVE),
        "weight_decay": (float, _NON_NEGATIVE),
    },
}
# Top-level settings `--set` may change; `name` is not one of them: it is a path component of every result.
TOP_LEVEL: dict[str, tuple[type, Range | None]] = {
    "description": (str, None), "data_setting": (str, None), "model": (str, None), "seeds": (list, None),
    "cache_finetuned": (bool, None),
    # The methods the profile has budgets for; absent: every method. A profile whose transfer budgets are
    # not set yet refuses the other methods rather than run them with another scale's settings.
    "methods": (list, None),
    # {method: {parameter: value}}: the profile's values of method parameters, under any --param; the names
    # and values are checked against each method's declared parameters when a run resolves
    # (xbench.run.request.method_params_problems) and by `xbench validate`.
    "method_params": (dict, None),
    # {method: model}: the source model a method starts from under this profile when --model is not given
    # (PPA aligns a multilingual model, so its smoke runs use tiny-multi-bert, not the profile's English one).
    "method_models": (dict, None),
}
_TYPE_NAMES = {float: "a number", int: "an integer", str: "a string", bool: "true or false", list: "a list",
               dict: "a mapping"}


def available() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def check_value(where: str, value: Any, spec: tuple[type, Range | None]) -> tuple[Any, str | None]:
    """`value` converted to the setting's type (an int where a float is expected), or a problem naming `where`."""
    kind, bounds = spec
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        return value, f"{where}: expected {_TYPE_NAMES[kind]}, got {value!r}"
    if bounds is not None and not bounds[1](value):
        return value, f"{where}: must be {bounds[0]}, got {value!r}"
    return value, None


def check_seeds(seeds: Any, where: str) -> list[str]:
    if not isinstance(seeds, list) or not seeds:
        return [f"{where}: expected a non-empty list of seeds, got {seeds!r}"]
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    problems = [f"{where}: seeds are non-negative integers, got {', '.join(map(repr, bad))}"] if bad else []
    if len(set(map(repr, seeds))) != len(seeds):
        problems.append(f"{where}: duplicate seeds in {seeds}")
    return problems


def validate_profile(raw: Any, name: str) -> list[str]:
    if not isinstance(raw, dict):
        return [f"profile {name}: expected a mapping"]
    problems = [f"profile {name}: missing '{k}'" for k in REQUIRED if k not in raw]
    problems += [f"profile {name}: '{k}' must be a {t.__name__}" for k, t in REQUIRED.items()
                 if k in raw and not isinstance(raw[k], t)]
    if isinstance(raw.get("name"), str) and raw["name"] != name:
        # The name becomes a folder of every result path; the file name is what was validated as one.
        problems.append(f"profile {name}: 'name' is '{raw['name']}', it must equal the file name '{name}'")
    if raw.get("data_setting") not in (None, "shared", "standard"):
        problems.append(f"profile {name}: data_setting must be 'shared' or 'standard'")
    if isinstance(raw.get("seeds"), list):
        problems += check_seeds(raw["seeds"], f"profile {name}: seeds")
    for key, spec in TOP_LEVEL.items():
        if key in raw and key not in REQUIRED:
            problems += [p for p in [check_value(f"profile {name}: {key}", raw[key], spec)[1]] if p]
    models = raw.get("method_models")
    for method, model in (models.items() if isinstance(models, dict) else []):
        if not isinstance(model, str) or not model:
            problems.append(f"profile {name}: method_models.{method}: expected a model name or path, got {model!r}")
    for section in ("finetune", "pretrain"):
        blocks = raw.get(section)
        for key, block in (blocks.items() if isinstance(blocks, dict) else []):
            problems += block_problems(f"profile {name}: {section}.{key}", section, block)
    return problems


def block_problems(where: str, section: str, block: Any) -> list[str]:
    """Problems of one settings block (a profile's `finetune.<task type>`, or a task type's defaults)."""
    if not isinstance(block, dict) or "lr" not in block:
        return [f"{where} needs at least 'lr'"]
    problems = []
    if not any(k in block for k in ("max_steps", "epochs", "max_tokens")):
        problems.append(f"{where} needs max_steps, epochs or max_tokens")
    for setting, value in block.items():
        if setting == "protocols" and section == "finetune":
            problems += _protocol_problems(f"{where}.protocols", value)
            continue
        spec = SETTINGS[section].get(setting)
        if spec is None:
            problems.append(f"{where}.{setting}: unknown setting; valid keys: " + ", ".join(SETTINGS[section]))
        else:
            problems += [p for p in [check_value(f"{where}.{setting}", value, spec)[1]] if p]
    return problems


def _protocol_problems(where: str, protocols: Any) -> list[str]:
    """`protocols: {<protocol>: {setting: value}}`: settings one protocol changes in its task type's block.

    A protocol can need another budget than the rest of its task type (XNLI in-language trains on
    German text the English tokenizer splits finely); its entry holds only what differs.
    """
    if not isinstance(protocols, dict):
        return [f"{where}: expected a mapping of protocol name to settings, got {protocols!r}"]
    problems = []
    for name, settings in protocols.items():
        if not isinstance(settings, dict) or not settings:
            problems.append(f"{where}.{name}: expected a mapping of settings, got {settings!r}")
            continue
        for setting, value in settings.items():
            spec = SETTINGS["finetune"].get(setting)
            if spec is None:
                problems.append(f"{where}.{name}.{setting}: unknown setting; valid keys: "
                                + ", ".join(SETTINGS["finetune"]))
            else:
                problems += [p for p in [check_value(f"{where}.{name}.{setting}", value, spec)[1]] if p]
    return problems


def for_protocol(block: dict[str, Any], protocol: str) -> dict[str, Any]:
    """A finetune block as one protocol runs it: its `protocols` entry for `protocol` applied, the table dropped."""
    out = {k: v for k, v in block.items() if k != "protocols"}
    out.update((block.get("protocols") or {}).get(protocol, {}))
    return out


def profile_problems(name: str) -> list[str]:
    """Everything wrong with the shipped profile `name` (for `xbench validate`)."""
    path = PROFILE_DIR / f"{name}.yaml"
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        return [f"{path}: not valid YAML ({exc})"]
    return validate_profile(raw, name)


def load_profile(name: str) -> dict[str, Any]:
    # Only shipped profiles by name: a path here (`some/dir/evil`) would read a YAML from anywhere,
    # and its `name` would become a folder of the result path.
    if name not in available():
        raise XbenchError(f"unknown profile '{name}'; valid profiles: {', '.join(available())}")
    path = PROFILE_DIR / f"{name}.yaml"
    problems = profile_problems(name)
    if problems:
        raise ConfigError(problems, source=str(path))
    return load_yaml(path.read_text(encoding="utf-8"))
