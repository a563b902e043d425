"""What the methods that continue a multilingual encoder on English–target sentence pairs share (PPA,
CLISM+CACR): one encoder per target language, pairs from the `parallel_en_<lang>` slot under the paper
profile and the shared data's en-<lang>-par pool otherwise, the pre-flight check of those pairs, and
the encoder's cache key, with a control's key naming the method entry whose pairs and tokens it matches.
"""
from __future__ import annotations

from typing import Any

from xbench import cache
from xbench.errors import XbenchError
from xbench.methods.base import Method

SOURCE_LANG = "en"


class ParallelPairsMethod(Method):
    scope = "per-language"
    family = ""        # the method of the cache key: its own entries and its controls' share it
    code_version = 1
    variant = ""       # `family` for the method itself, another name for a control built by the same code

    def data_slots(self) -> list[str]:
        return [f"parallel_{SOURCE_LANG}_{lang}" for lang in self.ctx.langs if lang != SOURCE_LANG]

    def parallel(self, lang: str) -> tuple[list[tuple[str, str]], dict[str, Any]]:
        from xbench.data.slots import method_parallel

        return method_parallel(lang, self.ctx.data_dir, self.ctx.slots, f"method '{self.name}'", SOURCE_LANG)

    def pair_problems(self) -> list[str]:
        """Each target language's pairs can be read and are not empty (the run's slot checks cover slots)."""
        slots = self.ctx.slots
        if slots is not None and slots.active:
            return []
        problems = []
        for lang in self.ctx.langs:
            if lang == SOURCE_LANG:
                continue
            try:
                pairs, manifest = self.parallel(lang)
            except XbenchError as exc:
                problems.append(f"method '{self.name}' needs English–{lang} sentence pairs: {exc}")
                continue
            if not pairs:
                problems.append(f"method '{self.name}' needs English–{lang} sentence pairs, but the parallel corpus is "
                                f"empty (pairs dropped by the filters: {manifest.get('dropped', {})})")
        return problems

    def encoder_key(self, variant: str, src: Any, lang: str, manifest: dict[str, Any]) -> dict[str, Any]:
        key = {"method": self.family, "variant": variant, "code_version": self.code_version, "source": src.name,
               "source_weights": src.weights_sha256, "lang": lang, "pairs": manifest, "params": self.params,
               "profile": self.ctx.profile["name"]}
        if variant != self.family:  # the method's own entry whose pairs and tokens this one matches
            key["matches"] = cache.entry_path("encoders", self.encoder_key(self.family, src, lang, manifest)).name
        return key
