"""TreLM's cross-lingual objective CdLM: record building, collation and the Stage-F loss
(docs/methods/trelm.md, "CdLM records" and "The CdLM collator").

A record pairs an input sentence (with one extra [PAD] at the end, the null slot) and an output
sentence, and says for every output position which input position's hidden state moves there
(`align_index`). Links come from the caller (an aligner, or gold links in tests): this module never
aligns, so it does not depend on the aligners.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from xbench.errors import DataFormatError, XbenchError
from xbench.objectives.mlm import mask_tokens

__all__ = [
    "MODEL_INPUT_KEYS",
    "RECORD_KEYS",
    "STAGE_F_REDUCTIONS",
    "CdlmCollator",
    "CdlmFeatures",
    "build_cdlm_record",
    "cdlm_records_for_pair",
    "check_cdlm_record",
    "encode_cdlm_record",
    "read_cdlm_jsonl",
    "stage_f_examples",
    "stage_f_loss",
    "write_cdlm_jsonl",
    "xx_mlm_example",
]

Link = tuple[int, int]
RECORD_KEYS = ("src", "src_lang", "tgt", "tgt_lang", "align_index")
# The collated batch's keys that TrelmBertModel.forward takes; `labels` and `is_mlm` go to the loss.
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "lang_ids", "tri_lang_ids", "ordering_alignment",
                    "ordering_attention_mask")
STAGE_F_REDUCTIONS = ("reference", "per_objective")
StageFReduction = Literal["reference", "per_objective"]
XX_LANG_ID = 1  # the target language's id (docs/methods/trelm.md, "The model")


# ------------------------------------------------------------------ records

def build_cdlm_record(
    src_tokens: Sequence[str],
    tgt_tokens: Sequence[str],
    links: Iterable[Link],
    *,
    src_lang: str,
    tgt_lang: str,
    cls_token: str = "[CLS]",
    sep_token: str = "[SEP]",
    pad_token: str = "[PAD]",
) -> dict[str, Any]:
    """One CdLM record from the two sides' subword tokens (without [CLS]/[SEP]) and the links
    (input index, output index) between them.

    The record's input is `[CLS] src [SEP] [PAD]`, its output `[CLS] tgt [SEP]`; [CLS] and [SEP]
    are linked to each other by construction, and an output position without a link points to the
    null slot (the final [PAD]). Links are applied in sorted (input, output) order, so that when an
    output position has several, the largest input index wins whatever order the aligner wrote.
    """
    n_src, n_tgt = len(src_tokens), len(tgt_tokens)
    links = sorted((int(i), int(j)) for i, j in links)
    bad = [(i, j) for i, j in links if not (0 <= i < n_src and 0 <= j < n_tgt)]
    if bad:
        raise XbenchError(f"CdLM record: links {bad[:5]} lie outside a pair of {n_src} input and {n_tgt} output "
                          "subwords (links index the subwords without [CLS]/[SEP])")
    src = [cls_token, *src_tokens, sep_token, pad_token]
    tgt = [cls_token, *tgt_tokens, sep_token]
    null_slot = len(src) - 1
    align = [null_slot] * len(tgt)
    align[0], align[-1] = 0, n_src + 1
    for i, j in links:
        align[j + 1] = i + 1
    return {"src": src, "src_lang": src_lang, "tgt": tgt, "tgt_lang": tgt_lang, "align_index": align}


def cdlm_records_for_pair(
    en_tokens: Sequence[str],
    xx_tokens: Sequence[str],
    forward: Iterable[Link],
    reverse: Iterable[Link],
    *,
    xx_lang: str,
    en_lang: str = "en",
    **special: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two records of one parallel pair: (en→xx, xx→en).

    Both link sets are written (en index, xx index), as the aligners report them. The en→xx record
    reads `forward` (each xx subword has at most one English source); the xx→en record reads
    `reverse` with the roles swapped (each English subword has at most one xx source).
    """
    en_xx = build_cdlm_record(en_tokens, xx_tokens, forward, src_lang=en_lang, tgt_lang=xx_lang, **special)
    xx_en = build_cdlm_record(xx_tokens, en_tokens, [(j, i) for i, j in reverse], src_lang=xx_lang,
                              tgt_lang=en_lang, **special)
    return en_xx, xx_en


def check_cdlm_record(record: Any, *, where: str = "CdLM record", line: int | None = None) -> None:
    """Raise DataFormatError unless `record` has the shape `build_cdlm_record` gives."""
    def fail(message: str, field: str | None = None) -> None:
        raise DataFormatError(where, message, line=line, field=field)

    if not isinstance(record, dict):
        fail(f"a record must be a JSON object, got {type(record).__name__}")
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        fail(f"missing keys {missing}")
    for key in ("src", "tgt"):
        side = record[key]
        if not isinstance(side, list) or len(side) < 2 or not all(isinstance(t, str) for t in side):
            fail("must be a list of at least two token strings", key)
    for key in ("src_lang", "tgt_lang"):
        if not isinstance(record[key], str) or not record[key]:
            fail("must be a language code", key)
    src, tgt, align = record["src"], record["tgt"], record["align_index"]
    if len(src) < 3:
        fail("must be [CLS] … [SEP] followed by the null slot", "src")
    if not isinstance(align, list) or len(align) != len(tgt):
        fail(f"must be a list of {len(tgt)} input positions, one per output token", "align_index")
    if not all(isinstance(a, int) and not isinstance(a, bool) and 0 <= a < len(src) for a in align):
        fail(f"every entry must be an input position in [0, {len(src)})", "align_index")


def write_cdlm_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Write records as JSONL (one object per line, keys in RECORD_KEYS order), atomically; returns
    the number written."""
    from xbench.atomic import atomic_write_text

    lines = []
    for n, record in enumerate(records):
        check_cdlm_record(dict(record), where=f"record {n} to write to {path}")
        lines.append(json.dumps({k: record[k] for k in RECORD_KEYS}, ensure_ascii=False))
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_cdlm_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a CdLM JSONL file, each checked; blank lines are skipped."""
    from xbench.data.textfiles import read_jsonl

    out = []
    for n, record in read_jsonl(path):
        check_cdlm_record(record, where=str(path), line=n)
        out.append(record)
    return out


# ------------------------------------------------------------------ features

@dataclass(frozen=True)
class CdlmFeatures:
    """One Stage-F example as ids. `src_ids` ends with the null slot; for an MLM example it is the
    output sentence plus that slot and `align_index` is the identity."""

    src_ids: tuple[int, ...]
    tgt_ids: tuple[int, ...]
    align_index: tuple[int, ...]
    src_lang: int
    tgt_lang: int
    is_mlm: bool = False


def encode_cdlm_record(record: Mapping[str, Any], tokenizer: Any, lang_to_id: Mapping[str, int]) -> CdlmFeatures:
    """Token strings to ids with the joint tokenizer (`convert_tokens_to_ids`), languages to ids."""
    check_cdlm_record(dict(record))
    langs = []
    for key in ("src_lang", "tgt_lang"):
        if record[key] not in lang_to_id:
            raise XbenchError(f"CdLM record: language {record[key]!r} is not one of {sorted(lang_to_id)}")
        langs.append(int(lang_to_id[record[key]]))
    src = tokenizer.convert_tokens_to_ids(list(record["src"]))
    tgt = tokenizer.convert_tokens_to_ids(list(record["tgt"]))
    return CdlmFeatures(tuple(src), tuple(tgt), tuple(record["align_index"]), langs[0], langs[1])


def xx_mlm_example(features: CdlmFeatures, pad_id: int, xx_lang_id: int = XX_LANG_ID) -> CdlmFeatures:
    """The MLM example paired with a CdLM example: the xx side (the output of an en→xx record, the
    input of an xx→en one), in its own order, with the null slot kept so every example has one."""
    if features.tgt_lang == xx_lang_id:
        sentence = features.tgt_ids
    elif features.src_lang == xx_lang_id:
        sentence = features.src_ids[:-1]
    else:
        raise XbenchError(f"CdLM example has no side in language id {xx_lang_id} "
                          f"(src {features.src_lang}, tgt {features.tgt_lang})")
    n = len(sentence)
    return CdlmFeatures((*sentence, pad_id), tuple(sentence), tuple(range(n)), xx_lang_id, xx_lang_id, is_mlm=True)


def stage_f_examples(features: Iterable[CdlmFeatures], pad_id: int, xx_lang_id: int = XX_LANG_ID) -> list[CdlmFeatures]:
    """Every record's CdLM example followed by its xx-side MLM example; the caller shuffles them."""
    out: list[CdlmFeatures] = []
    for f in features:
        out.extend((f, xx_mlm_example(f, pad_id, xx_lang_id)))
    return out


# ------------------------------------------------------------------ collator

class CdlmCollator:
    """Pads a list of Stage-F examples into one batch for `TrelmBertModel.forward`.

    Keys: input_ids, attention_mask (0 at the null slot and the padding: the null slot is never an
    attention key), lang_ids, tri_lang_ids (B × 1), ordering_alignment, ordering_attention_mask,
    labels (B × T_out) and is_mlm (B). CdLM labels are the output ids, −100 exactly at padded output
    positions; MLM labels come from `mask_tokens` (80/10/10) drawn from the caller's generator.

    With `reference_quirks=False` the input and output are padded to their own lengths, padded
    output positions point to the null slot and the ordering mask is 0 exactly there. With `True`,
    both are padded to one common length and the ordering mask is all ones, as the reference code
    leaves it (docs/methods/trelm.md, "Reference quirks"); MLM examples then keep the identity
    alignment over the whole length, as in the reference. `pad_to` pads both sides to a fixed
    length instead (the reference pads to its block of 512).
    """

    def __init__(self, *, pad_id: int, mask_id: int, vocab_size: int, special_ids: Iterable[int],
                 reference_quirks: bool = False, mlm_prob: float = 0.15, pad_to: int | None = None) -> None:
        self.pad_id, self.mask_id, self.vocab_size = pad_id, mask_id, vocab_size
        self.special_ids = torch.tensor(sorted(set(special_ids) | {pad_id}), dtype=torch.long)
        self.reference_quirks, self.mlm_prob, self.pad_to = bool(reference_quirks), mlm_prob, pad_to

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, **kw: Any) -> CdlmCollator:
        return cls(pad_id=tokenizer.pad_token_id, mask_id=tokenizer.mask_token_id, vocab_size=len(tokenizer),
                   special_ids=tokenizer.all_special_ids, **kw)

    def _check(self, n: int, ex: CdlmFeatures) -> None:
        len_in, len_out = len(ex.src_ids), len(ex.tgt_ids)
        if len(ex.align_index) != len_out:
            raise XbenchError(f"CdLM example {n}: {len(ex.align_index)} alignment entries for {len_out} outputs")
        if any(not 0 <= a < len_in for a in ex.align_index):
            raise XbenchError(f"CdLM example {n}: align_index points outside its {len_in} input positions")
        if ex.is_mlm and (len_in != len_out + 1 or tuple(ex.src_ids[:-1]) != tuple(ex.tgt_ids)):
            raise XbenchError(f"MLM example {n}: the input must be the output sentence plus the null slot")
        if self.pad_to is not None and max(len_in, len_out) > self.pad_to:
            raise XbenchError(f"CdLM example {n}: {max(len_in, len_out)} positions do not fit pad_to={self.pad_to}")

    def __call__(self, examples: Sequence[CdlmFeatures], generator: torch.Generator) -> dict[str, Tensor]:
        if not examples:
            raise XbenchError("CdLM collator: empty batch")
        for n, ex in enumerate(examples):
            self._check(n, ex)
        b = len(examples)
        lens_in = [len(ex.src_ids) for ex in examples]
        lens_out = [len(ex.tgt_ids) for ex in examples]
        if self.pad_to is not None:
            t_in = t_out = self.pad_to
        elif self.reference_quirks:
            t_in = t_out = max(*lens_in, *lens_out)
        else:
            t_in, t_out = max(lens_in), max(lens_out)

        input_ids = torch.full((b, t_in), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((b, t_in), dtype=torch.long)
        labels = torch.full((b, t_out), -100, dtype=torch.long)
        order = torch.empty((b, t_out), dtype=torch.long)
        order_mask = torch.zeros((b, t_out), dtype=torch.long)
        is_mlm = torch.tensor([ex.is_mlm for ex in examples], dtype=torch.bool)
        for r, ex in enumerate(examples):
            len_in, len_out = lens_in[r], lens_out[r]
            input_ids[r, :len_in] = torch.tensor(ex.src_ids)
            attention_mask[r, : len_in - 1] = 1  # the null slot stays 0
            if self.reference_quirks and ex.is_mlm:
                order[r] = torch.arange(t_out)
            else:
                order[r] = len_in - 1
            order[r, :len_out] = torch.tensor(ex.align_index)
            order_mask[r, :len_out] = 1
            if not ex.is_mlm:
                labels[r, :len_out] = torch.tensor(ex.tgt_ids)
        if self.reference_quirks:
            # Quirk 2: the reference meant to zero the padded positions but compared instead of
            # assigning, so its ordering mask is all ones.
            order_mask.fill_(1)

        mlm_rows = [r for r in range(b) if examples[r].is_mlm]
        if mlm_rows:
            sentences = torch.full((len(mlm_rows), t_out), self.pad_id, dtype=torch.long)
            padded = torch.ones((len(mlm_rows), t_out), dtype=torch.bool)
            for k, r in enumerate(mlm_rows):
                sentences[k, : lens_out[r]] = torch.tensor(examples[r].tgt_ids)
                padded[k, : lens_out[r]] = False
            special = torch.isin(sentences, self.special_ids) | padded
            corrupted, mlm_labels = mask_tokens(sentences, special_mask=special, mask_id=self.mask_id,
                                                vocab_size=self.vocab_size, generator=generator,
                                                mlm_prob=self.mlm_prob)
            for k, r in enumerate(mlm_rows):
                input_ids[r, : lens_out[r]] = corrupted[k, : lens_out[r]]
                labels[r] = mlm_labels[k]

        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "lang_ids": torch.tensor([[ex.src_lang] for ex in examples], dtype=torch.long),
            "tri_lang_ids": torch.tensor([[ex.tgt_lang] for ex in examples], dtype=torch.long),
            "ordering_alignment": order,
            "ordering_attention_mask": order_mask,
            "labels": labels,
            "is_mlm": is_mlm,
        }


# ------------------------------------------------------------------ loss

def stage_f_loss(logits: Tensor, labels: Tensor, is_mlm: Tensor,
                 reduction: StageFReduction = "reference") -> dict[str, Tensor]:
    """The Stage-F batch loss (docs/methods/trelm.md, "Losses").

    "reference": one token-level mean over every labelled position, CdLM and MLM together (CdLM
    labels nearly every position, so it dominates); "per_objective": the mean over CdLM positions
    plus the mean over MLM positions, as two named terms the runner sums.
    """
    if reduction not in STAGE_F_REDUCTIONS:
        raise XbenchError(f"stage_f_reduction must be one of {STAGE_F_REDUCTIONS}, got {reduction!r}")
    token_loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=-100, reduction="none"
    ).view(labels.shape)
    labelled = labels != -100

    def mean(where: Tensor) -> Tensor:
        # A batch with no position of a kind gives 0 for it, still attached to the graph.
        return (token_loss * where).sum() / where.sum().clamp(min=1)

    if reduction == "reference":
        return {"stage_f": mean(labelled)}
    rows = is_mlm.to(labels.device).view(-1, 1)
    return {"cdlm": mean(labelled & ~rows), "mlm": mean(labelled & rows)}
