"""Embedding initialisers for a new target vocabulary (docs/methods/README.md, "Shared building blocks") and
CLP-Transfer (docs/methods/clp.md, "Initialisation").

Every initialiser returns a matrix with one row per target-tokenizer id, in the dtype of the
source embeddings. CLP arithmetic runs in float64 and is cast once at the end (docs/methods/clp.md,
"Departures from the paper": the reference code leaves the float64 matrix uncast).
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, Mapping

import torch
from torch import Tensor, nn

from xbench.errors import ConfigError, XbenchError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "ClpReport",
    "ClpTransferReport",
    "SMALL_DENOMINATOR",
    "SmallDenominatorWarning",
    "clp_embeddings",
    "clp_transfer",
    "clp_weights",
    "copy_overlap",
    "random_init",
]

# |Σ cos| below this makes a CLP row's weights ill-conditioned (docs/methods/clp.md, "Initialisation").
SMALL_DENOMINATOR = 1e-6
# Word-piece markers stripped by fuzzy matching (docs/methods/README.md): WordPiece, byte-level BPE, SentencePiece.
_FUZZY_PREFIXES = ("##", "Ġ", "▁")
# float64 elements of one missing × overlap similarity block (128 MiB); bounds memory for
# BLOOM-sized vocabularies, where the full block would take several GiB.
_BLOCK_ELEMENTS = 1 << 24
# How many offending tokens a warning or report names before it abbreviates.
_NAMED_TOKENS = 20

RandomScheme = Literal["source_stats", "model_init"]
SmallDenominatorPolicy = Literal["warn", "fallback_mean"]


class SmallDenominatorWarning(UserWarning):
    """A CLP row whose cosine similarities to the overlap sum to almost zero."""


@dataclass
class ClpReport:
    """What CLP did to one vocabulary; `to_dict()` goes into the stage record."""

    overlap: int
    missing: int
    small_denominator: int
    small_denominator_tokens: list[str]
    on_small_denominator: str
    # max over missing rows of |Σ_u w(v, u) − 1| in float64 (docs/methods/clp.md, "Testable properties").
    max_weight_sum_error: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClpTransferReport(ClpReport):
    """`ClpReport` plus how the output layer of the transferred model was built."""

    vocab_size: int
    # "tied", "clp", "copy_input", or "none" for a model without an output layer.
    output_embeddings: str
    output_bias: bool


# --------------------------------------------------------------------------- helpers


def _describe(tokenizer: PreTrainedTokenizerBase) -> str:
    name = getattr(tokenizer, "name_or_path", "") or "<unnamed>"
    return f"{type(tokenizer).__name__} '{name}' ({len(tokenizer)} entries)"


def _source_stats_rows(source: Tensor, num_rows: int, seed: int) -> Tensor:
    """float64 rows drawn per dimension from N(μ_s, σ_s²) of `source` (population σ, as np.std)."""
    src = source.detach().to(torch.float64)
    mean, std = src.mean(0), src.std(0, correction=0)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(num_rows, src.shape[1], generator=gen, dtype=torch.float64)
    return mean + std * noise.to(src.device)


def _canonical(token: str) -> str:
    for prefix in _FUZZY_PREFIXES:
        if token.startswith(prefix):
            token = token[len(prefix):]
            break
    return token.lower()


def _overlap(
    source_vocab: Mapping[str, int], target_vocab: Mapping[str, int], match: str
) -> tuple[list[int], list[int]]:
    """(target ids, source ids) of overlapping tokens, ordered by target id."""
    if match == "exact":
        pairs = [(t_id, source_vocab[tok]) for tok, t_id in target_vocab.items() if tok in source_vocab]
    elif match == "fuzzy":
        # Several source tokens can share a canonical form ("The", "Ġthe", "the"): an exact key
        # match wins, otherwise the lowest source id, so the choice is deterministic.
        by_form: dict[str, int] = {}
        for tok, s_id in sorted(source_vocab.items(), key=lambda kv: kv[1]):
            by_form.setdefault(_canonical(tok), s_id)
        by_form.pop("", None)  # a bare marker ("##", "Ġ") carries no content to match on
        pairs = []
        for tok, t_id in target_vocab.items():
            s_id = source_vocab.get(tok, by_form.get(_canonical(tok)))
            if s_id is not None:
                pairs.append((t_id, s_id))
    else:
        raise ConfigError(f"unknown overlap match {match!r}; expected 'exact' or 'fuzzy'")
    pairs.sort()
    return [t for t, _ in pairs], [s for _, s in pairs]


def _check_ids(vocab: Mapping[str, int], rows: int, what: str) -> None:
    bad = [tok for tok, i in vocab.items() if not 0 <= i < rows]
    if bad:
        raise XbenchError(
            f"{what}: {len(bad)} vocabulary id(s) outside the {rows} available rows, e.g. {bad[0]!r} -> {vocab[bad[0]]}"
        )


def _unit_rows(x: Tensor) -> Tensor:
    # A zero vector has no direction: its cosine with everything is taken as 0.
    norm = x.norm(dim=1, keepdim=True)
    return x / torch.where(norm > 0, norm, torch.ones_like(norm))


def _name_tokens(tokens: list[str]) -> str:
    shown = ", ".join(repr(t) for t in tokens[:_NAMED_TOKENS])
    more = len(tokens) - _NAMED_TOKENS
    return shown + (f" and {more} more" if more > 0 else "")


# --------------------------------------------------------------------------- initialisers


def random_init(
    source_model: PreTrainedModel,
    source_tokenizer: PreTrainedTokenizerBase,
    target_tokenizer: PreTrainedTokenizerBase,
    *,
    scheme: RandomScheme = "source_stats",
    seed: int = 42,
) -> Tensor:
    """Random target embeddings, one row per target id (docs/methods/README.md, "Shared building blocks").

    `scheme="source_stats"`: each dimension drawn from N(μ_s, σ_s²) of the source input embeddings
    (the CLP/langsfer rule). `scheme="model_init"`: the source model's own `_init_weights` applied
    to a fresh embedding. Both are seeded and leave the global RNG untouched. `source_tokenizer`
    is unused; it is accepted so that all initialisers share one signature.
    """
    source_emb = source_model.get_input_embeddings().weight
    rows, dim = len(target_tokenizer), source_emb.shape[1]
    if scheme == "source_stats":
        return _source_stats_rows(source_emb, rows, seed).to(source_emb.dtype)
    if scheme == "model_init":
        emb = nn.Embedding(rows, dim, padding_idx=target_tokenizer.pad_token_id, dtype=source_emb.dtype)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            source_model._init_weights(emb)
        return emb.weight.detach().to(source_emb.device)
    raise ConfigError(f"unknown random init scheme {scheme!r}; expected 'source_stats' or 'model_init'")


def copy_overlap(
    source_model: PreTrainedModel,
    source_tokenizer: PreTrainedTokenizerBase,
    target_tokenizer: PreTrainedTokenizerBase,
    *,
    match: Literal["exact", "fuzzy"] = "exact",
    random_scheme: RandomScheme = "source_stats",
    seed: int = 42,
) -> Tensor:
    """Rows of tokens in both vocabularies copied from the source; the others from `random_init`.

    `match="fuzzy"` compares tokens lower-cased with one leading `##`, `Ġ` or `▁` stripped; an exact
    key match still takes precedence over a fuzzy one.
    """
    source_emb = source_model.get_input_embeddings().weight
    out = random_init(source_model, source_tokenizer, target_tokenizer, scheme=random_scheme, seed=seed)
    target_vocab = target_tokenizer.get_vocab()
    _check_ids(target_vocab, out.shape[0], f"target tokenizer {_describe(target_tokenizer)}")
    t_ids, s_ids = _overlap(source_tokenizer.get_vocab(), target_vocab, match)
    out[t_ids] = source_emb.detach()[s_ids]
    return out


def clp_weights(helper_missing: Tensor, helper_overlap: Tensor) -> tuple[Tensor, Tensor]:
    """CLP weights w(v, u) = cos(H[v], H[u]) / Σ_{u'∈O} cos(H[v], H[u']) (docs/methods/clp.md,
    "Initialisation"), in float64.

    Rows of `helper_missing` are the helper vectors of missing tokens, rows of `helper_overlap`
    those of all overlapping tokens. No top-k, no softmax, negative similarities kept. Returns
    the |M| × |O| weights and the |M| denominators (callers guard the near-zero ones).
    """
    cos = _unit_rows(helper_missing.to(torch.float64)) @ _unit_rows(helper_overlap.to(torch.float64)).T
    denom = cos.sum(dim=1)
    return cos / denom.unsqueeze(1), denom


def _clp_fill(
    matrices: list[Tensor],
    source_vocab: Mapping[str, int],
    target_vocab: Mapping[str, int],
    helper_emb: Tensor,
    *,
    num_rows: int,
    on_small_denominator: str,
    seed: int,
    source_name: str,
    target_name: str,
) -> tuple[list[Tensor], ClpReport]:
    """CLP for several per-token matrices sharing one vocabulary (input, untied output, bias).

    The weights depend only on the helper and the overlap, so they are computed once per block
    and applied to every matrix.
    """
    if on_small_denominator not in ("warn", "fallback_mean"):
        raise ConfigError(
            f"unknown on_small_denominator {on_small_denominator!r}; expected 'warn' or 'fallback_mean'"
        )
    if len(set(target_vocab.values())) != len(target_vocab):
        raise XbenchError(f"{target_name}: several tokens share one id; CLP needs one row per token")
    _check_ids(source_vocab, matrices[0].shape[0], source_name)
    _check_ids(target_vocab, num_rows, target_name)
    _check_ids(target_vocab, helper_emb.shape[0], f"helper embeddings for {target_name}")

    t_over, s_over = _overlap(source_vocab, target_vocab, "exact")
    if not t_over:
        raise XbenchError(
            f"CLP-Transfer: the vocabularies of {target_name} (helper/target) and {source_name} (source) "
            "share no token, so no target embedding can be built from source rows. Use tokenizers that "
            "share tokens, e.g. byte-level BPE on both sides (the 256 byte symbols always overlap)."
        )
    overlap_ids = set(t_over)
    missing = sorted((t_id, tok) for tok, t_id in target_vocab.items() if t_id not in overlap_ids)
    t_miss = [t_id for t_id, _ in missing]

    helper = helper_emb.detach().to(device=matrices[0].device, dtype=torch.float64)
    h_over = helper[t_over]
    # Step 2: every row starts random, so ids without a vocabulary entry still get a sane row.
    outs = [_source_stats_rows(m, num_rows, seed) for m in matrices]
    src_over = [m.detach()[s_over].to(torch.float64) for m in matrices]

    small_tokens: list[str] = []
    max_err = 0.0
    block = max(1, _BLOCK_ELEMENTS // len(t_over))
    for start in range(0, len(t_miss), block):
        rows = t_miss[start : start + block]
        weights, denom = clp_weights(helper[rows], h_over)
        max_err = max(max_err, (weights.sum(dim=1) - 1).abs().max().item())
        small = denom.abs() < SMALL_DENOMINATOR
        small_tokens += [missing[start + i][1] for i in small.nonzero().flatten().tolist()]
        for out, src in zip(outs, src_over):
            new_rows = weights @ src
            if on_small_denominator == "fallback_mean":
                new_rows[small] = src.mean(dim=0)
            out[rows] = new_rows

    if small_tokens:
        action = (
            "their rows use the mean of the overlapping embeddings"
            if on_small_denominator == "fallback_mean"
            else "their rows keep the reference value, which may be huge"
        )
        warnings.warn(
            f"CLP-Transfer: {len(small_tokens)} target token(s) of {target_name} have |sum of cosine "
            f"similarities| < {SMALL_DENOMINATOR:g} over the overlap; {action}: {_name_tokens(small_tokens)}",
            SmallDenominatorWarning,
            stacklevel=3,
        )

    result = []
    for out, m in zip(outs, matrices):
        out = out.to(m.dtype)
        # Copied in the source dtype, so overlapping rows are bit-identical by construction.
        out[t_over] = m.detach()[s_over]
        result.append(out)
    report = ClpReport(
        overlap=len(t_over),
        missing=len(t_miss),
        small_denominator=len(small_tokens),
        small_denominator_tokens=small_tokens[:_NAMED_TOKENS],
        on_small_denominator=on_small_denominator,
        max_weight_sum_error=max_err,
    )
    return result, report


def clp_embeddings(
    source_emb: Tensor,
    source_vocab: Mapping[str, int],
    target_vocab: Mapping[str, int],
    helper_emb: Tensor,
    *,
    on_small_denominator: SmallDenominatorPolicy = "warn",
    seed: int = 42,
    num_rows: int | None = None,
    source_name: str = "the source tokenizer",
    target_name: str = "the target tokenizer",
) -> tuple[Tensor, ClpReport]:
    """CLP-Transfer embedding matrix for the target vocabulary (docs/methods/clp.md, "Initialisation").

    O = target tokens whose exact key (special and added tokens included) is in the source
    vocabulary; their rows are the source rows, bit for bit. Every other target token v gets
    Σ_{u∈O} w(v, u) · E_s[u] with the weights of `clp_weights`, computed on the helper's
    embeddings `helper_emb` (indexed by target id; its width may differ from the source's).
    Rows start from N(μ_s, σ_s²) with `seed`, which only survives for ids no token maps to.

    `num_rows` defaults to the largest target id + 1. `on_small_denominator`: "warn" keeps the
    reference value and warns naming the tokens with |Σ cos| < 1e-6; "fallback_mean" also gives
    them the mean of the overlapping source rows. The names appear in error and warning messages.
    """
    rows = num_rows if num_rows is not None else max(target_vocab.values(), default=-1) + 1
    (out,), report = _clp_fill(
        [source_emb],
        source_vocab,
        target_vocab,
        helper_emb,
        num_rows=rows,
        on_small_denominator=on_small_denominator,
        seed=seed,
        source_name=source_name,
        target_name=target_name,
    )
    return out, report


def _sync_special_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    # Ids in the config and the padding row refer to the old vocabulary (GPT-2's 50256 would even
    # be out of range); the transferred model speaks the helper tokenizer's ids.
    for cfg in (model.config.get_text_config(), getattr(model, "generation_config", None)):
        if cfg is None:
            continue
        for attr in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if hasattr(cfg, attr):
                setattr(cfg, attr, getattr(tokenizer, attr))
    emb = model.get_input_embeddings()
    if emb.padding_idx is not None:
        emb.padding_idx = tokenizer.pad_token_id


def clp_transfer(
    source_model: PreTrainedModel,
    source_tokenizer: PreTrainedTokenizerBase,
    helper_model: PreTrainedModel,
    helper_tokenizer: PreTrainedTokenizerBase,
    *,
    init_output: Literal["clp", "copy_input"] = "clp",
    on_small_denominator: SmallDenominatorPolicy = "warn",
    seed: int = 42,
) -> tuple[PreTrainedModel, ClpTransferReport]:
    """CLP-Transfer (docs/methods/clp.md, "Initialisation"): a copy of the source model speaking the helper tokenizer.

    The copy is resized to `len(helper_tokenizer)` and gets the CLP input embeddings built from
    the helper's input embeddings. Output layer:

    - tied to the input (GPT-2, BERT MLM heads): it follows, as the same tensor;
    - untied: `init_output="clp"` applies the same rule to the source output matrix (xbench
      extension, docs/methods/clp.md, "Departures from the paper"); `"copy_input"` gives it a
      copy of the new input matrix;
    - a per-token output bias (BERT's MLM decoder bias) is treated as a one-column embedding:
      overlapping tokens keep their source bias, missing tokens get Σ_u w(v, u) · b_s[u] with the
      same weights. That keeps the logit offsets consistent with the rows they were built from,
      where zeros would favour new tokens over well-trained ones.

    Everything else is bitwise the source's. The config's pad/bos/eos ids and the embedding's
    padding index are set to the helper tokenizer's. The source model is not modified.
    """
    if init_output not in ("clp", "copy_input"):
        raise ConfigError(f"unknown init_output {init_output!r}; expected 'clp' or 'copy_input'")
    src_in = source_model.get_input_embeddings().weight
    src_out = source_model.get_output_embeddings()
    tied = src_out is not None and src_out.weight is src_in
    matrices = [src_in]
    if src_out is not None and not tied and init_output == "clp":
        matrices.append(src_out.weight)
    bias = getattr(src_out, "bias", None) if src_out is not None else None
    if bias is not None:
        matrices.append(bias.unsqueeze(1))

    vocab_size = len(helper_tokenizer)
    filled, clp_report = _clp_fill(
        matrices,
        source_tokenizer.get_vocab(),
        helper_tokenizer.get_vocab(),
        helper_model.get_input_embeddings().weight,
        num_rows=vocab_size,
        on_small_denominator=on_small_denominator,
        seed=seed,
        source_name=_describe(source_tokenizer),
        target_name=_describe(helper_tokenizer),
    )

    target = copy.deepcopy(source_model)
    # resize_token_embeddings keeps model-specific embedding classes, the config's vocab size and
    # the tying; the rows it initialises are overwritten, so it must not consume the caller's RNG.
    with torch.random.fork_rng():
        target.resize_token_embeddings(vocab_size, mean_resizing=False)
    out_module = target.get_output_embeddings()
    with torch.no_grad():
        target.get_input_embeddings().weight.copy_(filled[0])
        if out_module is not None and not tied:
            out_module.weight.copy_(filled[1] if init_output == "clp" else filled[0])
        if bias is not None:
            out_module.bias.copy_(filled[-1].squeeze(1))
    _sync_special_token_ids(target, helper_tokenizer)

    if src_out is None:
        output_mode = "none"
    else:
        output_mode = "tied" if tied else init_output
    report = ClpTransferReport(
        **clp_report.to_dict(),
        vocab_size=vocab_size,
        output_embeddings=output_mode,
        output_bias=bias is not None,
    )
    return target, report
