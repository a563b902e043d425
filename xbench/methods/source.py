"""Baseline `source`: the source model fine-tuned as it is, with its own tokenizer."""
from __future__ import annotations

from xbench.models.source_models import resolve_source_model
from xbench.methods.base import Encoder, Method
from xbench.results.transductive import pool_entries


class SourceMethod(Method):
    name = "source"
    kind = "baseline"
    scope = "shared"
    parameters: dict = {}  # none: the source model as it is
    encoder_uses_langs = False

    def build_encoder(self, lang: str | None) -> Encoder:
        src = resolve_source_model(self.ctx.model, self.ctx.data_dir)
        return Encoder(key=f"source:{src.name}:{src.weights_sha256 or 'hub'}", path=src.path, stages=[],
                       source_stages=src.stages,
                       provenance={"source_model": src.name, "weights_sha256": src.weights_sha256,
                                   "pool": src.manifest.get("pool"),
                                   **({"package": src.manifest["package"]} if "package" in src.manifest else {})},
                       # Its pretraining pool (xbench-built models only) may hold evaluation text: tiny-en-bert's
                       # has the XQuAD English contexts.
                       flags={"transductive": pool_entries(src.manifest.get("pool"))})
