"""xbench: evaluation harness for cross-lingual transfer of pretrained language models."""

__version__ = "0.1.0"
