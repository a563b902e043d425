"""CoNLL-U reading and writing for dependency parsing (plain or ``.conllu.gz``).

Reading keeps every line of a sentence verbatim (comments, multiword-token ranges ``1-2``, empty
nodes ``8.1``) so that system output can be written with only HEAD and DEPREL of the syntactic
words changed; the CoNLL 2018 scorer aligns gold and system files on their characters, so
anything else that differed would break or skew the alignment.

Fields are parsed with the ``conllu`` package's own field parsers, but lines are split on tabs
here rather than by ``conllu.parse`` because that splits on runs of two spaces as well and would
silently shift the columns of a FORM containing "  ". Line numbers are tracked here because the
``conllu`` package does not report them.
"""
from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from conllu.exceptions import ParseException
from conllu.models import Metadata, Token, TokenList
from conllu.parser import (
    DEFAULT_FIELD_PARSERS, DEFAULT_FIELDS, parse_comment_line, parse_id_value, parse_int_value,
)

from xbench.data.trees import find_cycle
from xbench.errors import DataFormatError, XbenchError

__all__ = ["Sentence", "read_conllu", "write_conllu", "universal_deprel", "iter_lines"]

_HEAD, _DEPREL = 6, 7


def universal_deprel(rel: str) -> str:
    """The universal part of a dependency relation: ``nsubj:pass`` -> ``nsubj``."""
    return rel.split(":", 1)[0]


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line number, line without newline)`` of a UTF-8 text file, gunzipping ``*.gz``.

    Decoding line by line (instead of a text-mode file) lets an encoding error name its line.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                try:
                    yield line_no, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise DataFormatError(path, f"not valid UTF-8 ({e.reason} at byte {e.start})",
                                          line=line_no) from None
    except FileNotFoundError:
        raise XbenchError(f"file not found: {path}") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataFormatError(path, f"corrupt or truncated gzip data ({e})") from None
    except OSError as e:  # a folder, no permission: still the user's file, not a bug
        raise XbenchError(f"{path}: cannot read: {e.strerror or e}") from None


@dataclass
class Sentence:
    """One sentence of a CoNLL-U file.

    ``lines`` are the raw lines (comments and all token lines, without newline) in file order;
    ``word_lines`` indexes the lines of the syntactic words (integer ids) and ``line_numbers``
    gives each line's 1-based number in the file. ``tokens`` is the ``conllu`` TokenList of all
    token lines (ids parsed as ints or ``(a, '-', b)`` / ``(a, '.', b)`` tuples), built on first
    use because parsing FEATS/DEPS/MISC of every token costs three quarters of the reading time
    and the parser needs none of it.
    """

    path: str
    lines: list[str]
    word_lines: list[int]
    line_numbers: list[int] = field(repr=False)
    metadata: Metadata = field(repr=False)

    @property
    def start_line(self) -> int:
        return self.line_numbers[0]

    @property
    def sent_id(self) -> str | None:
        return self.metadata.get("sent_id")

    @cached_property
    def tokens(self) -> TokenList:
        toks = [
            Token({name: (parser(cols, i) if (parser := DEFAULT_FIELD_PARSERS.get(name)) else cols[i])
                   for i, name in enumerate(DEFAULT_FIELDS)})
            for cols in (line.split("\t") for line in self.lines if not line.startswith("#"))
        ]
        return TokenList(toks, self.metadata, default_fields=DEFAULT_FIELDS)

    def _column(self, i: int) -> list[str]:
        return [self.lines[k].split("\t")[i] for k in self.word_lines]

    @cached_property
    def words(self) -> list[str]:
        return self._column(1)

    @cached_property
    def upos(self) -> list[str]:
        return self._column(3)

    @cached_property
    def heads(self) -> list[int]:
        return [int(h) for h in self._column(_HEAD)]

    @cached_property
    def deprels(self) -> list[str]:
        return self._column(_DEPREL)

    def __len__(self) -> int:
        return len(self.word_lines)


def _parse(path: str, line_no: int, cols: list[str], i: int, parser: Callable[[str], Any]) -> Any:
    try:
        return parser(cols[i])
    except ParseException as e:
        raise DataFormatError(path, str(e), line=line_no, field=DEFAULT_FIELDS[i].upper()) from None


def _build_sentence(path: str, block: list[tuple[int, str]]) -> Sentence:
    """Validate one blank-line-separated block; every error names the offending line."""
    metadata = Metadata()
    word_lines: list[int] = []
    seen_token = False
    for k, (line_no, line) in enumerate(block):
        if line.startswith("#"):
            if seen_token:
                raise DataFormatError(path, "comment line inside a sentence", line=line_no,
                                      expected="comments before the first token line")
            for key, value in parse_comment_line(line):
                metadata[key] = value
            continue
        seen_token = True
        cols = line.split("\t")
        if len(cols) != 10:
            raise DataFormatError(path, f"{len(cols)} tab-separated columns", line=line_no,
                                  expected="10 columns: ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC")
        tid = _parse(path, line_no, cols, 0, parse_id_value)
        n_words = len(word_lines)
        if isinstance(tid, int):
            if tid != n_words + 1:
                raise DataFormatError(path, f"word ID {cols[0]} out of order", line=line_no, field="ID",
                                      expected=str(n_words + 1))
            if not isinstance(_parse(path, line_no, cols, _HEAD, parse_int_value), int):
                raise DataFormatError(path, f"HEAD {cols[_HEAD]!r} is not a number", line=line_no,
                                      field="HEAD", expected="an integer word ID or 0")
            word_lines.append(k)
        elif tid is None:
            raise DataFormatError(path, "empty ID", line=line_no, field="ID")
        elif tid[1] == "-" and tid[0] != n_words + 1:
            raise DataFormatError(path, f"multiword token range {cols[0]} does not start at the next word",
                                  line=line_no, field="ID", expected=f"{n_words + 1}-...")
        elif tid[1] == "." and tid[0] != n_words:
            raise DataFormatError(path, f"empty node {cols[0]} is not after word {tid[0]}",
                                  line=line_no, field="ID", expected=f"{n_words}.N")
    if not word_lines:
        raise DataFormatError(path, "sentence without any word lines", line=block[0][0])

    sentence = Sentence(path, [line for _, line in block], word_lines, [no for no, _ in block], metadata)
    _check_tree(sentence)
    return sentence


def _check_tree(s: Sentence) -> None:
    heads = s.heads
    n = len(heads)
    word_line_no = [s.line_numbers[k] for k in s.word_lines]
    for i, h in enumerate(heads):
        if not 0 <= h <= n:
            raise DataFormatError(s.path, f"HEAD {h} points outside the sentence of {n} words",
                                  line=word_line_no[i], field="HEAD", expected=f"0..{n}")
    roots = [i for i, h in enumerate(heads) if h == 0]
    if not roots:
        raise DataFormatError(s.path, "sentence has no root (no word with HEAD 0)", line=word_line_no[0],
                              field="HEAD")
    if len(roots) > 1:
        raise DataFormatError(s.path, f"sentence has {len(roots)} roots (words {[r + 1 for r in roots]})",
                              line=word_line_no[roots[1]], field="HEAD", expected="exactly one word with HEAD 0")
    cycle = find_cycle(heads)
    if cycle is not None:
        first = min(cycle)
        shown = " -> ".join(str(c) for c in sorted(cycle)[:8])
        raise DataFormatError(s.path, f"cycle among words {shown}", line=word_line_no[first - 1],
                              field="HEAD", expected="a tree")


def read_conllu(path: str | Path) -> list[Sentence]:
    """Read and validate a CoNLL-U file (``.gz`` allowed).

    Raises :class:`DataFormatError` naming the file and line for: a token line without exactly
    10 tab-separated columns, unparsable fields, word IDs not 1..n in order, a HEAD outside the
    sentence, no root or several roots, a cycle, whitespace-only lines, and a file with no
    sentences.
    """
    path_s = str(path)
    sentences: list[Sentence] = []
    block: list[tuple[int, str]] = []
    for line_no, line in iter_lines(path):
        if line.strip() == "":
            if line:
                raise DataFormatError(path_s, "whitespace-only line", line=line_no,
                                      expected="an empty line between sentences")
            if block:
                sentences.append(_build_sentence(path_s, block))
                block = []
            continue
        block.append((line_no, line))
    if block:
        sentences.append(_build_sentence(path_s, block))
    if not sentences:
        raise DataFormatError(path_s, "no sentences (empty file)")
    return sentences


def write_conllu(
    sentences: Sequence[Sentence],
    heads: Sequence[Sequence[int]],
    deprels: Sequence[Sequence[str]],
    path: str | Path,
) -> None:
    """Write system output: the gold lines with HEAD and DEPREL of every syntactic word replaced.

    Comments, multiword-token and empty-node lines and all other columns (including DEPS, so
    enhanced-graph scores of the result are meaningless) are copied verbatim. The file is written
    to a temporary name in the same directory and renamed into place, so readers never see a
    half-written file. ``.gz`` paths are gzipped.
    """
    if not (len(sentences) == len(heads) == len(deprels)):
        raise ValueError(f"{len(sentences)} sentences but {len(heads)} head lists and {len(deprels)} deprel lists")
    out: list[str] = []
    for k, (s, hs, rs) in enumerate(zip(sentences, heads, deprels)):
        n = len(s)
        if len(hs) != n or len(rs) != n:
            raise ValueError(f"sentence {k} ({s.sent_id}) has {n} words but {len(hs)} heads and {len(rs)} deprels")
        lines = list(s.lines)
        for li, h, r in zip(s.word_lines, hs, rs):
            h = int(h)
            if not 0 <= h <= n:
                raise ValueError(f"sentence {k} ({s.sent_id}): head {h} outside 0..{n}")
            if not r or "\t" in r or "\n" in r or " " in r:
                raise ValueError(f"sentence {k} ({s.sent_id}): invalid deprel {r!r}")
            cols = lines[li].split("\t")
            cols[_HEAD], cols[_DEPREL] = str(h), r
            lines[li] = "\t".join(cols)
        out.extend(lines)
        out.append("")
    text = "\n".join(out) + "\n"

    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw:
            data = text.encode("utf-8")
            if target.name.endswith(".gz"):
                # mtime=0 and no file name in the header: identical output gives identical bytes
                with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
                    gz.write(data)
            else:
                raw.write(data)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; output files are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
