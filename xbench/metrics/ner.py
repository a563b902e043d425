"""Entity-level NER scores with seqeval (IOB2, default conlleval-compatible mode)."""
from __future__ import annotations

from typing import Any

from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

__all__ = ["repair_iob2", "score_ner"]


def repair_iob2(tags: list[str]) -> list[str]:
    """Make a tag sequence valid IOB2 the way conlleval reads it.

    Rule: an ``I-X`` that starts the sequence, follows ``O``, or follows a tag of another type
    becomes ``B-X``. Everything else is unchanged. seqeval's default mode already scores the
    unrepaired sequence this way, so repairing changes files, not scores.
    """
    out: list[str] = []
    prev_type: str | None = None
    for tag in tags:
        if tag == "O":
            prev_type = None
            out.append(tag)
            continue
        prefix, sep, typ = tag.partition("-")
        if not sep or prefix not in ("B", "I") or not typ:
            raise ValueError(f"not an IOB2 tag: {tag!r}")
        if prefix == "I" and typ != prev_type:
            tag = f"B-{typ}"
        prev_type = typ
        out.append(tag)
    return out


def score_ner(gold: list[list[str]], pred: list[list[str]]) -> dict[str, Any]:
    """Entity-level micro precision / recall / F1 (× 100) and counts.

    An entity counts as correct only with exact boundaries and type (seqeval default mode,
    which matches conlleval). Values are plain Python floats/ints so they serialise to JSON.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
    # zero_division=0: no gold or no predicted entities gives 0.0 instead of a warning.
    precision = precision_score(gold, pred, zero_division=0)
    recall = recall_score(gold, pred, zero_division=0)
    f1 = f1_score(gold, pred, zero_division=0)
    return {
        "f1": 100.0 * float(f1),
        "precision": 100.0 * float(precision),
        "recall": 100.0 * float(recall),
        "n_sentences": len(gold),
        "n_entities": len(get_entities(gold)),
    }
