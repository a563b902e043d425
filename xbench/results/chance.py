"""Where chance is: the score of a trivial predictor per evaluation unit, read from stored predictions.

- sentence-pair classification (accuracy): always predicting the test set's most frequent gold label
  (the majority-class accuracy; 1/3 for a balanced XNLI test set);
- NER (entity F1): predicting no entity (all `O`) scores 0;
- extractive QA and parsing: no trivial predictor is shown (an empty answer scores 0 EM/F1 and says
  nothing; a left-branching tree is not a baseline anyone reports).

A row is "near chance" when its card average lies within noise of the chance level: closer than
two standard deviations over seeds, and for accuracy also closer than 1.96 binomial standard errors
of the chance level on the averaged examples (so one seed cannot pass for clear of chance).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from xbench.errors import XbenchError
from xbench.results.significance import predictions_path, read_predictions

TRIVIAL = {("sentence-pair-classification", "accuracy"): "majority class",
           ("token-labelling", "f1"): "no entity"}


def chance_level(result: Mapping[str, Any], unit: str, metric: str) -> tuple[float, int] | None:
    """(chance score, examples) of one unit, or None where no trivial predictor is defined or the
    predictions are not there to count the gold labels."""
    kind = (result["task"].get("type"), metric)
    if kind not in TRIVIAL:
        return None
    path = predictions_path(result["_path"], unit)
    if not path.is_file():
        return None
    try:
        golds = [r["gold"] for r in read_predictions(path)]
    except (XbenchError, KeyError, TypeError):
        return None  # an unreadable file has no chance level; the paired test names the problem
    if not golds:
        return None
    if kind[0] == "token-labelling":
        return 0.0, len(golds)
    return Counter(map(str, golds)).most_common(1)[0][1] / len(golds), len(golds)


def table_chance(results_by_unit: Mapping[str, Mapping[str, Any]], metric: str) -> dict[str, tuple[float, int]]:
    """unit -> (chance, examples), from one result file per unit (the gold data is the same for every row)."""
    out = {}
    for unit, result in results_by_unit.items():
        level = chance_level(result, unit, metric)
        if level is not None:
            out[unit] = level
    return out


def near_chance(mean: float, std: float, chance: float, examples: int, metric: str) -> bool:
    noise = 2.0 * std
    if metric == "accuracy" and examples > 0:
        noise = max(noise, 1.96 * math.sqrt(chance * (1.0 - chance) / examples))
    return abs(mean - chance) <= noise


def average_chance(chance: Mapping[str, tuple[float, int]], units: Sequence[str]) -> tuple[float, int] | None:
    """The chance level of a macro average: the mean of its units' levels (None unless every unit has one)."""
    if not units or any(u not in chance for u in units):
        return None
    return sum(chance[u][0] for u in units) / len(units), sum(chance[u][1] for u in units)
