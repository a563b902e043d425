"""The method interface: a recipe of stages that produces an encoder for a target language.

Fine-tuning and evaluation are shared (xbench.run.orchestrate), so every method is compared under the
same protocol. A method decides how its encoder is built, and returns the compute of every
stage it ran, so the leaderboard can show score beside cost. A method whose paper changes
fine-tuning itself (a QA head, an extra loss, code-switched training data) says so through
:meth:`Method.finetune_hooks`; the result records it and the leaderboard flags the row
(docs/methods/README.md, "Shaping fine-tuning").

Parameters are declared as typed :class:`Param` fields (docs/methods/README.md, "Parameters").
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

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


_SAMPLE = {bool: False, int: 0, float: 0.0, str: ""}
_NONE = ("none", "null")


@dataclass(frozen=True)
class Param:
    """One typed method parameter: its default, type, and the values it may take.

    `type` is bool, int, float or str (by default the default's type); `optional` lets "none" or
    "null" (or None) stand for None; `low`/`high` bound a number (inclusive unless
    `low_open`/`high_open`); `choices` lists the allowed values; `hint` says what a special value
    means ("0 = the profile's budget") and is added to the range message.
    """

    default: Any
    type: type | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    optional: bool = False
    hint: str = ""

    @property
    def kind(self) -> type:
        kind = self.type or type(self.default)
        if kind not in _SAMPLE:
            raise TypeError(f"a method parameter is bool, int, float or str, not {kind.__name__}")
        return kind

    def parse(self, value: Any) -> Any:
        """`value` (a --param string, or already typed) as this parameter's type; ValueError naming
        the expected type otherwise."""
        if self.optional and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
            return None
        return parse_param(value, _SAMPLE[self.kind])

    def problem(self, key: str, value: Any) -> str | None:
        """Why a well-typed `value` is out of range (None when it is not)."""
        if value is None:
            return None
        if self.choices is not None and value not in self.choices:
            return f"{key} must be one of {', '.join(map(str, self.choices))}, got '{value}'"
        low_bad = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        high_bad = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if not (low_bad or high_bad):
            return None
        hint = f" ({self.hint})" if self.hint else ""
        if self.low is not None and self.high is not None:
            if self.low_open and self.high_open:
                where = f"lie strictly between {_num(self.low)} and {_num(self.high)}"
            else:
                where = (f"lie in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}"
                         f"{')' if self.high_open else ']'}")
        elif self.low is not None:
            where = f"be {'greater than' if self.low_open else 'at least'} {_num(self.low)}"
        else:
            assert self.high is not None
            where = f"be {'less than' if self.high_open else 'at most'} {_num(self.high)}"
        return f"{key} must {where}{hint}, got {value}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass
class FinetuneHooks:
    """What a method changes in the shared fine-tuning (docs/methods/README.md, "Shaping fine-tuning").

    Each hook is optional and comes with a short name, which the result records under
    `method.finetune_changes` and the leaderboard shows as a row flag:

    - `head(encoder_path, task_type)` builds the model fine-tuning trains, instead of the task
      type's `build_model` (e.g. a `[QUE]` QA head); its outputs must be what the task type's loss
      and predict read;
    - `extra_loss(model, batch, ctx)` returns named loss tensors added to the task loss (e.g. a
      consistency loss), with the runner's per-step context (its seeded generator);
    - `train_transform(examples, seed)` returns the training examples to featurise instead of
      the loaded ones (e.g. sentence-level code-switching), seeded by the fine-tuning seed;
    - `inputs` changes every input of the task, in training and evaluation alike, through the
      task type's `set_method_inputs` (e.g. `{"question_marker": "[QUE]"}`: every QA question ends
      with the token the `[QUE]` head reads).

    `fingerprint` holds whatever else decides what the hooks do (their parameters, a code
    version); with the names it is part of the fine-tuned model's cache key.
    """

    head: Callable[[str, Any], Any] | None = None
    head_name: str = ""
    extra_loss: Callable[[Any, dict[str, Any], Any], dict[str, Any]] | None = None
    extra_loss_name: str = ""
    train_transform: Callable[[list[Any], int], list[Any]] | None = None
    train_transform_name: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    inputs_name: str = ""
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def changes(self) -> list[str]:
        """The short descriptions recorded in the result, in a fixed order."""
        out = []
        for label, hook, name in (("head", self.head, self.head_name),
                                  ("extra loss", self.extra_loss, self.extra_loss_name),
                                  ("train transform", self.train_transform, self.train_transform_name),
                                  ("inputs", self.inputs or None, self.inputs_name)):
            if hook is not None:
                if not name:
                    raise TypeError(f"a method's fine-tuning {label} needs a name (FinetuneHooks.{label.replace(' ', '_')}_name)")
                out.append(f"{label}: {name}")
        return out

    def cache_key(self) -> dict[str, Any]:
        key = {"changes": self.changes(), "fingerprint": self.fingerprint}
        if self.inputs:
            key["inputs"] = self.inputs
        return key


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
    # The method's parameters, typed, in the order they are resolved (and hashed into cache keys).
    parameters: ClassVar[dict[str, Param]] = {}
    # {name: default}, derived from `parameters`; a method may instead declare only `defaults`, whose
    # values then give the types (bool, int, float, str; None takes any value).
    defaults: ClassVar[dict[str, Any]] = {}
    # Whether the encoder is built from the run's --model (its architecture, tokenizer or weights):
    # the pre-flight checks a local model folder only for methods that will read it.
    uses_model: bool = True
    # Whether a "shared" encoder depends on the run's language set (ctx.langs): meta pretrains on them, the
    # source model does not. A sweep builds one encoder per distinct set only where it does.
    encoder_uses_langs: bool = True
    # The method whose encoder this one is, where it fine-tunes another method's encoder differently (an
    # ablation row): a sweep then builds that encoder once for both. "" = its own.
    encoder_method: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "parameters" in cls.__dict__:
            for key, param in cls.parameters.items():
                param.kind  # noqa: B018 -- a parameter of another type is a programming error, raised at import
                if param.problem(key, param.default):
                    raise TypeError(f"method '{cls.name}': the default of {key} is out of its own range")
            cls.defaults = {key: param.default for key, param in cls.parameters.items()}

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.params = self.resolve_params(ctx.params)

    def resolve_params(self, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults, overridden by --param key=value (parsed by type, ranges checked), then :meth:`check`ed;
        every problem (unknown keys, values of the wrong type, values out of range) is reported
        together in one ConfigError."""
        problems: list[str] = []
        unknown = sorted(set(given) - set(self.defaults))
        valid = ", ".join(sorted(self.defaults)) or "none"
        problems += [f"method '{self.name}' has no parameter '{k}' (valid: {valid})" for k in unknown]
        params = dict(self.defaults)
        for key, value in given.items():
            if key in unknown:
                continue
            spec = self.parameters.get(key)
            try:
                params[key] = spec.parse(value) if spec is not None else parse_param(value, self.defaults[key])
            except ValueError as exc:
                # The default stays, so that check() can still look at the other parameters.
                problems.append(f"--param {key}={value}: {exc}")
                continue
            problem = spec.problem(key, params[key]) if spec is not None else None
            if problem:
                problems.append(problem)
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

    def preflight_problems(self) -> list[str]:
        """Problems the run's pre-flight reports before any work, beyond the parameters (`check`) and the
        text pools (`pretraining_languages`): a source model the method cannot transfer, a tool that is
        not installed, an empty corpus. Cheap checks only: nothing is built or trained here."""
        return []

    def build_encoder(self, lang: str | None) -> Encoder:
        raise NotImplementedError

    def finetune_hooks(self, task_type: Any) -> FinetuneHooks | None:
        """What this method changes in the shared fine-tuning of `task_type` (a head, an extra loss,
        a transform of the training examples); None, the default, fine-tunes exactly like every
        baseline (docs/methods/README.md, "Shaping fine-tuning")."""
        return None

    def extra_report(self, result: dict[str, Any]) -> dict[str, Any] | None:
        """Method-specific quantities derived from a finished result (stored under `report`)."""
        return None
