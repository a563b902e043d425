"""PPA (docs/methods/ppa.md) and its two baselines, built by the same code (method.py)."""
from xbench.methods.ppa.method import MlmControlMethod, PpaMethod, PpaScratchMethod

__all__ = ["MlmControlMethod", "PpaMethod", "PpaScratchMethod"]
