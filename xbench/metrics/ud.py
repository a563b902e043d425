"""UAS / LAS / CLAS with the official CoNLL 2018 scorer.

The scorer is ``conll18_ud_eval.py`` as shipped in ``udtools.udeval`` (a dependency of stanza);
it is used as a library, never re-implemented. It aligns gold and system files through their
characters, ignores DEPREL subtypes, includes punctuation, and with gold tokenisation its F1
scores equal accuracies.
"""
from __future__ import annotations

import importlib.metadata
import io
from pathlib import Path
from typing import Any

from udtools import udeval

from xbench.data.conllu_io import iter_lines
from xbench.errors import XbenchError

__all__ = ["score_conllu"]


def _load(path: str | Path, role: str) -> Any:
    try:
        lines = [line for _, line in iter_lines(path)]
    except XbenchError as e:
        raise XbenchError(f"{role} CoNLL-U file: {e}") from None
    try:
        return udeval.load_conllu(io.StringIO("\n".join(lines) + "\n" if lines else ""), str(path), {})
    except udeval.UDError as e:
        raise XbenchError(f"CoNLL 2018 scorer rejected the {role} file {path}: {e}") from None


def score_conllu(gold_path: str | Path, system_path: str | Path) -> dict[str, Any]:
    """Score a system CoNLL-U file against gold (either may be ``.gz``).

    Returns ``uas``, ``las``, ``clas`` (F1 × 100), ``n_words`` and ``n_sentences`` (gold), and
    ``scoring``, a description of how the numbers were obtained.
    """
    gold = _load(gold_path, "gold")
    if not gold.words:
        raise XbenchError(f"gold CoNLL-U file {gold_path} has no words; nothing to score")
    system = _load(system_path, "system")
    try:
        ev = udeval.evaluate(gold, system)
    except udeval.UDError as e:
        raise XbenchError(f"CoNLL 2018 scorer could not align gold {gold_path} and system {system_path}: {e}") from None
    gold_tokenisation = ev["Tokens"].f1 == 1.0 and ev["Words"].f1 == 1.0
    return {
        "uas": 100.0 * ev["UAS"].f1,
        "las": 100.0 * ev["LAS"].f1,
        "clas": 100.0 * ev["CLAS"].f1,
        "n_words": int(ev["Words"].gold_total),
        "n_sentences": int(ev["Sentences"].gold_total),
        "scoring": {
            "scorer": f"CoNLL 2018 conll18_ud_eval via udtools {importlib.metadata.version('udtools')}",
            "metric": "F1 x 100 over aligned words",
            "deprel_subtypes": "ignored",
            "punctuation": "included",
            "tokenisation": "gold" if gold_tokenisation else "system (differs from gold; F1 is not accuracy)",
            "gold": str(gold_path),
            "system": str(system_path),
        },
    }
