"""The TreLM model: a BERT with language embeddings and a TRILayer in the middle (docs/methods/trelm.md).

Built over Hugging Face `BertLayer`s rather than as a `PreTrainedModel` subclass, so that the
forward pass of docs/methods/trelm.md ("Forward pass") is spelt out in one place and the
`reference_quirks` switch can reproduce the reference code's behaviour without a second model
class. Weights are saved as safetensors with a JSON config (never a pickle).

Parameter names (the freezing patterns of Stages E and F rely on them):
`embeddings.{word,position,token_type,lang}_embeddings.weight`, `embeddings.LayerNorm.*`,
`encoder.layer.<i>.*` (the L original layers), `tri_layer.*`, `pooler.*`, `mlm_head.*`. The MLM
decoder is the word-embedding matrix itself (tied by construction, so it has one name).
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

import torch
from torch import Tensor, nn

from xbench.errors import XbenchError
from xbench.models.averaging import combine_by_pattern, halfway_state_dicts
from xbench.models.freezing import freeze, unfreeze

if TYPE_CHECKING:
    from transformers import BertConfig, PreTrainedModel

__all__ = [
    "CONFIG_FILE",
    "EN",
    "FORMAT",
    "WEIGHTS_FILE",
    "XX",
    "TrelmBertModel",
    "TrelmOutput",
    "combine_halves",
    "create_trelm",
    "freeze_stage_e",
    "freeze_stage_f",
    "load_trelm",
    "save_trelm",
]

EN, XX = 0, 1  # language ids: the source language and the target language (docs/methods/trelm.md)
LANG_INIT_STD = 0.02

FORMAT = "xbench-trelm-bert"
FORMAT_VERSION = 1
CONFIG_FILE = "trelm_config.json"
WEIGHTS_FILE = "model.safetensors"

StageFRun = Literal["above_half", "below_half"]


@dataclass
class TrelmOutput:
    """What one forward pass gives: MLM logits (None when not asked for), the top layer's states
    (the input of any downstream head), the pooled [CLS] state and, on request, every layer's states."""

    logits: Tensor | None
    last_hidden_state: Tensor
    pooler_output: Tensor
    hidden_states: tuple[Tensor, ...] | None = None


class TrelmEmbeddings(nn.Module):
    """BERT's embeddings plus a language embedding; the position table is also read by the TRILayer."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.lang_embeddings = nn.Embedding(2, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def positions(self, length: int) -> Tensor:
        """E_pos[0 … length−1], shape 1 × length × H."""
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence of {length} positions; the model has {self.position_embeddings.num_embeddings}")
        ids = torch.arange(length, device=self.position_embeddings.weight.device)
        return self.position_embeddings(ids).unsqueeze(0)

    def forward(self, input_ids: Tensor, lang_ids: Tensor) -> Tensor:
        word = self.word_embeddings(input_ids)
        token_type = self.token_type_embeddings(torch.zeros_like(input_ids))
        h = word + self.positions(input_ids.size(1)) + token_type + self.lang_embeddings(lang_ids)
        return self.dropout(self.LayerNorm(h))


class TrelmMLMHead(nn.Module):
    """BERT's MLM head without its own decoder matrix: the word embeddings are passed in, so the
    tie to a replaced vocabulary can never come undone."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        from transformers.models.bert.modeling_bert import BertPredictionHeadTransform

        self.transform = BertPredictionHeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: Tensor, decoder_weight: Tensor) -> Tensor:
        return nn.functional.linear(self.transform(hidden), decoder_weight, self.bias)


class _Encoder(nn.Module):
    """Holds the L original layers under `encoder.layer.<i>`, the names HF's BERT gives them."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        from transformers.models.bert.modeling_bert import BertLayer

        self.layer = nn.ModuleList([BertLayer(config, layer_idx=i) for i in range(config.num_hidden_layers)])


def _expand_lang(ids: Tensor | int | None, batch: int, length: int, device: torch.device, name: str) -> Tensor:
    if ids is None or isinstance(ids, int):
        return torch.full((batch, length), XX if ids is None else ids, dtype=torch.long, device=device)
    if ids.dim() != 2 or ids.size(0) != batch or ids.size(1) not in (1, length):
        raise ValueError(f"{name} must be B x 1 or B x {length} for a batch of {batch}, got {tuple(ids.shape)}")
    return ids.expand(batch, length)


class TrelmBertModel(nn.Module):
    """The TreLM encoder with its MLM head (docs/methods/trelm.md, "The model").

    `reference_quirks=True` reproduces quirks 1–3 of the reference code (docs/methods/trelm.md,
    "Reference quirks"): the bottom language embedding is always id 1, and the layers above the
    TRILayer keep the input-side mask (input and output must then have the same length).
    """

    def __init__(self, config: BertConfig, *, reference_quirks: bool = False) -> None:
        super().__init__()
        from transformers.models.bert.modeling_bert import BertLayer, BertPooler

        _check_even(config.num_hidden_layers)
        if getattr(config, "_attn_implementation", None) is None:
            config._attn_implementation = "sdpa"
        self.config = config
        self.reference_quirks = bool(reference_quirks)
        self.tri_position = config.num_hidden_layers // 2
        self.embeddings = TrelmEmbeddings(config)
        self.encoder = _Encoder(config)
        self.tri_layer = BertLayer(config, layer_idx=self.tri_position)
        self.pooler = BertPooler(config)
        self.mlm_head = TrelmMLMHead(config)

    @property
    def num_transformer_layers(self) -> int:
        """L + 1: the original layers and the TRILayer."""
        return len(self.encoder.layer) + 1

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def _mask(self, mask2d: Tensor, hidden: Tensor) -> Any:
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=mask2d)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        lang_ids: Tensor | int | None = None,
        tri_lang_ids: Tensor | int | None = None,
        ordering_alignment: Tensor | None = None,
        ordering_attention_mask: Tensor | None = None,
        *,
        output_hidden_states: bool = False,
        return_logits: bool = True,
    ) -> TrelmOutput:
        """Encode `input_ids` (B × T_in); the output has T_out = ordering_alignment's length, or T_in.

        `lang_ids` (B × 1 or B × T_in) defaults to 1 (xx), the downstream setting; `tri_lang_ids`
        (B × 1 or B × T_out) defaults to `lang_ids`. `ordering_alignment[b, j]` is the input position
        whose lower-half state moves to output position j; it needs `ordering_attention_mask`
        (B × T_out), the output side's padding mask.
        """
        batch, t_in = input_ids.shape
        device = input_ids.device
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if ordering_alignment is not None and ordering_attention_mask is None:
            raise ValueError("ordering_alignment needs ordering_attention_mask (the output side's padding mask)")
        t_out = t_in if ordering_alignment is None else ordering_alignment.size(1)

        # Quirk 1: the reference never hands lang_ids to its embedding module, which then uses id 1.
        bottom_lang = _expand_lang(XX if self.reference_quirks else lang_ids, batch, t_in, device, "lang_ids")
        tri_lang = _expand_lang(lang_ids if tri_lang_ids is None else tri_lang_ids, batch, t_out, device,
                                "tri_lang_ids")

        hidden = self.embeddings(input_ids, bottom_lang)
        all_hidden = [hidden] if output_hidden_states else None
        in_mask = self._mask(attention_mask, hidden)
        for layer in self.encoder.layer[: self.tri_position]:
            hidden = layer(hidden, in_mask)
            if all_hidden is not None:
                all_hidden.append(hidden)

        if ordering_alignment is None:
            gathered = hidden
            tri_mask2d = attention_mask if ordering_attention_mask is None or self.reference_quirks \
                else ordering_attention_mask
        else:
            if ordering_alignment.shape != (batch, t_out) or ordering_attention_mask.shape != (batch, t_out):
                raise ValueError(f"ordering_alignment {tuple(ordering_alignment.shape)} and ordering_attention_mask "
                                 f"{tuple(ordering_attention_mask.shape)} must both be B x T_out")
            if bool(((ordering_alignment < 0) | (ordering_alignment >= t_in)).any()):
                raise ValueError(f"ordering_alignment points outside the {t_in} input positions")
            index = ordering_alignment.to(device).unsqueeze(-1).expand(batch, t_out, hidden.size(-1))
            gathered = torch.gather(hidden, 1, index)
            tri_mask2d = ordering_attention_mask
        # The positions are added again so the moved states learn their new order, and the language
        # is the output side's (docs/methods/trelm.md, "Forward pass", step 3). No LayerNorm here.
        tri_input = gathered + self.embeddings.positions(t_out) + self.embeddings.lang_embeddings(tri_lang)
        hidden = self.tri_layer(tri_input, self._mask(tri_mask2d, tri_input))
        if all_hidden is not None:
            all_hidden.append(hidden)

        if self.reference_quirks:
            # Quirk 3: the upper layers keep the input-side mask, which only lines up when both sides
            # share one length (the CdLM collator pads them so in this mode).
            if t_out != t_in:
                raise ValueError(f"reference_quirks needs input and output of one length, got {t_in} and {t_out}")
            upper_mask2d = attention_mask
        else:
            upper_mask2d = tri_mask2d
        upper_mask = self._mask(upper_mask2d, hidden)
        for layer in self.encoder.layer[self.tri_position:]:
            hidden = layer(hidden, upper_mask)
            if all_hidden is not None:
                all_hidden.append(hidden)

        logits = self.mlm_head(hidden, self.embeddings.word_embeddings.weight) if return_logits else None
        return TrelmOutput(logits=logits, last_hidden_state=hidden, pooler_output=self.pooler(hidden),
                           hidden_states=tuple(all_hidden) if all_hidden is not None else None)


def _check_even(num_layers: int) -> None:
    if num_layers % 2:
        raise XbenchError(f"TreLM needs an even number of encoder layers (the TRILayer goes after layer L/2 − 1); "
                          f"the source model has {num_layers}")


def _source_bert(model: Any) -> Any:
    from transformers import BertModel

    bert = getattr(model, "bert", None)
    if not isinstance(bert, BertModel):
        kind = getattr(getattr(model, "config", None), "model_type", None)
        raise XbenchError(f"TreLM transfers a BERT masked LM (a model whose .bert is a BertModel, such as "
                          f"BertForMaskedLM); got {type(model).__name__}" + (f" (model_type {kind!r})" if kind else ""))
    return bert


def create_trelm(
    bert_mlm_model: PreTrainedModel,
    new_word_embeddings: Tensor | None = None,
    pad_token_id: int | None = None,
    *,
    reference_quirks: bool = False,
    seed: int = 0,
) -> TrelmBertModel:
    """Stage D (docs/methods/trelm.md, "Building the model"): the source BERT with replaced word
    embeddings, language embeddings N(0, 0.02), a TRILayer copied from layer L/2, and a fresh MLM
    head tied to the new embeddings. The source model is not modified.

    `pad_token_id` is the new tokenizer's; it is required with `new_word_embeddings`. Every fresh
    tensor is drawn from a generator seeded with `seed`; the global RNG is left as it was.
    """
    bert = _source_bert(bert_mlm_model)
    src_config = bert_mlm_model.config
    _check_even(src_config.num_hidden_layers)
    config = copy.deepcopy(src_config)
    hidden_size = config.hidden_size
    if new_word_embeddings is not None:
        if new_word_embeddings.dim() != 2 or new_word_embeddings.size(1) != hidden_size:
            raise XbenchError(f"new word embeddings must be V x {hidden_size} (the source's hidden size), "
                              f"got {tuple(new_word_embeddings.shape)}")
        if pad_token_id is None:
            raise XbenchError("create_trelm: pass the new tokenizer's pad_token_id with the new word embeddings")
        config.vocab_size = new_word_embeddings.size(0)
    if pad_token_id is not None:
        if not 0 <= pad_token_id < config.vocab_size:
            raise XbenchError(f"pad_token_id {pad_token_id} lies outside the vocabulary of {config.vocab_size}")
        config.pad_token_id = pad_token_id
    ref_weight = bert.embeddings.word_embeddings.weight
    gen = torch.Generator().manual_seed(seed)

    # Constructing the modules draws their throw-away initial weights from the global RNG; fork it so
    # that building a model never shifts what the caller's code draws next.
    with torch.random.fork_rng(devices=[]):
        model = TrelmBertModel(config, reference_quirks=reference_quirks)

    def normal(shape: tuple[int, ...], std: float) -> Tensor:
        return torch.normal(0.0, std, shape, generator=gen)

    std = config.initializer_range
    with torch.no_grad():
        emb, src_emb = model.embeddings, bert.embeddings
        words = src_emb.word_embeddings.weight if new_word_embeddings is None else new_word_embeddings
        emb.word_embeddings.weight.copy_(words.detach().to(torch.float32))
        for name in ("position_embeddings", "token_type_embeddings", "LayerNorm"):
            getattr(emb, name).load_state_dict(getattr(src_emb, name).state_dict())
        emb.lang_embeddings.weight.copy_(normal(tuple(emb.lang_embeddings.weight.shape), LANG_INIT_STD))
        for mine, theirs in zip(model.encoder.layer, bert.encoder.layer):
            mine.load_state_dict(theirs.state_dict())
        model.tri_layer.load_state_dict(bert.encoder.layer[model.tri_position].state_dict())
        if bert.pooler is not None:
            model.pooler.load_state_dict(bert.pooler.state_dict())
        else:  # BertForMaskedLM has none; a fresh one, as BERT initialises it
            model.pooler.dense.weight.copy_(normal(tuple(model.pooler.dense.weight.shape), std))
            model.pooler.dense.bias.zero_()
        transform = model.mlm_head.transform
        transform.dense.weight.copy_(normal(tuple(transform.dense.weight.shape), std))
        transform.dense.bias.zero_()
        transform.LayerNorm.weight.fill_(1.0)
        transform.LayerNorm.bias.zero_()
        model.mlm_head.bias.zero_()
    return model.to(device=ref_weight.device, dtype=ref_weight.dtype)


# ------------------------------------------------------------------ freezing (Stages E and F)

def freeze_stage_e(model: TrelmBertModel) -> list[str]:
    """Commonality training: the L original layers frozen, everything else (embeddings, TRILayer,
    pooler, MLM head) trainable. Returns the frozen parameter names."""
    unfreeze(model, "*")
    return freeze(model, "encoder.layer.*")


def freeze_stage_f(model: TrelmBertModel, run: StageFRun) -> list[str]:
    """Transfer training: the above-half run (en→xx) freezes layers < L/2, the below-half run (xx→en)
    layers ≥ L/2; the other half, the embeddings, the TRILayer, the pooler and the head train.
    Returns the frozen parameter names."""
    if run not in ("above_half", "below_half"):
        raise XbenchError(f"Stage F run must be 'above_half' or 'below_half', got {run!r}")
    t, n = model.tri_position, len(model.encoder.layer)
    frozen = range(t) if run == "above_half" else range(t, n)
    unfreeze(model, "*")
    return freeze(model, [f"encoder.layer.{i}.*" for i in frozen])


# ------------------------------------------------------------------ Stage G

_LAYER_KEY = re.compile(r"^encoder\.layer\.(\d+)\.")
SHARED_PATTERNS = ("embeddings.*", "tri_layer.*", "pooler.*", "mlm_head.*")


def combine_halves(above: Mapping[str, Tensor], below: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Stage G: layers < L/2 from the below-half run, layers ≥ L/2 from the above-half run, and every
    shared tensor (embeddings, TRILayer, pooler, MLM head) the mean (a + b) / 2 in its own dtype.
    A key outside these groups is an error, so a new module cannot be combined by accident."""
    indices = sorted({int(m.group(1)) for k in above if (m := _LAYER_KEY.match(k))})
    if not indices or indices != list(range(len(indices))):
        raise XbenchError(f"combine_halves: the state dicts have no contiguous encoder.layer.<i> keys ({indices[:5]})")
    _check_even(len(indices))
    t = len(indices) // 2
    shared_keys = [k for k in above if not _LAYER_KEY.match(k)]
    mean = halfway_state_dicts({k: above[k] for k in shared_keys}, {k: below[k] for k in shared_keys if k in below})
    # combine_by_pattern wants every part to have every key; the layer keys of `mean` are never
    # chosen (the layer patterns come first), so they are filled with the above-half's tensors.
    mean.update({k: v for k, v in above.items() if _LAYER_KEY.match(k)})
    parts: dict[str, Mapping[str, Tensor]] = {}
    for i in indices:
        parts[f"encoder.layer.{i}.*"] = below if i < t else above
    for pattern in SHARED_PATTERNS:
        parts[pattern] = mean
    return combine_by_pattern(parts)


# ------------------------------------------------------------------ saving and loading

def save_trelm(model: TrelmBertModel, path: str | Path) -> Path:
    """Write `trelm_config.json` and `model.safetensors` into the folder `path`, atomically."""
    from safetensors.torch import save_file

    from xbench.atomic import COMPLETE_MARKER, atomic_dir

    path = Path(path)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "reference_quirks": model.reference_quirks,
        "bert_config": model.config.to_dict(),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(path) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / COMPLETE_MARKER).write_text("")
    return path


def load_trelm(path: str | Path, *, attn_implementation: str = "sdpa") -> TrelmBertModel:
    """The model `save_trelm` wrote; a folder that is not one is an error naming what is wrong."""
    from safetensors.torch import load_file
    from transformers import BertConfig

    path = Path(path)
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    missing = [p.name for p in (config_path, weights_path) if not p.is_file()]
    if missing:
        raise XbenchError(f"{path}: not a saved TreLM model (missing {', '.join(missing)})")
    try:
        saved = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise XbenchError(f"{config_path}: unreadable TreLM config ({exc})") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or saved.get("format_version") != FORMAT_VERSION:
        raise XbenchError(f"{config_path}: expected format {FORMAT!r} version {FORMAT_VERSION}, "
                          f"got {saved.get('format') if isinstance(saved, dict) else saved!r:.60}")
    config = BertConfig.from_dict(saved["bert_config"])
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        model = TrelmBertModel(config, reference_quirks=bool(saved.get("reference_quirks", False)))
    state = load_file(str(weights_path))
    dtype = next(iter(state.values())).dtype if state else torch.float32
    model.to(dtype)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise XbenchError(f"{weights_path}: weights do not fit the saved config ({str(exc).splitlines()[0]})") from None
    return model
