"""Checkpoint averaging and pattern-wise combination (docs/methods/README.md, "Shared building blocks")."""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Mapping, Sequence

import torch
from torch import Tensor

from xbench.errors import ConfigError

__all__ = ["average_state_dicts", "combine_by_pattern", "halfway_state_dicts"]

StateDict = Mapping[str, Tensor]


def _check_compatible(sds: Sequence[StateDict], labels: Sequence[str]) -> None:
    ref, ref_label = sds[0], labels[0]
    problems = []
    for sd, label in zip(sds[1:], labels[1:]):
        if set(sd) != set(ref):
            only_ref = sorted(set(ref) - set(sd))[:5]
            only_sd = sorted(set(sd) - set(ref))[:5]
            problems.append(
                f"{label} has different keys than {ref_label} "
                f"(only in {ref_label}: {only_ref}; only in {label}: {only_sd})"
            )
            continue
        for key, t in ref.items():
            if sd[key].shape != t.shape or sd[key].dtype != t.dtype:
                other = sd[key]
                problems.append(
                    f"{key}: {label} has {tuple(other.shape)} {other.dtype}, "
                    f"{ref_label} has {tuple(t.shape)} {t.dtype}"
                )
    if problems:
        raise ConfigError(problems, source="state dicts to merge")


def average_state_dicts(
    sds: Sequence[StateDict], weights: Sequence[float] | None = None
) -> dict[str, Tensor]:
    """Element-wise (weighted) mean of state dicts with identical keys, shapes and dtypes.

    Exact recipe, so tests can recompute it bit for bit: the weights are normalised in Python
    floats, w_i / Σ_j w_j (equal weights 1/n by default), and each floating tensor is
    acc = sd_1 · w_1, then acc = acc + sd_i · w_i for i = 2..n, in the tensor's own dtype.
    Non-floating tensors (step counters, position-id buffers) must be equal and are copied.
    """
    if not sds:
        raise ConfigError("average_state_dicts needs at least one state dict")
    labels = [f"state dict #{i}" for i in range(len(sds))]
    _check_compatible(sds, labels)
    if weights is None:
        weights = [1.0] * len(sds)
    if len(weights) != len(sds):
        raise ConfigError(f"{len(weights)} weights for {len(sds)} state dicts")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"averaging weights must be non-negative with a positive sum, got {list(weights)}")
    total = sum(weights)
    norm = [w / total for w in weights]

    out: dict[str, Tensor] = {}
    for key, first in sds[0].items():
        if not (first.is_floating_point() or first.is_complex()):
            differing = [labels[i] for i, sd in enumerate(sds) if not torch.equal(sd[key], first)]
            if differing:
                raise ConfigError(
                    f"{key}: non-floating tensor differs in {', '.join(differing)}; it cannot be averaged"
                )
            out[key] = first.clone()
            continue
        acc = first * norm[0]
        for sd, w in zip(sds[1:], norm[1:]):
            acc = acc + sd[key] * w
        out[key] = acc
    return out


def halfway_state_dicts(a: StateDict, b: StateDict) -> dict[str, Tensor]:
    """The mean of two state dicts as (a + b) / 2 in each tensor's own dtype.

    TreLM's Stage G (docs/methods/trelm.md, "Stage G") specifies this recipe; it differs from
    `average_state_dicts`' a·½ + b·½ only where a value is subnormal or the sum overflows, but tests
    recompute it literally. Non-floating tensors must be equal and are copied.
    """
    _check_compatible([a, b], ["the first state dict", "the second state dict"])
    out: dict[str, Tensor] = {}
    for key, x in a.items():
        y = b[key]
        if not (x.is_floating_point() or x.is_complex()):
            if not torch.equal(x, y):
                raise ConfigError(f"{key}: non-floating tensor differs between the two state dicts; it cannot be averaged")
            out[key] = x.clone()
        else:
            out[key] = (x + y) / 2
    return out


def combine_by_pattern(parts: Mapping[str, StateDict]) -> dict[str, Tensor]:
    """One state dict assembled from several, by glob pattern on the keys.

    `parts` maps a pattern to the state dict its tensors come from; for each key the first
    pattern (in mapping order) that matches wins. All state dicts must have identical keys,
    shapes and dtypes; a key that no pattern matches, or a pattern that matches no key, is an
    error. Tensors are taken as they are (not cloned).
    """
    if not parts:
        raise ConfigError("combine_by_pattern needs at least one pattern")
    patterns = list(parts)
    sds = [parts[p] for p in patterns]
    _check_compatible(sds, [f"the state dict for {p!r}" for p in patterns])
    keys = list(sds[0])
    problems = [f"pattern {p!r} matches no key" for p in patterns if not any(fnmatchcase(k, p) for k in keys)]
    out: dict[str, Tensor] = {}
    for key in keys:
        winner = next((p for p in patterns if fnmatchcase(key, p)), None)
        if winner is None:
            problems.append(f"key {key!r} matches no pattern")
        else:
            out[key] = parts[winner][key]
    if problems:
        raise ConfigError(problems, source="combine_by_pattern")
    return out
