"""xbench's one word pre-tokeniser for raw text (docs/data.md, "Word pre-tokenisation").

Split on Unicode whitespace, split off every punctuation character, and make every CJK ideograph
a word of its own: BERT's basic pre-tokeniser without lower-casing or accent stripping. The rules
come from `tokenizers` (BertNormalizer's CJK spacing, then BertPreTokenizer), not from new code.
UD and PAN-X are tokenised already and never pass through here.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _pipeline() -> tuple[Any, Any]:
    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=True, strip_accents=False,
                                      lowercase=False)
    return norm, pre_tokenizers.BertPreTokenizer()


def words(text: str) -> list[str]:
    norm, pre = _pipeline()
    return [w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text))]
