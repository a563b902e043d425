"""Sentence-level code-switching of fine-tuning data (docs/methods/ppa.md, "Code-switched fine-tuning").

PPA fine-tunes on target-language training data in which, with probability p_switch, one text of an
example is replaced by its English original, so the classifier sees both languages in one input.
This needs target examples that are line-aligned translations of English ones (XNLI's dev-train parts
are). For QA only the question is switched: the answer span lives in the context, whose English
offsets are not known.

The switch is a fine-tuning transform a method hands to the shared fine-tuning
(`FinetuneHooks.train_transform`); it draws from its own seeded generator, never the global RNG.
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

from xbench.errors import XbenchError


def _check(targets: Sequence[Any], originals: Sequence[Any], p_switch: float) -> None:
    if not 0.0 <= p_switch <= 1.0:
        raise XbenchError(f"code-switching: p_switch must be in [0, 1], got {p_switch}")
    if len(targets) != len(originals):
        raise XbenchError(f"code-switching needs the English original of every training example, line by line: "
                          f"{len(targets)} target examples but {len(originals)} English ones")


def code_switch_pairs(targets: Sequence[Any], originals: Sequence[Any], p_switch: float, seed: int) -> list[Any]:
    """Sentence-pair examples (premise, hypothesis, label) with, for each example and probability
    `p_switch`, its premise or its hypothesis (chosen uniformly) replaced by the English original's.
    The label is kept; an original whose label differs is not a translation of the example: an error."""
    _check(targets, originals, p_switch)
    rng = random.Random(seed)
    out = []
    for i, (ex, en) in enumerate(zip(targets, originals)):
        if ex.label != en.label:
            raise XbenchError(f"code-switching: example {i} has label {ex.label} but its English original {en.label}; "
                              "the two files are not line-aligned translations")
        switch, which = rng.random() < p_switch, rng.random() < 0.5
        if switch:
            ex = dataclasses.replace(ex, **({"premise": en.premise} if which else {"hypothesis": en.hypothesis}))
        out.append(ex)
    return out


def code_switch_questions(targets: Sequence[Any], originals: Sequence[Any], p_switch: float, seed: int) -> list[Any]:
    """QA examples with, for each and probability `p_switch`, the question replaced by the English
    original's; context, answers and offsets are the target's."""
    _check(targets, originals, p_switch)
    rng = random.Random(seed)
    return [dataclasses.replace(ex, question=en.question) if rng.random() < p_switch else ex
            for ex, en in zip(targets, originals)]
