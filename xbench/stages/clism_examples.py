"""CLISM's pretraining examples from English–target sentence pairs (docs/methods/clism.md, "Examples").

Per pair, from the words of both sides, the span finder's spans on the English side and the pair's
symmetric word links:

1. each span's target span is the contiguous hull of the target words linked to its words; a span
   with no linked target word, or a hull over `max_span_words` words, is dropped; where two kept
   spans' hulls overlap, the longer (more target words; the earlier on a tie) stays;
2. each kept span is replaced by one `[QUE]` token in the English sentence;
3. X = the tokenizer's pair layout of (masked English, target) (`[CLS] ŝ [SEP] t [SEP]` for BERT,
   `<s> ŝ </s></s> t </s>` for XLM-R), each side cut at a word boundary to `max_len_each` subwords and
   the whole to `max_len` with the special tokens;
4. a `[QUE]` whose own position or whose answer falls outside the kept subwords is undone (its words
   come back) and the cut is made again, so that the `[QUE]`s of X are exactly the spans it answers;
5. the answer of each `[QUE]`: the first subword of the hull's first word and the last subword of its
   last word, as positions in X.

An example left with no `[QUE]` still trains MLM and CACR. The unmasked source sentence
(`[CLS] s [SEP]`) is kept for CACR's third vector.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Span = tuple[int, int, str]


@dataclass
class ClismExample:
    input_ids: list[int]                 # X
    segments: list[int]                  # per position of X: 0 masked source, 1 target, -1 special token
    answers: list[tuple[int, int, int]]  # per [QUE]: (its position, answer start, answer end) in X
    source_ids: list[int]                # [CLS] s [SEP], the original source sentence
    source_segments: list[int]           # 0 for its words' subwords, -1 for special tokens


@dataclass
class BuildStats:
    pairs: int = 0
    spans_found: int = 0
    spans_kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples_without_que: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "spans_found": self.spans_found, "spans_kept": self.spans_kept,
                "spans_kept_per_1000_pairs": round(1000 * self.spans_kept / self.pairs, 1) if self.pairs else None,
                "dropped": dict(sorted(self.dropped.items())), "examples_without_que": self.examples_without_que}


def target_spans(spans: Sequence[Span], links: Sequence[tuple[int, int]], *,
                 max_span_words: int = 10) -> tuple[list[tuple[int, int, int, int]], Counter]:
    """(source start, source end, target start, target end) per kept span (ends exclusive), in source order,
    and the count of dropped spans by reason."""
    dropped: Counter = Counter()
    by_source: dict[int, list[int]] = {}
    for i, j in links:
        by_source.setdefault(i, []).append(j)
    candidates = []
    for start, end, _ in spans:
        linked = [j for i in range(start, end) for j in by_source.get(i, ())]
        if not linked:
            dropped["no_linked_target_word"] += 1
            continue
        t0, t1 = min(linked), max(linked) + 1
        if t1 - t0 > max_span_words:
            dropped["target_hull_too_long"] += 1
            continue
        candidates.append((start, end, t0, t1))
    # Longest hull first (earlier on a tie); a candidate overlapping one already kept is dropped.
    kept: list[tuple[int, int, int, int]] = []
    for cand in sorted(candidates, key=lambda c: (-(c[3] - c[2]), c[0])):
        if any(cand[2] < k[3] and k[2] < cand[3] for k in kept) or any(cand[0] < k[1] and k[0] < cand[1] for k in kept):
            dropped["overlaps_a_longer_span"] += 1
            continue
        kept.append(cand)
    return sorted(kept), dropped


def _subword_counts(tokenizer: Any, words: list[str]) -> list[int]:
    if not words:
        return []
    ids = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    counts = [0] * len(words)
    for w in ids.word_ids():
        if w is not None:
            counts[w] += 1
    return counts


def _prefix_fitting(counts: list[int], budget: int) -> int:
    """How many leading words fit into `budget` subwords."""
    total = 0
    for n, c in enumerate(counts):
        if total + c > budget:
            return n
        total += c
    return len(counts)


def _mask_source(words: list[str], kept: list[tuple[int, int, int, int]], que: str) -> tuple[list[str], list[int]]:
    """The source words with each kept span replaced by `que`, and the word index of each `[QUE]`."""
    out: list[str] = []
    at: list[int] = []
    pos = 0
    for start, end, _, _ in kept:
        out.extend(words[pos:start])
        at.append(len(out))
        out.append(que)
        pos = end
    out.extend(words[pos:])
    return out, at


def build_example(source: list[str], target: list[str], kept: list[tuple[int, int, int, int]], tokenizer: Any, *,
                  que_token: str, max_len_each: int, max_len: int) -> tuple[ClismExample, Counter]:
    """One example from a pair's words and its kept spans (`target_spans`), and the spans truncation dropped."""
    dropped: Counter = Counter()
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    tgt_counts = _subword_counts(tokenizer, target)
    while True:
        masked, que_at = _mask_source(source, kept, que_token)
        src_counts = _subword_counts(tokenizer, masked)
        n_src = _prefix_fitting(src_counts, min(max_len_each, max_len - specials))
        src_used = sum(src_counts[:n_src])
        n_tgt = _prefix_fitting(tgt_counts, min(max_len_each, max_len - specials - src_used))
        survivors = [k for k, q in zip(kept, que_at) if q < n_src and k[3] <= n_tgt]
        if len(survivors) == len(kept):
            break
        dropped["truncated"] += len(kept) - len(survivors)
        kept = survivors
    enc = tokenizer(masked[:n_src], target[:n_tgt], is_split_into_words=True, add_special_tokens=True)
    ids = list(enc["input_ids"])
    seq = enc.sequence_ids()
    words = enc.word_ids()
    segments = [-1 if s is None else s for s in seq]
    first: dict[tuple[int, int], int] = {}
    last: dict[tuple[int, int], int] = {}
    for pos, (s, w) in enumerate(zip(seq, words)):
        if s is None or w is None:
            continue
        first.setdefault((s, w), pos)
        last[(s, w)] = pos
    answers = []
    que_id = tokenizer.convert_tokens_to_ids(que_token)
    for (_, _, t0, t1), q in zip(kept, que_at):
        qpos, a0, a1 = first.get((0, q)), first.get((1, t0)), last.get((1, t1 - 1))
        if qpos is None or a0 is None or a1 is None or ids[qpos] != que_id:
            # a word with no subword at all (characters the vocabulary drops): nothing to point at
            dropped["no_subword"] += 1
            continue
        answers.append((qpos, a0, a1))
    if len(answers) < len(kept):
        # Restore the words of the spans that have no answer, so that X holds a [QUE] for each answer only.
        keep = [k for k, q in zip(kept, que_at) if (0, q) in first and (1, k[2]) in first and (1, k[3] - 1) in last]
        return build_example(source, target, keep, tokenizer, que_token=que_token, max_len_each=max_len_each,
                             max_len=max_len)[0], dropped
    src = tokenizer(source, is_split_into_words=True, add_special_tokens=True, truncation=True,
                    max_length=max_len_each + tokenizer.num_special_tokens_to_add(pair=False))
    source_segments = [-1 if s is None else 0 for s in src.sequence_ids()]
    return ClismExample(ids, segments, answers, list(src["input_ids"]), source_segments), dropped


def build_examples(pairs: Sequence[tuple[list[str], list[str]]], spans: Sequence[Sequence[Span]],
                   links: Sequence[Sequence[tuple[int, int]]], tokenizer: Any, *, que_token: str, max_len_each: int,
                   max_len: int, max_span_words: int = 10) -> tuple[list[ClismExample], BuildStats]:
    """One example per pair with at least one word on each side; `spans` and `links` are per pair."""
    stats = BuildStats()
    examples = []
    for (source, target), found, pair_links in zip(pairs, spans, links, strict=True):
        if not source or not target:
            stats.dropped["empty_side_pairs"] += 1
            continue
        stats.pairs += 1
        stats.spans_found += len(found)
        kept, why = target_spans(found, pair_links, max_span_words=max_span_words)
        stats.dropped.update(why)
        ex, why = build_example(list(source), list(target), kept, tokenizer, que_token=que_token,
                                max_len_each=max_len_each, max_len=max_len)
        stats.dropped.update(why)
        stats.spans_kept += len(ex.answers)
        stats.examples_without_que += not ex.answers
        examples.append(ex)
    return examples, stats
