"""Source models: xbench's own tiny ones (built, cached by content hash) or any HF name/path.

The tiny models (docs/data.md, "Tiny source models"): built from a config, a WordPiece tokenizer trained on
the language's pool, MLM-pretrained by the shared runner, built once per content hash.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xbench import cache
from xbench.errors import XbenchError

CODE_VERSION = 3  # bump when the build procedure changes what a cached model contains

TINY_MODELS: dict[str, dict[str, Any]] = {
    "xbench/tiny-en-bert": {
        "lang": "en",
        "vocab_size": 2000,
        "limit_alphabet": 1000,  # the en pool has ~160 distinct characters: a bound, not a cut
        "config": {"model_type": "bert", "num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 2,
                   "intermediate_size": 128, "max_position_embeddings": 512},
        "pretrain": {"lr": 5e-4, "batch_size": 16, "seq_len": 64, "max_steps": 600, "warmup_steps": 30,
                     "weight_decay": 0.01, "seed": 0},
    },
}


@dataclass
class SourceModel:
    """A resolved source model: where to load it from and what it cost to make (if known)."""

    name: str
    path: str  # a local directory, or a hub name for from_pretrained
    stages: list[dict[str, Any]] = field(default_factory=list)  # its own pretraining; [] = external
    weights_sha256: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)


def bert_config(spec: dict[str, Any], vocab_size: int) -> Any:
    from transformers import BertConfig

    cfg = dict(spec)
    cfg.pop("model_type", None)
    return BertConfig(vocab_size=vocab_size, **cfg)


def pretrain_mlm(model: Any, tokenizer: Any, lines: list[str], args: dict[str, Any], workdir: Path, *,
                 name: str, resume: bool = True, max_tokens: int | None = None, seed: int | None = None) -> Any:
    """MLM on packed blocks of `lines` through the shared LM stage (lm_stages.train_lm); returns the FitResult."""
    from xbench.components.lm_stages import LMArgs, packed_blocks, train_lm

    lm_args = LMArgs.from_dict({**args, "seed": args.get("seed", 0) if seed is None else seed})
    plan = packed_blocks(tokenizer, lines, "mlm", seq_len=lm_args.seq_len, batch_size=lm_args.batch_size,
                         seed=lm_args.seed)
    return train_lm(model, plan, "mlm", tokenizer, lm_args, workdir, name=name, max_tokens=max_tokens,
                    resume=resume).fit


def _tiny_spec(name: str) -> dict[str, Any] | None:
    if name in TINY_MODELS:
        return TINY_MODELS[name]
    if name.startswith("xbench/"):
        from xbench.components.lm_stages import TINY_CAUSAL_MODELS

        return TINY_CAUSAL_MODELS.get(name)
    return None


def _tiny_pool(name: str, spec: dict[str, Any], data_dir: str | Path | None) -> Any:
    """The text pool a tiny model is built from, with one message saying why that text is needed."""
    from xbench.components.pools import build_pool, pool_text_files
    from xbench.errors import DataNotFoundError

    try:
        return build_pool(spec["lang"], data_dir)
    except DataNotFoundError as exc:
        lang = spec["lang"]
        raise DataNotFoundError(
            f"{name} is built on this machine from the '{lang}' text of the data roots (its vocabulary and "
            f"pretraining text: {', '.join(pool_text_files(lang))}; at least one of them is needed), and none "
            f"was found. The smoke profile's source model is {name}, so every smoke run needs that text even "
            f"when it evaluates other languages: add a data root that has it (XBENCH_DATA, or --data-dir, which "
            f"adds to XBENCH_DATA), or pass --model <a local model directory>.\n  ({exc})") from None


def source_text(name: str, data_dir: str | Path | None = None) -> dict[str, Any] | None:
    """What text an xbench-built model learnt from: every file with its root and SHA-256, and a hash.

    The hash is taken of the files' relative paths and contents (not of their roots), so a model built
    from other text gets another `source_text_hash` in the result; None for models xbench does not build.
    """
    spec = _tiny_spec(name)
    if spec is None:
        return None
    from xbench.data.sources import data_hash

    pool = _tiny_pool(name, spec, data_dir)
    return {"model": name, "lang": spec["lang"], "files": pool.files, "hash": data_hash(pool.files)}


def _build_tiny(name: str, spec: dict[str, Any], data_dir: str | Path | None) -> SourceModel:
    pool = _tiny_pool(name, spec, data_dir)
    key = {"model": name, "code_version": CODE_VERSION, "spec": spec, "pool": pool.manifest()}

    def build(out: Path, work: Path) -> dict[str, Any]:
        from transformers import AutoTokenizer, BertForMaskedLM

        from xbench.atomic import reuse_or_clear, save_pretrained_atomic
        from xbench.components.wordpiece import train_wordpiece, vocabulary_stats

        tok_dir = work / "tokenizer"
        # The trainer is not deterministic: reuse a saved one, if it was saved whole.
        if reuse_or_clear(tok_dir, also=(work / "run",)):
            tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        else:
            tokenizer = train_wordpiece(pool.lines, spec["vocab_size"], limit_alphabet=spec["limit_alphabet"])
            save_pretrained_atomic(tokenizer, tok_dir)
        import torch

        torch.manual_seed(spec["pretrain"]["seed"])
        model = BertForMaskedLM(bert_config(spec["config"], len(tokenizer)))
        fit = pretrain_mlm(model, tokenizer, pool.lines, spec["pretrain"], work / "run", name=f"pretrain {name}")
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        return {"stages": [fit.record.to_dict()], "pool": pool.manifest(),
                "tokenizer": {**vocabulary_stats(tokenizer), "limit_alphabet": spec["limit_alphabet"]},
                "final_loss": sum(fit.losses[-20:]) / min(20, len(fit.losses))}

    path = cache.get_or_build("source-models", key, build)
    entry = cache.read_entry(path)
    from xbench.atomic import sha256_file

    manifest = entry["manifest"]
    # The pretraining stage carries the vocabulary it trained (size, alphabet): the result's compute
    # record then says what the source model's tokenizer is.
    stages = [{**s, "extra": {**s.get("extra", {}), "tokenizer": manifest["tokenizer"]}} if "tokenizer" in manifest
              else s for s in manifest["stages"]]
    return SourceModel(name, str(path), stages=stages,
                       weights_sha256=sha256_file(path / "model.safetensors"), manifest=manifest)


def load_pretrained(loader: Any, path: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained(path)` with one clear message when neither a local copy nor the hub has it."""
    from xbench.data.sources import hub_offline

    kind = getattr(loader, "__name__", str(loader))
    is_model = "Tokenizer" not in kind and "Config" not in kind
    if Path(path).expanduser().is_dir():
        # transformers reports a folder without config.json as an unknown model type, and would load a
        # pytorch_model.bin by unpickling it; say what is missing instead, and never unpickle.
        from xbench.errors import ConfigError
        from xbench.preflight import model_folder_problems

        problems = model_folder_problems(Path(path).expanduser(), config="Tokenizer" not in kind, weights=is_model,
                                         tokenizer="Tokenizer" in kind)
        if problems:
            raise ConfigError(problems, source=f"cannot load '{path}' with {kind}")
    if is_model:
        kwargs.setdefault("use_safetensors", True)
    try:
        return loader.from_pretrained(path, **kwargs)
    except OSError as exc:
        where = "offline mode is on (HF_HUB_OFFLINE)" if hub_offline() else "the hub was not reachable"
        raise XbenchError(
            f"cannot load '{path}' with {getattr(loader, '__name__', loader)}: it is not a local model directory, it "
            f"is not in the local Hugging Face cache, and {where}. Pass --model <local directory>, download it "
            f"first (huggingface-cli download {path}), or use --profile smoke (xbench's own tiny models). "
            f"({str(exc).splitlines()[0][:160]})") from None


def resolve_source_model(name: str, data_dir: str | Path | None = None) -> SourceModel:
    """xbench/tiny-* names are built locally; anything else is a local path or a hub name."""
    if name in TINY_MODELS:
        return _build_tiny(name, TINY_MODELS[name], data_dir)
    if name.startswith("xbench/"):
        raise XbenchError(f"unknown xbench model '{name}'; xbench builds: {', '.join(TINY_MODELS)}")
    local = Path(name).expanduser()
    if local.is_dir():
        weights = next((p for p in (local / "model.safetensors", local / "pytorch_model.bin") if p.is_file()), None)
        from xbench.atomic import sha256_file

        return SourceModel(name, str(local.resolve()), weights_sha256=sha256_file(weights) if weights else None)
    return SourceModel(name, name)  # hub name; from_pretrained resolves (and fails clearly offline)
