"""CLISM+CACR (docs/methods/clism.md), its continued-MLM control and the standard-span-head ablation, built
by the same code (method.py)."""
from xbench.methods.clism.method import ClismMethod, ClismMlmControlMethod, ClismSpanHeadMethod

__all__ = ["ClismMethod", "ClismMlmControlMethod", "ClismSpanHeadMethod"]
