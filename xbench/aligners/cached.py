"""Alignments cached by content: the SHA-256 of the input pairs plus the backend's fingerprint.

eflomal has no seed, so without the cache two runs on the same pairs would train on different
links; with it, the first alignment of a set of pairs is the one every later run reads. An entry is
one JSON file (never a pickle: cache folders may be shared, and unpickling runs code), written by
xbench.cache.get_or_build into a temporary folder that is renamed into place, so a killed build
leaves no half entry and two processes never build the same key at once.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xbench import cache
from xbench.aligners.base import AlignmentSet, WordAligner, WordPairs, word_pairs
from xbench.atomic import atomic_write_json, hash_json
from xbench.errors import XbenchError

KIND = "alignments"
FILE = "alignments.json"
FORMAT = 1  # bump when the entry layout or the key changes


def cache_key(aligner: WordAligner, pairs: WordPairs) -> dict[str, Any]:
    """The key of `pairs` aligned by `aligner`, for the cache and for a stage's provenance. The
    words are hashed as given (before lower-casing): the exact backend is case-sensitive."""
    words = [[list(s), list(t)] for s, t in word_pairs(pairs)]
    return {"format": FORMAT, "aligner": aligner.fingerprint(), "pairs_sha256": hash_json(words),
            "n_pairs": len(words)}


def align_cached(aligner: WordAligner, pairs: WordPairs) -> list[AlignmentSet]:
    """`aligner.align(pairs)`, computed once per (pairs, backend settings) and then read back."""
    pairs = word_pairs(pairs)
    if not pairs:
        return []

    def build(out: Path, _work: Path) -> dict[str, Any]:
        aligned = aligner.align(pairs)
        if len(aligned) != len(pairs):
            raise XbenchError(f"aligner {aligner.name!r} returned {len(aligned)} alignments for {len(pairs)} pairs")
        for (src, tgt), links in zip(pairs, aligned):
            links.check(len(src), len(tgt))
        atomic_write_json(out / FILE, {"format": FORMAT, "links": [
            [[list(link) for link in getattr(a, d)] for d in ("forward", "reverse", "symmetric")] for a in aligned]})
        return {"n_pairs": len(pairs), "n_symmetric_links": sum(len(a.symmetric) for a in aligned)}

    path = cache.get_or_build(KIND, cache_key(aligner, pairs), build)
    return _read(path / FILE, pairs)


def _read(path: Path, pairs: list[tuple[tuple[str, ...], tuple[str, ...]]]) -> list[AlignmentSet]:
    remedy = f"remove the entry (xbench cache rm --entry {path.parent.name}) and run again"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data["links"]
        if data.get("format") != FORMAT or len(rows) != len(pairs):
            raise ValueError(f"format {data.get('format')!r} with {len(rows)} rows for {len(pairs)} pairs")
        out = [AlignmentSet(*(tuple((int(i), int(j)) for i, j in row[d]) for d in range(3))) for row in rows]
        for (src, tgt), links in zip(pairs, out):
            links.check(len(src), len(tgt))
    except XbenchError as e:
        raise XbenchError(f"alignment cache entry {path} does not fit its pairs: {e}; {remedy}") from e
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise XbenchError(f"alignment cache entry {path} cannot be read ({e}); {remedy}") from e
    return out
