"""CLP-Transfer (docs/methods/clp.md): the method (method.py) and its learning curves (curves.py)."""
from xbench.methods.clp.method import ClpMethod, ClpScratchMethod

__all__ = ["ClpMethod", "ClpScratchMethod"]
