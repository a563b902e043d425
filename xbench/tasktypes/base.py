"""The task-type interface: what a run needs from classification, QA, labelling, parsing.

A task card names its type; the type knows how to load a (language, split), turn examples into
features, build a model with the right head, compute the training loss, predict and score.
Featurisation is cached by content hash (data provenance x tokenizer x settings).
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xbench.atomic import canonical_json, hash_json, sha256_bytes
from xbench.cache import cache_root
from xbench.data.split import Split
from xbench.cards import TaskCard


def tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # A call with truncation=... or padding=... stores those settings in the backend, so they
        # would make the same tokenizer miss its own cache entry; every featurizer passes its own.
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        raw = canonical_json(spec)
    else:
        raw = repr(sorted(tokenizer.get_vocab().items()))
    return sha256_bytes((raw + repr(getattr(tokenizer, "model_input_names", None))).encode("utf-8"))


# Bumped whenever the on-disk layout changes; it is part of every file name, so an older file (a
# pickle before version 1) is never even opened.
FEATURE_CACHE_FORMAT = 1


def feature_cache_path(key: dict[str, Any]) -> Path:
    return cache_root() / "features" / f"{hash_json({'format': FEATURE_CACHE_FORMAT, **key})}.arrow"


def cached_features(key: dict[str, Any], build: Callable[[], Any]) -> Any:
    """Tokenised features keyed by content hash; a second preparation is a memory-mapped read.

    Stored as an Arrow IPC file (never a pickle: cache folders are shared, and unpickling runs
    code). An entry that cannot be read back is rebuilt and rewritten.
    """
    from xbench.tasktypes import feature_store

    path = feature_cache_path(key)
    if path.is_file():
        try:
            return feature_store.load(path)
        except feature_store.UnreadableEntry as e:
            import warnings

            warnings.warn(f"feature cache entry {path} is unreadable ({e}); rebuilding it", stacklevel=2)
    value = build()
    feature_store.save(path, value)
    return value


class TaskType(ABC):
    """One task type; instances are bound to a card."""

    name: str = ""
    version: int = 1  # bump when featurisation changes, which invalidates the feature cache

    def __init__(self, card: TaskCard, options: dict[str, Any] | None = None) -> None:
        self.card = card
        self.options = dict(options or {})
        unknown = sorted(set(self.options) - set(self.option_names))
        if unknown:
            from xbench.errors import ConfigError

            raise ConfigError([f"task '{card.name}' ({self.name}) takes no option '{k}'"
                               f" (valid: {', '.join(self.option_names) or 'none'})" for k in unknown])

    # Task-type options a run may pass (e.g. question_langs for MLQA, treebank for UD).
    option_names: tuple[str, ...] = ()

    # What a method may change in every input of this type, training and evaluation alike
    # (FinetuneHooks.inputs; e.g. extractive QA's question_marker for CLISM's [QUE] head).
    method_input_names: tuple[str, ...] = ()

    def train_subset(self, n_examples: int, seed: int) -> list[int] | None:
        """Indices of the training examples to fine-tune on for `seed` (a few-shot option); None: all."""
        return None

    def finetune_overrides(self) -> dict[str, Any]:
        """Fine-tuning settings this task type's options fix (e.g. few-shot runs take 200 steps)."""
        return {}

    def set_method_inputs(self, inputs: dict[str, Any]) -> None:
        """Take the method's input changes; XbenchError naming the ones this task type cannot make."""
        unknown = sorted(set(inputs) - set(self.method_input_names))
        if unknown:
            from xbench.errors import XbenchError

            raise XbenchError(f"task '{self.card.name}' ({self.name}) cannot change its inputs by "
                              f"{', '.join(unknown)} (it can: {', '.join(self.method_input_names) or 'nothing'})")

    # Fine-tuning settings per profile name, used where a profile has no block for this type: the
    # shipped profiles only know the built-in types, so a plugin's type brings its own.
    finetune_defaults: dict[str, dict[str, Any]] = {}

    @property
    def metrics(self) -> list[str]:
        """Every metric the scores carry; the card's `metric` is the primary (leaderboard, check)."""
        return list(self.card.raw.get("metrics", [self.card.metric]))

    def eval_units(self, langs: list[str]) -> list[str]:
        """What gets one score: a language, or e.g. an MLQA context x question pair."""
        return list(langs)

    def averaged_units(self, units: list[str]) -> list[str]:
        """The units the reported average is taken over (e.g. XQuAD leaves out ro)."""
        return list(units)

    def scoring_info(self) -> dict[str, Any]:
        """How scores were computed (scorer, normalisation), recorded in the result file."""
        return {"metric": self.card.metric}

    def code_switch(self, examples: list[Any], originals: list[Any], p_switch: float, seed: int) -> list[Any]:
        """The training examples with, each with probability `p_switch`, a text replaced by its line-aligned
        English original (docs/protocols.md, "Code-switched training"); task types that cannot say
        which text may be switched refuse."""
        from xbench.errors import XbenchError

        raise XbenchError(f"task type '{self.name}' (task '{self.card.name}') has no code-switched training")

    supports_code_switch = False

    @abstractmethod
    def load(self, lang: str, split: str, data_dir: str | Path | None, *, for_eval: bool) -> Split: ...

    @abstractmethod
    def featurize(self, split: Split, tokenizer: Any, *, train: bool) -> Sequence[dict[str, Any]]: ...

    @abstractmethod
    def build_model(self, encoder_path: str) -> Any: ...

    @abstractmethod
    def loss(self, model: Any, batch: dict[str, Any], ctx: Any) -> dict[str, Any]: ...

    @abstractmethod
    def predict(self, model: Any, split: Split, features: Sequence[dict[str, Any]], tokenizer: Any) -> list[Any]: ...

    @abstractmethod
    def score(self, split: Split, predictions: list[Any]) -> dict[str, float]:
        """Scores as fractions in [0, 1]; must contain the card's metric and `n`."""

    @abstractmethod
    def prediction_records(self, split: Split, predictions: list[Any]) -> list[dict[str, Any]]: ...

    def predicted_labels(self, split: Split, predictions: list[Any]) -> tuple[list[Any], list[Any] | None, int] | None:
        """(predicted labels, gold labels or None, number of classes), flattened to one label per
        decision, for the majority-prediction share; None where the type has no label set."""
        return None

    def diagnostics(self, split: Split, features: Sequence[dict[str, Any]], predictions: list[Any],
                    tokenizer: Any) -> dict[str, Any]:
        """The unit's [UNK] rate and majority-prediction share (definitions: tasktypes/diagnostics.py)."""
        from xbench.tasktypes.diagnostics import majority, unk_rate

        out = unk_rate(features, tokenizer)
        labels = self.predicted_labels(split, predictions)
        if labels is not None:
            out.update(majority(*labels))
        return out

    def pad_values(self, tokenizer: Any) -> dict[str, int]:
        return {"input_ids": tokenizer.pad_token_id or 0, "labels": -100}

    def training_fingerprint(self, *, with_selection: bool) -> dict[str, Any]:
        """Everything of the task type and card that decides what fine-tuning produces (the fine-tune
        cache key), beyond the data, the encoder and the fine-tuning settings. By default the whole
        card; a type whose training depends on fewer settings narrows it so that cards share."""
        return {"task_type": self.name, "version": self.version, "card": self.card.name,
                "card_version": self.card.version, "params": self.card.params, "options": self.options}

    def feature_key(self, split: Split, tokenizer: Any, train: bool, **settings: Any) -> dict[str, Any]:
        return {"task_type": self.name, "version": self.version, "data": split.provenance.hash, "lang": split.lang,
                "split": split.name, "tokenizer": tokenizer_fingerprint(tokenizer), "train": train, **settings}
