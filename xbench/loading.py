"""The one loader of pretrained models and tokenizers, from a local folder or a hub name.

Every model, tokenizer and config xbench reads goes through `load_pretrained`: a local folder is
checked first (`model_folder_problems`: a config, safetensors weights, tokenizer files), so a
folder that is not a model gets one message naming what it lacks instead of transformers' guess,
and pickled weights are never loaded. A name that is no folder goes to the hub (or the local
Hugging Face cache), with one message when neither has it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from xbench.errors import ConfigError, XbenchError

# Weights a model folder may hold that xbench refuses: loading them unpickles, which can run code.
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")


def hub_offline() -> bool:
    """Whether the user switched the Hugging Face hub off (models or datasets)."""
    return os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"


def load_pretrained(loader: Any, path: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained(path)` with one clear message when neither a local copy nor the hub has it."""
    kind = getattr(loader, "__name__", str(loader))
    is_model = "Tokenizer" not in kind and "Config" not in kind
    if Path(path).expanduser().is_dir():
        # transformers reports a folder without config.json as an unknown model type, and would load a
        # pytorch_model.bin by unpickling it; say what is missing instead, and never unpickle.
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


def model_folder_problems(folder: Path, *, config: bool = True, weights: bool = True,
                          tokenizer: bool = True) -> list[str]:
    """What a local model folder lacks for the parts asked for; [] when it can be loaded."""
    problems: list[str] = []
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if config:
        cfg = folder / "config.json"
        if not cfg.is_file():
            problems.append(f"{folder} has no config.json; a model folder is what save_pretrained writes "
                            "(config.json, tokenizer files, model.safetensors)")
        else:
            problems += _config_problems(cfg)
    if weights and not names & set(SAFE_WEIGHTS) and not any(n.startswith("model-") and n.endswith(".safetensors")
                                                              for n in names):
        pickled = sorted(n for n in names if n in PICKLE_WEIGHTS or n.endswith(PICKLE_SUFFIXES))
        if pickled:
            problems.append(f"{folder} holds only pickle checkpoint(s) ({', '.join(pickled)}); xbench loads only "
                            "safetensors weights (model.safetensors), because unpickling a file can run code. "
                            "Convert it where you trust it: AutoModel.from_pretrained(folder)"
                            ".save_pretrained(folder, safe_serialization=True)")
        else:
            problems.append(f"{folder} has no model weights (model.safetensors)")
    if tokenizer and not names & set(TOKENIZER_FILES):
        problems.append(f"{folder} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)})")
    return problems


def _config_problems(path: Path) -> list[str]:
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"{path}: not a valid JSON config ({exc})"]
    except OSError as exc:
        return [f"{path}: cannot read: {exc.strerror or exc}"]
    if not isinstance(raw, dict) or not isinstance(raw.get("model_type"), str):
        return [f"{path}: field 'model_type' is missing (expected a transformers config, e.g. \"model_type\": \"bert\")"]
    return []
