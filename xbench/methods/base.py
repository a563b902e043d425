"""The method interface: a recipe of stages that produces an encoder for a target language.

Fine-tuning and evaluation are shared (xbench.pipeline), so every method is compared under the
same protocol. A method only decides how its encoder is built, and returns the compute of every
stage it ran, so the leaderboard can show score beside cost.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xbench.errors import ConfigError


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def parse_param(value: Any, default: Any) -> Any:
    """`value` (a --param string, or already typed) as the type of the parameter's `default`.

    bool, int and float are parsed strictly: "false" is False (``bool("false")`` is True), "abc" for
    an integer is an error naming the expected type, and "1e6" is a whole number. A parameter whose
    default is None takes the value as given.
    """
    if default is None:
        return value
    text = value.strip() if isinstance(value, str) else None
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ValueError(f"expected a boolean (true or false), got {value!r}")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if text is not None and text.lstrip("+-").replace("_", "").isdigit():
            return int(text)
        number = _number(value, text)
        if number is None or not number.is_integer():
            raise ValueError(f"expected an integer, got {value!r}")
        return int(number)
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        number = _number(value, text)
        if number is None:
            raise ValueError(f"expected a number, got {value!r}")
        return number
    if isinstance(default, str):
        if isinstance(value, (dict, list)):
            raise ValueError(f"expected text, got {value!r}")
        return str(value)
    return value


def _number(value: Any, text: str | None) -> float | None:
    """A finite number from an int, a float or its text ("300", "5e-4", "1_000"); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif text:
        try:
            number = float(text)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


@dataclass
class RunContext:
    """What a method may know about the run; nothing task-specific."""

    profile: dict[str, Any]
    model: str
    data_dir: str | Path | None
    params: dict[str, Any]
    resume: bool = False
    langs: list[str] = field(default_factory=list)  # the run's target languages (a shared encoder may need them)
    # The run's data slots (xbench.data.slots.SlotSet; docs/protocols.md, "Data slots"); None: no slots.
    slots: Any = None


@dataclass
class Encoder:
    """A model directory ready for fine-tuning, with what it cost to make."""

    key: str
    path: str
    stages: list[dict[str, Any]] = field(default_factory=list)        # the method's own (transfer) stages
    source_stages: list[dict[str, Any]] = field(default_factory=list)  # the source model's pretraining, if known
    provenance: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)
    uses_source_weights: bool = True  # False for scratch: the source's pretraining cost is not part of it


class Method:
    name: str = ""
    kind: str = "transfer"      # or "baseline"
    scope: str = "shared"       # "shared": one encoder for every language; "per-language": one each
    # The baseline whose row this method's gain is measured against: the matched scratch run
    # (docs/methods/baselines.md).
    compared_with: str = ""
    defaults: dict[str, Any] = {}
    # Whether the encoder is built from the run's --model (its architecture, tokenizer or weights):
    # the pre-flight checks a local model folder only for methods that will read it.
    uses_model: bool = True

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.params = self.resolve_params(ctx.params)

    def resolve_params(self, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults, overridden by --param key=value, then :meth:`check`ed; every problem (unknown keys,
        values of the wrong type, values out of range) is reported together in one ConfigError."""
        problems: list[str] = []
        unknown = sorted(set(given) - set(self.defaults))
        valid = ", ".join(sorted(self.defaults)) or "none"
        problems += [f"method '{self.name}' has no parameter '{k}' (valid: {valid})" for k in unknown]
        params = dict(self.defaults)
        for key, value in given.items():
            if key in unknown:
                continue
            try:
                params[key] = parse_param(value, self.defaults[key])
            except ValueError as exc:
                # The default stays, so that check() can still look at the other parameters.
                problems.append(f"--param {key}={value}: {exc}")
        problems += self.check(params)
        if problems:
            raise ConfigError(problems, source=f"method {self.name}")
        return params

    def check(self, params: dict[str, Any]) -> list[str]:
        """Problems with well-typed parameter values (ranges, combinations); none by default."""
        return []

    def pretraining_languages(self) -> list[str]:
        """Languages whose text pool the build reads; the pre-flight checks each has text in the data
        roots, so a missing pool is reported before a source model or a helper is trained."""
        return []

    def smoke_only_problems(self, slots: str) -> list[str]:
        """A method that implements only the smoke profile says so, naming the data slots it lacks."""
        if self.ctx.profile.get("name") == "smoke":
            return []
        return [f"method '{self.name}' implements the smoke profile only; the paper profile needs the data "
                f"slot(s) {slots} (docs/protocols.md, 'Data slots'), which xbench does not read yet"]

    @staticmethod
    def minimum_problems(params: dict[str, Any], minimums: dict[str, int]) -> list[str]:
        return [f"{key} must be at least {low}, got {params[key]}" for key, low in minimums.items() if params[key] < low]

    def build_encoder(self, lang: str | None) -> Encoder:
        raise NotImplementedError

    def extra_report(self, result: dict[str, Any]) -> dict[str, Any] | None:
        """Method-specific quantities derived from a finished result (stored under `report`)."""
        return None
