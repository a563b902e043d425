"""The `eflomal` backend (xbench default for real data): PyPI `eflomal` 2.0.0.

eflomal is a Bayesian IBM-style aligner (IBM1, then HMM, then HMM + fertility) trained by Gibbs
sampling on the very pairs it aligns, so all pairs of a language pair go in one call: the more
text, the better its word-translation statistics. What this wrapper adds, and why:

- Words are lower-cased (str.lower) before alignment, so that "Haus" and "haus" share statistics.
- Each word is handed to eflomal as a numbered token ("w17"), never as itself: eflomal reads
  whitespace-separated lines, so a word containing a space (or any character str.split treats as
  one) would become two tokens and shift every later index, and an empty word would vanish.
- A pair with an empty side, or with a side longer than eflomal's limit (1023 words, which it
  would silently blank), is not sent at all and gets no links; the other pairs keep their
  positions because links are put back by pair index.
- eflomal writes Pharaoh `i-j` lines in both directions, both as (source index, target index):
  the forward file links every target word to at most one source word, the reverse file every
  source word to at most one target word. `symmetric` is computed here (symmetrise.py), not by
  eflomal, which has none.

Randomness: eflomal 2.0.0 has no seed. Its C sampler seeds itself from /dev/urandom (`random.c`,
`random_system_state`) and neither the binary nor the Python API takes a seed, so two calls on the
same pairs give slightly different links. Runs are made repeatable by the alignment cache
(cached.py): the first alignment of a set of pairs is stored and every later run reads it.

eflomal (and numpy, which it imports) is imported inside `align`, so importing xbench.aligners
stays cheap and works without eflomal installed.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from xbench.aligners.base import AlignmentSet, Link, WordPairs, word_pairs
from xbench.aligners.symmetrise import DEFAULT, check_method, symmetrise
from xbench.errors import XbenchError

PACKAGE = "eflomal"
PINNED = "2.0.0"
INSTALL_HINT = (f"pip install {PACKAGE}=={PINNED} (a source distribution: it compiles C code at install time, "
                "so a C compiler such as gcc must be present)")
# eflomal's write_text blanks any sentence of 0x400 tokens or more.
MAX_WORDS = 0x400 - 1
WRAPPER_VERSION = 1  # bump when this wrapper changes what links a given input gets


def missing_package_error() -> XbenchError:
    return XbenchError(f"the word aligner 'eflomal' needs the Python package '{PACKAGE}', which is not installed. "
                       f"Install it with: {INSTALL_HINT}")


def installed_version() -> str | None:
    import importlib.metadata  # 30 ms: only when a fingerprint is taken

    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


class EflomalAligner:
    """eflomal with xbench's input rules; settings are eflomal.Aligner's own, at its defaults."""

    name = "eflomal"

    def __init__(self, symmetrisation: str = DEFAULT, *, model: int = 3, n_samplers: int = 3,
                 null_prior: float = 0.2, rel_iterations: float = 1.0) -> None:
        self.symmetrisation = check_method(symmetrisation)
        if model not in (1, 2, 3):
            raise XbenchError(f"eflomal model must be 1 (IBM1), 2 (HMM) or 3 (HMM + fertility), got {model!r}")
        if n_samplers < 1 or rel_iterations <= 0 or not 0 <= null_prior <= 1:
            raise XbenchError(f"eflomal settings out of range: n_samplers={n_samplers} (>= 1), "
                              f"rel_iterations={rel_iterations} (> 0), null_prior={null_prior} (in [0, 1])")
        self.model = model
        self.n_samplers = n_samplers
        self.null_prior = null_prior
        self.rel_iterations = rel_iterations

    def fingerprint(self) -> dict[str, object]:
        return {"backend": self.name, "eflomal_version": installed_version(), "wrapper_version": WRAPPER_VERSION,
                "lowercase": True, "symmetrisation": self.symmetrisation, "model": self.model,
                "n_samplers": self.n_samplers, "null_prior": self.null_prior, "rel_iterations": self.rel_iterations}

    def align(self, pairs: WordPairs) -> list[AlignmentSet]:
        pairs = word_pairs(pairs)
        sent = [n for n, (s, t) in enumerate(pairs) if 0 < len(s) <= MAX_WORDS and 0 < len(t) <= MAX_WORDS]
        fwd: list[tuple[Link, ...]] = [()] * len(pairs)
        rev: list[tuple[Link, ...]] = [()] * len(pairs)
        if sent:
            src_lines, tgt_lines = _numbered_lines([pairs[n] for n in sent])
            got_fwd, got_rev = self._run(src_lines, tgt_lines)
            for n, f, r in zip(sent, got_fwd, got_rev):
                fwd[n], rev[n] = f, r
        out = []
        for (src, tgt), f, r in zip(pairs, fwd, rev):
            links = AlignmentSet(f, r, symmetrise(f, r, self.symmetrisation))
            links.check(len(src), len(tgt))
            out.append(links)
        return out

    def _run(self, src_lines: list[str], tgt_lines: list[str]) -> tuple[list[tuple[Link, ...]], list[tuple[Link, ...]]]:
        try:
            import eflomal
        except ImportError as e:
            raise missing_package_error() from e
        aligner = eflomal.Aligner(model=self.model, n_samplers=self.n_samplers, null_prior=self.null_prior,
                                  rel_iterations=self.rel_iterations)
        with tempfile.TemporaryDirectory(prefix="xbench-eflomal-") as tmp:
            fwd_file, rev_file = Path(tmp) / "fwd", Path(tmp) / "rev"
            try:
                aligner.align(src_lines, tgt_lines, links_filename_fwd=str(fwd_file),
                              links_filename_rev=str(rev_file), quiet=True)
            except subprocess.CalledProcessError as e:
                raise XbenchError(f"eflomal failed (exit status {e.returncode}) aligning {len(src_lines)} pairs; "
                                  "its own message, if it wrote one, is printed above") from e
            return _read_links(fwd_file, len(src_lines)), _read_links(rev_file, len(src_lines))


def _numbered_lines(pairs: list[tuple[tuple[str, ...], tuple[str, ...]]]) -> tuple[list[str], list[str]]:
    """One line per sentence of per-side vocabulary ids of the lower-cased words."""
    src_ids: dict[str, int] = {}
    tgt_ids: dict[str, int] = {}

    def line(words: tuple[str, ...], ids: dict[str, int]) -> str:
        return " ".join(f"w{ids.setdefault(w.lower(), len(ids))}" for w in words)

    return [line(s, src_ids) for s, _ in pairs], [line(t, tgt_ids) for _, t in pairs]


def _read_links(path: Path, n: int) -> list[tuple[Link, ...]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != n:
        raise XbenchError(f"eflomal wrote {len(lines)} alignment lines for {n} sentence pairs; its output cannot be "
                          "matched to the pairs")
    out = []
    for line in lines:
        links = set()
        for item in line.split():
            i, _, j = item.partition("-")
            links.add((int(i), int(j)))
        out.append(tuple(sorted(links)))
    return out
