"""TreLM (docs/methods/trelm.md): the method and its matched scratch run (method.py), and the downstream
head hook that puts the L + 1-layer encoder under every task type's head (downstream.py)."""
from xbench.methods.trelm.method import TrelmMethod, TrelmScratchMethod

__all__ = ["TrelmMethod", "TrelmScratchMethod"]
