"""Freezing utilities (docs/methods/README.md, "Shared building blocks"). Parameter counting, which the
runner records for every stage, is xbench/runner/compute.py (re-exported here).

Patterns are `fnmatch` globs on parameter names as `named_parameters()` spells them; tied
parameters answer to every name they have (e.g. both `bert.embeddings.word_embeddings.weight`
and `cls.predictions.decoder.weight`). A pattern that matches nothing is an error, because a
typo would otherwise silently train (or freeze) the wrong thing.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable, Mapping

import torch
from torch import Tensor, nn

from xbench.errors import ConfigError
from xbench.runner.compute import non_embedding_parameter_count, trainable_report

__all__ = [
    "assert_unchanged",
    "freeze",
    "non_embedding_parameter_count",
    "trainable_report",
    "unfreeze",
]


def _as_list(patterns: str | Iterable[str]) -> list[str]:
    return [patterns] if isinstance(patterns, str) else list(patterns)


def _match(names: Iterable[str], patterns: list[str], what: str) -> list[str]:
    """Names matched by any pattern, in order; raises if a pattern matches no name."""
    names = list(names)
    unmatched = [p for p in patterns if not any(fnmatchcase(n, p) for n in names)]
    if unmatched:
        raise ConfigError([f"pattern {p!r} matches no {what}" for p in unmatched])
    return [n for n in names if any(fnmatchcase(n, p) for p in patterns)]


def _set_requires_grad(model: nn.Module, patterns: str | Iterable[str], flag: bool) -> list[str]:
    params = dict(model.named_parameters(remove_duplicate=False))
    names = _match(params, _as_list(patterns), "parameter name")
    for name in names:
        params[name].requires_grad_(flag)
    return names


def freeze(model: nn.Module, patterns: str | Iterable[str]) -> list[str]:
    """Set `requires_grad=False` on every parameter matching a pattern; returns the names matched."""
    return _set_requires_grad(model, patterns, False)


def unfreeze(model: nn.Module, patterns: str | Iterable[str]) -> list[str]:
    """Set `requires_grad=True` on every parameter matching a pattern; returns the names matched."""
    return _set_requires_grad(model, patterns, True)


def _bitwise_equal(a: Tensor, b: Tensor) -> bool:
    # Compare the bytes, not the values: NaN == NaN and -0.0 != +0.0 here, as "unchanged" means.
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a_bytes = a.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    b_bytes = b.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return torch.equal(a_bytes, b_bytes)


def assert_unchanged(
    before: Mapping[str, Tensor], after: Mapping[str, Tensor], patterns: str | Iterable[str]
) -> None:
    """Test helper: every state-dict entry matching a pattern is bitwise identical in both.

    Take `before` as a deep copy (`{k: v.clone() for k, v in model.state_dict().items()}`):
    a plain `state_dict()` shares storage with the live parameters.
    """
    names = _match(before, _as_list(patterns), "state-dict key")
    missing = [n for n in names if n not in after]
    changed = [n for n in names if n in after and not _bitwise_equal(before[n], after[n])]
    if missing or changed:
        raise AssertionError(
            f"{len(changed)} tensor(s) changed: {changed}" + (f"; missing afterwards: {missing}" if missing else "")
        )
