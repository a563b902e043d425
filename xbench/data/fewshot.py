"""The few-shot sampler (docs/protocols.md, "Few-shot fine-tuning"): a seeded subset of a training set.

CLISM's paper fine-tunes on 64 to 1,024 English QA examples, five seeds each, 200 steps; any QA card
can do the same with `--option few_shot=N`. The subset is drawn from the examples' order in the file
by the fine-tuning seed, so a seed always picks the same questions, and two sizes are drawn
independently (a 128-subset need not contain the 64-subset, as in the paper's separate samples).
"""
from __future__ import annotations

import random

from xbench.errors import XbenchError

FEW_SHOT_SIZES = (64, 128, 256, 512, 1024)  # the paper's sizes; any positive size is allowed
FEW_SHOT_STEPS = 200                        # optimizer steps of every few-shot fine-tuning (the paper's)


def few_shot_indices(n_total: int, size: int, seed: int) -> list[int]:
    """`size` distinct indices of `range(n_total)`, in increasing order, the same for the same seed."""
    if size < 1:
        raise XbenchError(f"few_shot must be a positive number of examples, got {size}")
    if size > n_total:
        raise XbenchError(f"few_shot={size} asks for more examples than the training set has ({n_total})")
    rng = random.Random(f"xbench-few-shot/{size}/{seed}")
    return sorted(rng.sample(range(n_total), size))
