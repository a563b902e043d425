"""TreLM downstream (Stage I; docs/methods/trelm.md, "Fine-tuning"): the task type's own head over the
L + 1-layer TreLM encoder, for every task type whose model holds one BERT encoder.

The L + 1-layer model cannot be saved as a Hugging Face BERT: the TRILayer's input adds the position
and language embeddings a second time, which no BertModel does. So the encoder folder holds the TreLM
weights (`trelm/`, xbench.models.trelm.save_trelm), the joint tokenizer, and a `downstream-shell/`: a
BERT config of the same width and dropout with no layers and a one-entry vocabulary (a few kB of
weights). Fine-tuning builds the task type's model from the shell (`task_type.build_model`, so the
classification, QA, token-labelling and parsing heads are exactly the ones every baseline gets) and
then puts the TreLM encoder where the shell's BertModel was. The TreLM encoder runs as Stage I says:
no alignment, the TRILayer in place, language id 1 (xx) for every input, and token type 0 for every
position, as its forward pass defines (token-type ids are accepted and not used).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from xbench.errors import XbenchError
from xbench.models.trelm import XX, TrelmBertModel, load_trelm, save_trelm

MODEL_DIR = "trelm"
SHELL_DIR = "downstream-shell"
HEAD_NAME = "trelm-encoder"
DOWNSTREAM_VERSION = 1  # bump when what the head hook builds changes


class TrelmDownstreamEncoder(nn.Module):
    """Stands where a task model has its BertModel: takes BertModel's arguments, returns its outputs
    (`last_hidden_state`, `pooler_output`), computed by the TreLM encoder with language id 1."""

    def __init__(self, trelm: TrelmBertModel, lang_id: int = XX) -> None:
        super().__init__()
        # The MLM head is not part of a downstream model (BertFor*'s heads drop BERT's MLM head alike).
        trelm.mlm_head = None  # type: ignore[assignment]
        self.trelm = trelm
        self.config = trelm.config
        self.lang_id = lang_id

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, **_: Any) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

        if input_ids is None or inputs_embeds is not None or position_ids is not None:
            raise XbenchError("the TreLM encoder takes input_ids (with their own positions), not inputs_embeds "
                              "or position_ids")
        out = self.trelm(input_ids, attention_mask, lang_ids=self.lang_id, return_logits=False)
        return BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=out.last_hidden_state,
                                                            pooler_output=out.pooler_output)


def write_encoder_folder(model: TrelmBertModel, tokenizer: Any, out: Path) -> None:
    """The encoder folder fine-tuning reads: the joint tokenizer, the TreLM weights and the shell."""
    from transformers import BertConfig, BertModel

    from xbench.atomic import save_pretrained_atomic

    tokenizer.save_pretrained(out)
    save_trelm(model, out / MODEL_DIR)
    shell = BertConfig.from_dict({**model.config.to_dict(), "num_hidden_layers": 0, "vocab_size": 1,
                                  "pad_token_id": 0, "max_position_embeddings": 1, "type_vocab_size": 1,
                                  "architectures": ["BertModel"]})
    with torch.random.fork_rng(devices=[]):  # the shell's own weights are never used; keep the caller's RNG
        torch.manual_seed(0)
        save_pretrained_atomic(BertModel(shell), out / SHELL_DIR)


def swap_encoder(task_model: nn.Module, encoder: nn.Module) -> nn.Module:
    """Put `encoder` where `task_model` has its one BertModel child (`bert` in BertFor*, `encoder` in
    the biaffine parser); a model with none, or several, is refused."""
    from transformers import BertModel

    names = [name for name, child in task_model.named_children() if isinstance(child, BertModel)]
    if len(names) != 1:
        raise XbenchError(f"TreLM fine-tunes the task type's model with its BERT encoder replaced, but "
                          f"{type(task_model).__name__} has {len(names)} BertModel children "
                          f"({', '.join(names) or 'none'}); this task type's model cannot take the TreLM encoder")
    setattr(task_model, names[0], encoder)
    return task_model


def trelm_head(encoder_path: str, task_type: Any) -> nn.Module:
    """The `FinetuneHooks.head` of trelm and scratch-trelm: the task type's model, built around the shell,
    with the TreLM encoder in place of the shell's BertModel."""
    folder = Path(encoder_path)
    if not (folder / SHELL_DIR).is_dir():
        raise XbenchError(f"{folder}: not a TreLM encoder folder (no {SHELL_DIR}/); rebuild it")
    model = task_type.build_model(str(folder / SHELL_DIR))
    return swap_encoder(model, TrelmDownstreamEncoder(load_trelm(folder / MODEL_DIR)))
