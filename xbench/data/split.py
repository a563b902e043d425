"""One (language, split) of a task's data, with where it came from."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xbench.data.sources import Provenance


@dataclass
class Split:
    """Examples of one (language, split) with where they came from."""

    lang: str
    name: str
    examples: list[Any]
    provenance: Provenance
