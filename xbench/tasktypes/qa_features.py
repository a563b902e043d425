"""Sliding-window features for extractive QA, and mapping span logits back to answer text.

Semantics follow the Hugging Face ``run_qa`` example: the question comes first, the context is
cut into overlapping windows by the fast tokenizer (``doc_stride`` is the number of tokens two
consecutive windows share, as in HF, not BERT's step between window starts), and a window that
does not contain the whole answer is labelled with the CLS position. Offsets are character
offsets into the Python ``str``, so multi-byte text (umlauts, CJK, Arabic, emoji) maps back exactly.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from xbench.data.squad import QAExample
from xbench.errors import XbenchError

Feature = dict[str, Any]
Logits = torch.Tensor | Sequence[torch.Tensor | Sequence[float]]

_MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
_CONTEXT = 1  # sequence id of the context: question first, context second
# Bounds the [features, tokens, tokens] score tensor of the exhaustive span search.
_EXHAUSTIVE_CHUNK = 16


def _check_setup(tokenizer: Any, max_length: int, doc_stride: int, max_query_length: int) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise XbenchError(
            f"extractive QA needs a fast (Rust-backed) tokenizer for character offsets; "
            f"{type(tokenizer).__name__} is not one"
        )
    budget = max_length - max_query_length - tokenizer.num_special_tokens_to_add(pair=True)
    # tokenizers panics (a BaseException, not a clean error) when the stride does not fit.
    if max_query_length < 1 or doc_stride < 0 or doc_stride >= budget:
        raise XbenchError(
            f"QA windows: max_length={max_length} leaves {budget} context tokens next to a "
            f"{max_query_length}-token question and the special tokens; doc_stride={doc_stride} "
            "must be >= 0 and smaller than that"
        )


def _fit_question(question: str, tokenizer: Any, max_query_length: int) -> str:
    """Cut ``question`` at a token boundary so that it has at most ``max_query_length`` tokens."""
    while True:
        offsets = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if len(offsets) <= max_query_length:
            return question
        # Re-tokenising a cut string can give other pieces (BPE), so check again; the min() makes
        # every round shorter, which matters where several byte-level tokens share one character.
        question = question[: min(offsets[max_query_length - 1][1], len(question) - 1)]


def _encode(
    examples: Sequence[QAExample], tokenizer: Any, max_length: int, doc_stride: int, max_query_length: int,
    question_marker: str | None = None,
) -> Any:
    _check_setup(tokenizer, max_length, doc_stride, max_query_length)
    # Leading whitespace would only waste question tokens (some TyDiQA questions have lots).
    questions = [ex.question.lstrip() for ex in examples]
    # A marker (CLISM's [QUE], a special token) ends every question; the question is cut one token
    # shorter so that the marker is never cut off.
    room = max_query_length - (question_marker is not None)
    lengths = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
    questions = [
        _fit_question(q, tokenizer, room) if n > room else q
        for q, n in zip(questions, lengths)
    ]
    if question_marker is not None:
        if question_marker not in tokenizer.all_special_tokens:
            raise XbenchError(f"QA question marker {question_marker!r} is not a special token of the tokenizer")
        questions = [q.rstrip() + question_marker for q in questions]
    return tokenizer(
        questions,
        [ex.context for ex in examples],
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


def _model_inputs(enc: Any, i: int) -> Feature:
    return {key: enc[key][i] for key in _MODEL_INPUTS if key in enc}


def _answer_chars(ex: QAExample) -> tuple[int, int]:
    """Character span of the first answer, without surrounding whitespace."""
    if not ex.answers or not ex.answers[0].strip():
        raise XbenchError(f"question '{ex.id}' has no answer, so it cannot be used for training")
    text, start = ex.answers[0], ex.answer_starts[0]
    # Some TyDiQA answers start with a space; labelling it would pull in the previous token.
    return start + len(text) - len(text.lstrip()), start + len(text.rstrip())


def _token_span(
    offsets: list[tuple[int, int]], seq_ids: list[int | None], start_char: int, end_char: int
) -> tuple[int, int] | None:
    """First and last token of the answer, or None unless the window holds the whole answer."""
    ctx = [t for t, s in enumerate(seq_ids) if s == _CONTEXT]
    if not ctx or offsets[ctx[0]][0] > start_char or offsets[ctx[-1]][1] < end_char:
        return None
    start_tok = max(t for t in ctx if offsets[t][0] <= start_char)
    end_tok = min(t for t in ctx if offsets[t][1] >= end_char)
    return start_tok, end_tok


def _cls_index(input_ids: list[int], tokenizer: Any) -> int:
    cls_id = tokenizer.cls_token_id
    return input_ids.index(cls_id) if cls_id is not None and cls_id in input_ids else 0


def prepare_train_features(
    examples: Sequence[QAExample],
    tokenizer: Any,
    max_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
    question_marker: str | None = None,
) -> tuple[list[Feature], dict[str, int]]:
    """Training windows labelled with the first answer's token span (CLS where it is not inside).

    Returns the features and counts ``n_examples``, ``n_features`` and
    ``answers_lost_to_truncation`` (examples whose answer is whole in no window, so the model
    never sees it as a span).
    """
    if not examples:
        return [], {"n_examples": 0, "n_features": 0, "answers_lost_to_truncation": 0}
    spans = [_answer_chars(ex) for ex in examples]
    enc = _encode(examples, tokenizer, max_length, doc_stride, max_query_length, question_marker)
    features: list[Feature] = []
    answer_seen = [False] * len(examples)
    for i, ex_i in enumerate(enc["overflow_to_sample_mapping"]):
        feature = _model_inputs(enc, i)
        span = _token_span(enc["offset_mapping"][i], enc.sequence_ids(i), *spans[ex_i])
        if span is None:
            cls = _cls_index(feature["input_ids"], tokenizer)
            span = (cls, cls)
        else:
            answer_seen[ex_i] = True
        feature["start_positions"], feature["end_positions"] = span
        features.append(feature)
    n_lost = answer_seen.count(False)
    return features, {"n_examples": len(examples), "n_features": len(features), "answers_lost_to_truncation": n_lost}


def prepare_eval_features(
    examples: Sequence[QAExample],
    tokenizer: Any,
    max_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
    question_marker: str | None = None,
) -> list[Feature]:
    """Evaluation windows with ``example_id`` and an ``offset_mapping`` that is None off the context."""
    if not examples:
        return []
    enc = _encode(examples, tokenizer, max_length, doc_stride, max_query_length, question_marker)
    features: list[Feature] = []
    for i, ex_i in enumerate(enc["overflow_to_sample_mapping"]):
        feature = _model_inputs(enc, i)
        feature["example_id"] = examples[ex_i].id
        feature["offset_mapping"] = [
            tuple(offset) if s == _CONTEXT else None
            for offset, s in zip(enc["offset_mapping"][i], enc.sequence_ids(i))
        ]
        # The same bounds as an array, built once here (and cached with the features) rather than at
        # every post-processing.
        feature["context_bounds"] = np.asarray(
            [o if o is not None else (-1, -1) for o in feature["offset_mapping"]], dtype=np.int64).reshape(-1, 2)
        features.append(feature)
    return features


def _as_matrix(logits: Logits, n_rows: int) -> torch.Tensor:
    """A [features, tokens] float tensor; ragged rows are padded with -inf."""
    if isinstance(logits, torch.Tensor):
        matrix = logits
    else:
        matrix = pad_sequence([torch.as_tensor(row) for row in logits], batch_first=True, padding_value=float("-inf"))
    if matrix.dim() != 2 or matrix.shape[0] != n_rows:
        raise ValueError(f"expected logits of shape [{n_rows}, tokens], got {tuple(matrix.shape)}")
    return matrix.float()


def _char_bounds(features: Sequence[Feature], width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token, its first and end character in the context; -1 off the context."""
    # Row by row into one preallocated array: torch.tensor() on nested lists costs more than the
    # whole span search.
    bounds = np.full((len(features), width, 2), -1, dtype=np.int64)
    for i, feature in enumerate(features):
        offsets = feature["offset_mapping"]
        if len(offsets) > width:
            raise ValueError(f"logits have {width} positions but a feature has {len(offsets)} tokens")
        row = feature.get("context_bounds")
        bounds[i, :len(offsets)] = row if row is not None else [o if o is not None else (-1, -1) for o in offsets]
    out = torch.from_numpy(bounds).to(device)
    return out[..., 0], out[..., 1]


def _best_pairs(
    start: torch.Tensor,
    end: torch.Tensor,
    char_start: torch.Tensor,
    char_end: torch.Tensor,
    k: int,
    max_answer_length: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per feature, the best valid (start, end) among its k highest start and k highest end logits.

    ``start``/``end`` are already -inf off the context. Returns (score, start index, end index);
    the score is -inf where no pair is valid.
    """
    s_val, s_idx = start.topk(k, dim=1)
    e_val, e_idx = end.topk(k, dim=1)
    score = s_val[:, :, None] + e_val[:, None, :]
    n_tokens = e_idx[:, None, :] - s_idx[:, :, None] + 1
    # Zero-width tokens (possible with some tokenizers) must not yield an empty answer.
    non_empty = char_end.gather(1, e_idx)[:, None, :] > char_start.gather(1, s_idx)[:, :, None]
    valid = torch.isfinite(score) & (n_tokens >= 1) & (n_tokens <= max_answer_length) & non_empty
    best, flat = score.masked_fill(~valid, float("-inf")).flatten(1).max(dim=1)
    best_start = s_idx.gather(1, (flat // k)[:, None]).squeeze(1)
    best_end = e_idx.gather(1, (flat % k)[:, None]).squeeze(1)
    return best, best_start, best_end


def _group_features(examples: Sequence[QAExample], features: Sequence[Feature]) -> dict[str, list[int]]:
    by_example: dict[str, list[int]] = defaultdict(list)
    for f_i, feature in enumerate(features):
        by_example[feature["example_id"]].append(f_i)
    missing = [ex.id for ex in examples if ex.id not in by_example]
    if missing or len(by_example) != len(examples):
        raise ValueError(f"features and examples do not match (examples without features: {missing[:3]})")
    return by_example


def _best_spans(
    start: torch.Tensor,
    end: torch.Tensor,
    char_start: torch.Tensor,
    char_end: torch.Tensor,
    n_best: int,
    max_answer_length: int,
) -> tuple[list[float], list[int], list[int]]:
    """Per feature, the score, start and end token of its best valid span (score -inf if none)."""
    off_context = char_start < 0
    start = start.masked_fill(off_context, float("-inf"))
    end = end.masked_fill(off_context, float("-inf"))
    width = start.shape[1]
    found = _best_pairs(start, end, char_start, char_end, min(n_best, width), max_answer_length)
    best, best_start, best_end = (t.cpu() for t in found)
    # A window whose n-best starts and ends form no valid pair may still hold the best valid span
    # of its example, so such windows (rare) get an exhaustive search.
    has_context = (~off_context).any(dim=1).cpu()
    retry = [f for f in range(len(best)) if best[f] == float("-inf") and has_context[f]]
    for lo in range(0, len(retry), _EXHAUSTIVE_CHUNK):
        rows = torch.tensor(retry[lo:lo + _EXHAUSTIVE_CHUNK])
        on = rows.to(start.device)
        found = _best_pairs(start[on], end[on], char_start[on], char_end[on], width, max_answer_length)
        best[rows], best_start[rows], best_end[rows] = (t.cpu() for t in found)
    return best.tolist(), best_start.tolist(), best_end.tolist()


def postprocess(
    examples: Sequence[QAExample],
    features: Sequence[Feature],
    start_logits: Logits,
    end_logits: Logits,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """Best answer text per example over all its windows (score = start logit + end logit).

    ``start_logits``/``end_logits`` have one row per feature, as a [features, tokens] tensor
    (positions past a feature's length are ignored) or a list of rows of any lengths; they may
    live on any device. Spans must lie in the context, end >= start, and be at most
    ``max_answer_length`` tokens. Where none of a window's n-best pairs is valid, all its pairs
    are searched, so the prediction is empty only when the example has no valid span at all.
    """
    if n_best < 1 or max_answer_length < 1:
        raise XbenchError(f"n_best ({n_best}) and max_answer_length ({max_answer_length}) must be >= 1")
    if not examples:
        return {}
    by_example = _group_features(examples, features)
    start = _as_matrix(start_logits, len(features))
    end = _as_matrix(end_logits, len(features)).to(start.device)
    width = start.shape[1]
    if end.shape[1] != width:
        raise ValueError(f"start logits have {width} positions but end logits {end.shape[1]}")
    char_start, char_end = _char_bounds(features, width, start.device)
    scores, starts, ends = _best_spans(start, end, char_start, char_end, n_best, max_answer_length)
    predictions: dict[str, str] = {}
    for ex in examples:
        f_i = max(by_example[ex.id], key=lambda f: scores[f])
        if scores[f_i] == float("-inf"):
            predictions[ex.id] = ""
            continue
        offsets = features[f_i]["offset_mapping"]
        predictions[ex.id] = ex.context[offsets[starts[f_i]][0]:offsets[ends[f_i]][1]]
    return predictions
