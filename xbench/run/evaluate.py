"""Evaluation of a fine-tuned model: every evaluation unit of a training group, scored by the task type."""
from __future__ import annotations

from typing import Any

from xbench.run.record import SeedLedger


def evaluate_units(led: SeedLedger, model: Any, tokenizer: Any, units: list[str], data_dir: str | None) -> None:
    """Score `model` on each unit's evaluation split; scores, predictions, diagnostics and the split's
    provenance go into the ledger under the unit's name."""
    task_type, split_name = led.task_type, led.eval_split
    for unit in units:
        split = task_type.load(unit, split_name, data_dir, for_eval=True)
        led.data[f"{unit}/{split_name}"] = split.provenance.to_dict()
        feats = task_type.featurize(split, tokenizer, train=False)
        preds = task_type.predict(model, split, feats, tokenizer)
        led.scores[unit] = task_type.score(split, preds)
        led.predictions[unit] = task_type.prediction_records(split, preds)
        led.diagnostics[unit] = task_type.diagnostics(split, feats, preds, tokenizer)


def diagnostic_warnings(led: SeedLedger) -> list[str]:
    """The warnings the units' diagnostics raise (a one-class prediction, a high [UNK] rate, ...)."""
    from xbench.tasktypes.diagnostics import warnings_for

    return [w for unit, d in led.diagnostics.items() for w in warnings_for(unit, d)]
