"""The method interface: a recipe of stages that produces an encoder for a target language.

Fine-tuning and evaluation are shared (xbench.pipeline), so every method is compared under the
same protocol. A method only decides how its encoder is built, and returns the compute of every
stage it ran, so the leaderboard can show score beside cost.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xbench.errors import ConfigError


@dataclass
class RunContext:
    """What a method may know about the run; nothing task-specific."""

    profile: dict[str, Any]
    model: str
    data_dir: str | Path | None
    params: dict[str, Any]
    resume: bool = False
    langs: list[str] = field(default_factory=list)  # the run's target languages (a shared encoder may need them)


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
    # The baseline whose row this method's gain is measured against: the matched scratch run (§10.1).
    compared_with: str = ""
    defaults: dict[str, Any] = {}

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.params = self.resolve_params(ctx.params)

    def resolve_params(self, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults, overridden by --param key=value; unknown keys are errors, reported together."""
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise ConfigError([f"method '{self.name}' has no parameter '{k}' (valid: {valid})" for k in unknown])
        params = dict(self.defaults)
        for k, v in given.items():
            params[k] = type(self.defaults[k])(v) if self.defaults[k] is not None and not isinstance(v, type(self.defaults[k])) else v
        return params

    def smoke_only_problems(self, slots: str) -> list[str]:
        """A method that implements only the smoke profile says so, naming the data slots it lacks."""
        if self.ctx.profile.get("name") == "smoke":
            return []
        return [f"method '{self.name}' implements the smoke profile only; the paper profile needs the data "
                f"slot(s) {slots} (methods.md §11.8), which xbench does not read yet"]

    @staticmethod
    def minimum_problems(params: dict[str, Any], minimums: dict[str, int]) -> list[str]:
        return [f"{key} must be at least {low}, got {params[key]}" for key, low in minimums.items() if params[key] < low]

    def build_encoder(self, lang: str | None) -> Encoder:
        raise NotImplementedError

    def extra_report(self, result: dict[str, Any]) -> dict[str, Any] | None:
        """Method-specific quantities derived from a finished result (stored under `report`)."""
        return None
