"""PAN-X (WikiANN, XTREME split) NER files: ``token<TAB>tag`` lines, blank line between sentences.

Notes on the real files (shared data, MESH copy of XTREME's preprocessing):

- Tokens carry **no** language prefix. XTREME's own ``panx_processed_maxlen128`` files write
  ``en:token``; when every token of a file starts with the same ``xx:`` / ``xxx:`` code it is a
  prefix and is stripped (a per-file rule, so a genuine token such as ``http:`` is never cut).
- The last sentence is not followed by a blank line.
- zh and ja dev are split into characters, with ``#`` (tag O) where the original text had a space;
  an entity spanning such a space continues with ``I-X`` after the ``O`` (476 times in zh, 501 in
  ja). Those tags are kept as they are: seqeval's default mode, like conlleval, starts a new
  entity there, which is what :func:`xbench.metrics.ner.repair_iob2` makes explicit.
"""
from __future__ import annotations

import re
from pathlib import Path

from xbench.data.conllu_io import iter_lines
from xbench.errors import DataFormatError, XbenchError

__all__ = ["PANX_TAGS", "read_panx", "labels_are_scorable"]

PANX_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
_TAGS = frozenset(PANX_TAGS)
_LANG_PREFIX = re.compile(r"^([a-z]{2,3}):")


def labels_are_scorable(sentences: list[tuple[list[str], list[str]]]) -> bool:
    """False when no tag is an entity tag (unlabelled test files are all ``O`` or blank)."""
    return any(tag not in ("O", "", "_") for _, tags in sentences for tag in tags)


def read_panx(path: str | Path, require_labels: bool = True) -> list[tuple[list[str], list[str]]]:
    """Read a PAN-X ``.tsv`` / ``.tsv.gz`` file into ``[(tokens, tags), ...]``.

    Raises :class:`DataFormatError` (file and line) for a line without exactly one tab, an empty
    token, a tag outside IOB2 over PER/ORG/LOC, or a file without sentences; with
    ``require_labels`` an :class:`XbenchError` if no entity is labelled at all.
    """
    path_s = str(path)
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    token_lines: list[int] = []
    for line_no, line in iter_lines(path):
        if not line.strip():
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise DataFormatError(path_s, f"{len(parts)} tab-separated fields in {line[:60]!r}", line=line_no,
                                  expected="token<TAB>tag")
        token, tag = parts
        if not token:
            raise DataFormatError(path_s, "empty token", line=line_no, field="token")
        if tag not in _TAGS:
            raise DataFormatError(path_s, f"unknown tag {tag!r}", line=line_no, field="tag",
                                  expected=" ".join(PANX_TAGS))
        tokens.append(token)
        tags.append(tag)
        token_lines.append(line_no)
    if tokens:
        sentences.append((tokens, tags))
    if not sentences:
        raise DataFormatError(path_s, "no sentences (empty file)")

    m = _LANG_PREFIX.match(sentences[0][0][0])
    if m and all(t.startswith(m.group(0)) for toks, _ in sentences for t in toks):
        cut = len(m.group(0))
        sentences = [([t[cut:] for t in toks], tg) for toks, tg in sentences]
        flat = (t for toks, _ in sentences for t in toks)
        for line_no, t in zip(token_lines, flat):
            if not t:
                raise DataFormatError(path_s, f"token is only the language prefix {m.group(0)!r}", line=line_no,
                                      field="token")

    if require_labels and not labels_are_scorable(sentences):
        raise XbenchError(
            f"{path_s}: no entity labels (every tag is O); this looks like an unlabelled test file and "
            "cannot be scored — PAN-X test labels are not public, use the dev files"
        )
    return sentences
