"""Per-language signs that a score is chance: the [UNK] rate of the inputs, the majority-prediction share.

A target language the tokenizer cannot read (Myanmar under an English vocabulary: 80% [UNK]) gave
33.35% XNLI accuracy with 99% of predictions one class, and nothing said so. Every evaluated unit
now records both numbers under the result's `diagnostics`, and an extreme value becomes a warning
(printed during the run, stored in `flags.warnings`, shown on the leaderboard).

Definitions:
- `unk_rate`: the share of the evaluation inputs' subword tokens that are the tokenizer's unknown
  id, counting only real tokens (no padding, no special tokens such as [CLS]/[SEP]). For QA every
  window is counted, so context shared by overlapping windows counts once per window. A tokenizer
  whose unknown token is also another special token (GPT-2's <|endoftext|>) is byte-level and can
  spell any input: its rate is 0.
- `majority_share`: the share of the most frequent predicted label (`majority_label`) among all
  predictions: the class per pair (classification), the tag per word (token labelling), the
  relation per word (parsing). `gold_share` is that label's share in the gold annotation, so a
  skewed gold distribution (most words are `O`) is not mistaken for a collapse.
- QA has no label set: `majority_share` is the share of the most frequent predicted answer string
  (after stripping spaces) and `empty_share` the share of empty answers.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

# One subword in five unreadable: the model cannot be reading the language. Measured on the shared
# data: English and German under the smoke tokenizers are at 0.0-0.1%, Chinese under the CLP helper
# tokenizer (1,000 characters kept) at about 9%, Myanmar under tiny-en-bert at 80%.
UNK_RATE_WARN = 0.2
# A label set of 3 or more classes of which one takes over 90% of the predictions, 10 points more
# than its gold share: with XNLI's balanced 3 classes that is a model that has collapsed to one class
# (chance accuracy), while PAN-X, whose words are mostly `O` in the gold too, does not warn for it.
MAJORITY_SHARE_WARN = 0.9
MAJORITY_MARGIN = 0.1
MIN_CLASSES = 3
# QA: gold answers of different questions rarely coincide (the most frequent gold answer string of
# an XQuAD or MLQA language is under 2% of its questions); half the answers one string, or empty,
# means the model is not reading the questions.
QA_SHARE_WARN = 0.5


def unk_rate(features: Iterable[dict[str, Any]], tokenizer: Any) -> dict[str, Any]:
    """`unk_rate` and the token count it is taken over (see the module docstring)."""
    unk = tokenizer.unk_token_id
    special = set(tokenizer.all_special_ids)
    others = {getattr(tokenizer, f"{role}_token_id", None) for role in ("pad", "bos", "eos", "cls", "sep", "mask")}
    byte_level = unk is None or unk in others
    special.discard(unk)
    total = unknown = 0
    for f in features:
        ids = list(f["input_ids"])
        mask = list(f["attention_mask"]) if "attention_mask" in f else [1] * len(ids)
        for tok, m in zip(ids, mask):
            if not m or tok in special:
                continue
            total += 1
            unknown += int(tok == unk and not byte_level)
    return {"unk_rate": round(unknown / total, 6) if total else None, "tokens": total}


def majority(predicted: Sequence[Any], gold: Sequence[Any] | None, n_classes: int | None) -> dict[str, Any]:
    """The most frequent predicted label, its share, and (with `gold`) that label's gold share."""
    if not predicted:
        return {"majority_label": None, "majority_share": None, "predictions": 0}
    counts = Counter(predicted)
    label, count = min(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    out: dict[str, Any] = {"majority_label": label, "majority_share": round(count / len(predicted), 6),
                           "predictions": len(predicted), "classes": n_classes}
    if gold is not None and len(gold):
        out["gold_share"] = round(sum(1 for g in gold if g == label) / len(gold), 6)
    return out


def warnings_for(unit: str, diag: dict[str, Any]) -> list[str]:
    """The warnings an evaluated unit's diagnostics call for (empty when nothing is extreme).

    Each reads `<unit>: <kind>: <detail>`: the leaderboard gathers a row's warnings by kind and unit
    over its seeds (the detail differs from seed to seed), the run prints them whole."""
    out: list[str] = []
    rate = diag.get("unk_rate")
    if rate is not None and rate > UNK_RATE_WARN:
        out.append(f"{unit}: [UNK] rate over {UNK_RATE_WARN:.0%}: {rate:.0%} of the input subwords are [UNK]; the "
                   f"tokenizer cannot read this language, so its score is close to chance")
    share, label = diag.get("majority_share"), diag.get("majority_label")
    if diag.get("kind") == "qa":
        empty = diag.get("empty_share")
        if empty is not None and empty > QA_SHARE_WARN:
            out.append(f"{unit}: empty answers: {empty:.0%} of the predicted answers are empty (over {QA_SHARE_WARN:.0%})")
        elif share is not None and share > QA_SHARE_WARN:
            out.append(f"{unit}: one answer string: {share:.0%} of the predicted answers are the same string {label!r} "
                       f"(over {QA_SHARE_WARN:.0%})")
    elif (share is not None and share > MAJORITY_SHARE_WARN and (diag.get("classes") or 0) >= MIN_CLASSES
          and share - diag.get("gold_share", 0.0) > MAJORITY_MARGIN):
        gold = f", {diag['gold_share']:.0%} in the gold" if "gold_share" in diag else ""
        out.append(f"{unit}: one class predicted: {share:.0%} of the predictions are '{label}'{gold} (over "
                   f"{MAJORITY_SHARE_WARN:.0%} of {diag['classes']} classes); its score is close to chance")
    return out
