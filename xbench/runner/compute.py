"""Compute accounting per stage (docs/protocols.md, "What every stage records")."""
from __future__ import annotations

import resource
import sys
from dataclasses import asdict, dataclass, field
from typing import Any


def parameter_counts(model: Any) -> dict[str, int]:
    """total / trainable / non_embedding (docs/protocols.md, "What every stage records")."""
    report = trainable_report(model)
    return {k: report[k] for k in ("total", "trainable", "non_embedding")}


def _embedding_params(model: Any) -> list[Any]:
    from torch import nn

    # Token, position, token-type and language embeddings are nn.Embedding modules in the
    # architectures xbench uses; the output (un)embedding is whatever the model reports,
    # tied or not (docs/protocols.md). An output bias is not a matrix and stays non-embedding.
    found = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]
    get_output = getattr(model, "get_output_embeddings", None)
    out = get_output() if get_output is not None else None
    if out is not None:
        found.append(out.weight)
    return list({id(p): p for p in found}.values())


def non_embedding_parameter_count(model: Any) -> int:
    """N_nonemb of docs/protocols.md, "What every stage records": all parameters except embedding matrices
    and the output unembedding.

    Each tensor is counted once, however many names it has.
    """
    emb_ids = {id(p) for p in _embedding_params(model)}
    return sum(p.numel() for p in model.parameters() if id(p) not in emb_ids)


def trainable_report(model: Any) -> dict[str, int]:
    """Parameter counts for the stage record: total, trainable, frozen, non_embedding."""
    params = list(model.parameters())  # already deduplicated: tied tensors count once
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {
        "total": total,
        "trainable": trainable,
        "frozen": total - trainable,
        "non_embedding": non_embedding_parameter_count(model),
    }


def peak_memory_bytes(device_type: str) -> int:
    if device_type == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated())
    # ru_maxrss is KiB on Linux, bytes on macOS; it is the process peak, not the stage's.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


@dataclass
class StageRecord:
    """What one stage cost. Auxiliary stages (no optimizer) leave the training fields at 0/None."""

    name: str
    kind: str = "train"  # "train" or "auxiliary"
    optimizer_steps: int = 0
    tokens_seen: int = 0
    forward_only_tokens: int = 0
    flops_est: float | None = None
    wall_seconds: float = 0.0
    peak_memory_bytes: int | None = None
    peak_memory_kind: str = ""
    device: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    params: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def finalize_flops(self) -> None:
        n = self.params.get("non_embedding")
        if self.kind == "train" and n is not None:
            self.flops_est = 6.0 * n * self.tokens_seen + 2.0 * n * self.forward_only_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageRecord:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def sum_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over stages, for the leaderboard's compute column."""
    flops = [r.get("flops_est") for r in records if r.get("kind", "train") == "train"]
    return {
        "stages": len(records),
        "optimizer_steps": sum(int(r.get("optimizer_steps", 0)) for r in records),
        "tokens_seen": sum(int(r.get("tokens_seen", 0)) for r in records),
        "flops_est": sum(f for f in flops if f is not None) if flops else 0.0,
        "wall_seconds": round(sum(float(r.get("wall_seconds", 0.0)) for r in records), 3),
    }
