"""QueQA: extractive QA through the `[QUE]` token (docs/methods/clism.md, "QA with the [QUE] head").

The input is `[CLS] question [QUE] [SEP] passage [SEP]` (the extractive-QA task type appends the marker
when a method asks for it); the final state of the question's `[QUE]` and the span head CLISM trained
(W_s, W_e) score every position as start and end, instead of the usual start/end classifier. Outputs
carry `start_logits`/`end_logits` like HF's QA models, with padding at the dtype's minimum, so the task
type's loss (a softmax over the non-pad positions) and its SQuAD post-processing (passage tokens only,
n-best, maximum answer length) work unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xbench.errors import XbenchError
from xbench.objectives.clism import QueSpanHead

HEAD_FILE = "que_head.safetensors"


@dataclass
class SpanLogits:
    start_logits: torch.Tensor
    end_logits: torch.Tensor


class QueQA(nn.Module):
    def __init__(self, encoder: nn.Module, head: QueSpanHead, que_id: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.que_id = que_id
        self.config = encoder.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> SpanLogits:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**inputs).last_hidden_state
        is_que = input_ids == self.que_id
        missing = (~is_que.any(dim=1)).nonzero().flatten().tolist()
        if missing:
            raise XbenchError(f"QueQA: input row(s) {missing[:5]} have no [QUE] token (id {self.que_id}); the question "
                              "must end with it (the task type's question_marker)")
        rows = torch.arange(len(input_ids), device=input_ids.device)
        pos = is_que.int().argmax(dim=1)  # the first [QUE] of each row: the question's
        start, end = self.head(hidden, hidden[rows, pos], rows, attention_mask.bool())
        return SpanLogits(start, end)


def que_qa_model(encoder_path: str, que_token: str = "[QUE]") -> QueQA:
    """The encoder of `encoder_path` with the `[QUE]` span head saved beside it by CLISM's pretraining."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from xbench.loading import load_pretrained

    tokenizer = load_pretrained(AutoTokenizer, encoder_path)
    if que_token not in tokenizer.get_vocab():
        raise XbenchError(f"{encoder_path}: the tokenizer has no {que_token} token, so the [QUE] QA head cannot be "
                          "used on this encoder")
    # No pooler: QueQA never reads it, and a parameter without gradients breaks data-parallel training.
    encoder = load_pretrained(AutoModel, encoder_path, add_pooling_layer=False)
    head = QueSpanHead(encoder.config.hidden_size)
    weights = Path(encoder_path) / HEAD_FILE
    if not weights.is_file():
        raise XbenchError(f"{encoder_path}: no {HEAD_FILE}, the span head CLISM's pretraining trained; the [QUE] QA "
                          "head reuses it")
    head.load_state_dict(load_file(str(weights)))
    return QueQA(encoder, head, tokenizer.convert_tokens_to_ids(que_token))
