"""Reading data files as UTF-8 text, and remembering what was parsed within one process.

Decoding goes through :func:`decode_utf8` so that a file with non-UTF-8 bytes is a
:class:`DataFormatError` naming the file and line, never a ``UnicodeDecodeError`` traceback.

:func:`memoised` keeps parsed files for the life of the process: the run's pre-flight parses every
file the run will read (so that a malformed one is reported before any training), and the run then
gets the same parse back instead of reading the file a second time.
"""
from __future__ import annotations

import gzip
import json
import zlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from xbench.errors import DataFormatError, XbenchError

T = TypeVar("T")

# Enough for the largest run (an MLQA G-XLT matrix reads 49 evaluation files plus training data);
# bounded so that a long-lived process (the test suite) does not keep every file it ever parsed.
_MAX_ENTRIES = 128
_parsed: OrderedDict[tuple[Any, ...], Any] = OrderedDict()


def decode_utf8(raw: bytes, path: str | Path) -> str:
    """``raw`` as text; a decoding error names the file, the line and the byte offset."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataFormatError(path, f"not UTF-8 text ({e.reason} at byte {e.start}: {raw[e.start:e.start + 4]!r})",
                              line=line, expected="UTF-8 encoded text") from None


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a file, gunzipped for ``*.gz``; unreadable or corrupt files are clear errors."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise XbenchError(f"{path}: no such file") from None
    except OSError as e:
        raise XbenchError(f"{path}: cannot read: {e.strerror or e}") from None
    if not path.name.endswith(".gz"):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataFormatError(path, f"cannot decompress: corrupt or truncated gzip data ({e})") from None


def read_text(path: str | Path) -> str:
    """A UTF-8 text file (``*.gz`` gunzipped) as one string, newlines untouched."""
    return decode_utf8(read_bytes(path), path)


def parse_json_line(text: str, path: str | Path, line: int) -> Any:
    """One JSONL line parsed; a malformed one is a DataFormatError naming the file and line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"not valid JSON ({exc.msg})", line=line) from None


def read_jsonl(path: str | Path) -> list[tuple[int, Any]]:
    """(line number, record) for every non-blank line of a JSONL file (``*.gz`` gunzipped).

    The line numbers let a caller that checks the records' fields name the line of a bad one.
    """
    lines = read_text(path).splitlines()
    return [(n, parse_json_line(text, path, n)) for n, text in enumerate(lines, start=1) if text.strip()]


def memoised(reader: Callable[..., T], path: str | Path, *args: Any, **kwargs: Any) -> T:
    """``reader(path, *args, **kwargs)``, parsed once per process while the file is unchanged.

    The key holds the file's size and modification time, the same identity the data hashes trust
    (xbench.data.sources.file_hash), so a file edited between two reads is parsed again. A list
    result is handed out as a new list each time, so a caller that reorders or cuts its copy does
    not change what the next caller gets; the elements are shared and must not be modified.
    """
    p = Path(path)
    st = p.stat()
    key = (getattr(reader, "__module__", ""), getattr(reader, "__qualname__", repr(reader)), str(p.resolve()),
           st.st_mtime_ns, st.st_size, _freeze(args), _freeze(kwargs))
    if key in _parsed:
        _parsed.move_to_end(key)
        value = _parsed[key]
    else:
        value = reader(path, *args, **kwargs)
        _parsed[key] = value
        while len(_parsed) > _MAX_ENTRIES:
            _parsed.popitem(last=False)
    return list(value) if isinstance(value, list) else value  # type: ignore[return-value]


def _freeze(value: Any) -> Any:
    """A hashable stand-in for reader arguments (label lists, placeholder sets, option dicts)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(_freeze(v) for v in value)
    return value


def clear_memo() -> None:
    """Forget every parsed file (tests)."""
    _parsed.clear()
