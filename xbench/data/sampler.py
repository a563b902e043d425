"""Language sampling with exponential smoothing (docs/methods/README.md, "Shared building blocks").

q_i = p_i^α / Σ_j p_j^α with p_i = n_i / Σ_j n_j: α = 1 samples in proportion to the data,
α = 0 uniformly over the languages that have data. Each call picks the language of one batch.
"""
from __future__ import annotations

import bisect
import random
from typing import Any, Mapping

from xbench.errors import ConfigError, XbenchError

__all__ = ["LanguageSampler", "language_probs"]


def language_probs(sizes: Mapping[str, int], alpha: float) -> dict[str, float]:
    """Smoothed sampling distribution q over languages, in the order of `sizes`.

    A language with size 0 gets q = 0 for every α (0^0 would otherwise make it as likely as
    the others at α = 0, and a batch cannot be drawn from an empty pool).
    """
    if not sizes:
        raise ConfigError("language sampling needs at least one language")
    if alpha < 0:
        raise ConfigError(f"sampling alpha must be >= 0, got {alpha}")
    negative = [lang for lang, n in sizes.items() if n < 0]
    if negative:
        raise ConfigError(f"negative data size for language(s) {', '.join(negative)}")
    total = sum(sizes.values())
    if total == 0:
        raise ConfigError(f"all languages have empty data pools: {', '.join(sizes)}")
    smoothed = {lang: (n / total) ** alpha if n > 0 else 0.0 for lang, n in sizes.items()}
    norm = sum(smoothed.values())
    return {lang: s / norm for lang, s in smoothed.items()}


class LanguageSampler:
    """Seeded draws of one language per batch from `language_probs(sizes, alpha)`.

    `state_dict()` is JSON-serialisable; loading it into a sampler built with the same sizes
    and α resumes the exact sequence of draws.
    """

    def __init__(self, sizes: Mapping[str, int], alpha: float, seed: int) -> None:
        self.probs = language_probs(sizes, alpha)
        self.alpha = alpha
        self.seed = seed
        self.languages = list(self.probs)
        self._cdf: list[float] = []
        acc = 0.0
        for q in self.probs.values():
            acc += q
            self._cdf.append(acc)
        self._rng = random.Random(seed)
        self.draws = 0

    def sample(self) -> str:
        # u · cdf[-1] < cdf[-1] keeps the index in range despite rounding, and bisect_right
        # skips zero-width (q = 0) languages.
        u = self._rng.random() * self._cdf[-1]
        self.draws += 1
        return self.languages[bisect.bisect_right(self._cdf, u)]

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss_next = self._rng.getstate()
        return {
            "languages": self.languages,
            "probs": [self.probs[lang] for lang in self.languages],
            "alpha": self.alpha,
            "seed": self.seed,
            "draws": self.draws,
            "rng_state": [version, list(internal), gauss_next],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        mine = [self.probs[lang] for lang in self.languages]
        if list(state["languages"]) != self.languages or list(state["probs"]) != mine:
            raise XbenchError(
                "the language sampler checkpoint was made with different languages or sizes/alpha "
                f"(checkpoint: {dict(zip(state['languages'], state['probs']))}, now: {self.probs}); "
                "resume with the configuration of the original run"
            )
        version, internal, gauss_next = state["rng_state"]
        self._rng.setstate((version, tuple(internal), gauss_next))
        self.draws = int(state["draws"])
