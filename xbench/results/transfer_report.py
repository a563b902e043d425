"""The transfer report of a result (docs/methods/meta.md, "Transfer report"): the English score of the kept
checkpoint, the zero-shot target scores and their mean, the transfer gap, and Tatoeba retrieval of the
encoder (before and after the method's training where the encoder records both, as PPA's does).

Read from a result file alone, so the leaderboard can show it without importing a method.
"""
from __future__ import annotations

from typing import Any

SOURCE_LANG = "en"


def transfer_report(result: dict[str, Any]) -> dict[str, Any]:
    """The transfer report (docs/methods/meta.md) from a result file: English score, zero-shot target
    scores, transfer gap, retrieval.

    The English score is the model-selection score on the English selection split (XNLI en
    dev-heldout in the shared-data zero-shot protocol), i.e. the score of the checkpoint kept.
    """
    metric = result["scores"]["metric"]
    english = [s[metric] for s in result.get("selection", []) if s.get("train_lang") == SOURCE_LANG and metric in s]
    targets = {lang: s[metric] for lang, s in result["scores"]["per_language"].items() if lang != SOURCE_LANG}
    target_mean = sum(targets.values()) / len(targets) if targets else None
    en_score = sum(english) / len(english) if english else None
    retrieval: dict[str, Any] = {}
    before: dict[str, Any] = {}
    for enc in result["model"]["encoders"]:
        retrieval.update(enc.get("provenance", {}).get("retrieval", {}))
        before.update(enc.get("provenance", {}).get("retrieval_before", {}))
    return {"metric": metric, "english": en_score, "english_split": result["run"].get("select_split"),
            "targets": targets, "target_mean": target_mean,
            "transfer_gap": en_score - target_mean if en_score is not None and target_mean is not None else None,
            "retrieval": {lang: {k: r[k] for k in ("xx_to_en", "en_to_xx", "mean")} for lang, r in retrieval.items()},
            **({"retrieval_before": {lang: {k: r[k] for k in ("xx_to_en", "en_to_xx", "mean")}
                                     for lang, r in before.items()}} if before else {})}
