"""Word aligners (docs/methods/README.md, "Shared building blocks"): sentence pairs of words in,
forward, reverse and symmetrised links per pair out.

`get_aligner(name)` builds a backend (`eflomal`, the default for real data; `exact`, gold links for
unit tests) and `align_cached(aligner, pairs)` aligns through the content-addressed cache. No
backend's package is imported here: eflomal is loaded only when it aligns.
"""
from xbench.aligners.backends import BACKENDS, get_aligner
from xbench.aligners.base import AlignmentSet, Link, WordAligner
from xbench.aligners.cached import align_cached, cache_key
from xbench.aligners.symmetrise import METHODS as SYMMETRISATIONS
from xbench.aligners.symmetrise import symmetrise

__all__ = ["BACKENDS", "SYMMETRISATIONS", "AlignmentSet", "Link", "WordAligner", "align_cached", "cache_key",
           "get_aligner", "symmetrise"]
