"""Word aligners (docs/methods/README.md, "Shared building blocks"): the interface every backend
implements. The backends (eflomal by default) arrive with the methods that need them (TreLM,
CLISM+CACR)."""
from xbench.aligners.base import AlignmentSet, Link, WordAligner

__all__ = ["AlignmentSet", "Link", "WordAligner"]
