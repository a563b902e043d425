"""Train a SentencePiece-style Unigram tokenizer locally (the tokenizer of `xbench/tiny-multi-xlmr`).

XLM-R's tokenizer is a SentencePiece Unigram model over NFKC-normalised text with `▁` marking word
starts; this builds the same kind with `tokenizers`' Unigram trainer and wraps it with XLM-R's
special tokens and sentence-pair layout (`<s> A </s></s> B </s>`).

Why the vocabulary is re-ordered after training: `tokenizers` 0.23's Unigram trainer returns the
same set of pieces on every run but in a different order, with scores that differ in the 11th
decimal (measured on the en+de+zh pools, three runs, three tokenizer.json hashes). The order is the
ids, so a fresh machine would build another tiny model. xbench rounds the scores to 6 decimals and
orders the pieces by (score descending, piece). The characters the trainer must keep but never
scored (rare CJK characters, below every learnt piece) get made-up scores, a step of 1e-4 apart in
hash-map order; xbench hands those scores out again in code-point order. Together this makes ids
and segmentation repeatable.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from xbench.errors import ConfigError

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def train_unigram(lines: Iterable[str], vocab_size: int, *, model_max_length: int = 512) -> Any:
    """A `PreTrainedTokenizerFast` with XLM-R's special tokens and a Unigram vocabulary of `vocab_size`
    entries (special tokens included), the same on every run for the same lines."""
    if vocab_size <= len(SPECIALS) + 1:
        raise ConfigError(f"a Unigram vocabulary needs more than {len(SPECIALS) + 1} entries, got {vocab_size}")
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    def pipeline(model: Any) -> Any:
        tok = Tokenizer(model)
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        return tok

    tok = pipeline(models.Unigram())
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(list(lines), trainer)
    import json

    learned = json.loads(tok.to_str())["model"]["vocab"]
    pieces = sorted(((p, round(float(s), 6)) for p, s in learned if p not in SPECIALS), key=lambda x: (-x[1], x[0]))
    pieces = _canonical_tail(pieces)
    vocab = [(p, 0.0) for p in SPECIALS] + pieces
    tok = pipeline(models.Unigram(vocab, unk_id=SPECIALS.index("<unk>"), byte_fallback=False))
    tok.add_special_tokens(SPECIALS)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    # XLM-R has no segment ids (type_vocab_size 1): its inputs are ids and the attention mask.
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                   sep_token="</s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                   model_max_length=model_max_length,
                                   model_input_names=["input_ids", "attention_mask"])


def _canonical_tail(pieces: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """`pieces` (sorted by score) with the single characters scored below every longer piece re-scored in
    code-point order: their order came from a hash map, not from the text."""
    longer = [s for p, s in pieces if len(p) > 1]
    if not longer:
        return pieces
    floor = min(longer)
    tail = [(p, s) for p, s in pieces if len(p) == 1 and s < floor]
    if not tail:
        return pieces
    head = [(p, s) for p, s in pieces if not (len(p) == 1 and s < floor)]
    scores = sorted((s for _, s in tail), reverse=True)
    return head + list(zip(sorted(p for p, _ in tail), scores))
