"""The smallest transfer method: the source model, unchanged, under a name of its own."""
from __future__ import annotations

from xbench.methods.base import Encoder, Method, Param


class ToyCopy(Method):
    name = "toy-copy"  # must equal the entry point's name
    kind = "transfer"
    compared_with = "source"
    parameters = {"copies": Param(1, low=1)}

    def build_encoder(self, lang: str | None) -> Encoder:
        from xbench.models.source_models import resolve_source_model

        src = resolve_source_model(self.ctx.model, self.ctx.data_dir)
        return Encoder(key=f"toy-copy:{src.name}:{src.weights_sha256 or 'hub'}", path=src.path,
                       source_stages=src.stages, provenance={"source_model": src.name})
