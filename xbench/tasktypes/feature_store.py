"""Tokenised features on disk as one Arrow IPC file: no pickle, memory-mapped on read.

Cache folders are often shared by a team, so nothing read from them may run code: an Arrow file
holds only typed buffers, and its schema metadata is JSON. A stored value is what the task types
produce: JSON-shaped data (dicts with string keys, lists, tuples, str, int, float, bool, None)
whose feature rows (a list of dicts with one set of keys) become the table, one column per key;
a column may hold numpy arrays (QA's context bounds). Tuples are recorded in the metadata and
restored, so a read-back value compares equal to the built one.
"""
from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import numpy as np

from xbench.atomic import atomic_write_bytes

_META = b"xbench.features"
_FORMAT = 1
_ROWS = "__rows__"
_TUPLE = "__tuple__"


class UnreadableEntry(Exception):
    """The file is not a feature cache entry this code wrote (corrupt, truncated or planted)."""


# ---------------------------------------------------------------------------------------- write
def _skeleton(value: Any, found: list[list[dict[str, Any]]]) -> Any:
    """JSON for everything but the feature rows, which are set aside (the first list of dicts)."""
    if isinstance(value, list) and value and not found and all(isinstance(v, dict) for v in value):
        found.append(value)
        return {_ROWS: True}
    if isinstance(value, tuple):
        return {_TUPLE: [_skeleton(v, found) for v in value]}
    if isinstance(value, list):
        return [_skeleton(v, found) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("feature cache: dict keys must be strings")
        return {k: _skeleton(v, found) for k, v in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"feature cache: cannot store a {type(value).__name__} outside the feature rows")


def _shape(value: Any) -> Any:
    """Where tuples are: None for a leaf, ["list"|"tuple", element shape] for a sequence."""
    if isinstance(value, (list, tuple)):
        inner = next((_shape(v) for v in value if v is not None), None)
        return ["tuple" if isinstance(value, tuple) else "list", inner]
    return None


def _has_tuple(shape: Any) -> bool:
    return shape is not None and (shape[0] == "tuple" or _has_tuple(shape[1]))


def _column(name: str, values: list[Any]) -> tuple[dict[str, Any], list[Any]]:
    import pyarrow as pa

    arrays = [v for v in values if isinstance(v, np.ndarray)]
    if arrays:
        dtype = arrays[0].dtype
        if len(arrays) != len(values) or any(a.dtype != dtype for a in arrays) or dtype.kind not in "biuf":
            raise TypeError(f"feature cache: column '{name}' mixes numpy arrays with other values or dtypes")
        data = pa.array([np.ascontiguousarray(a).tobytes() for a in arrays], type=pa.large_binary())
        shapes = pa.array([list(a.shape) for a in arrays], type=pa.list_(pa.int64()))
        return {"name": name, "kind": "ndarray", "dtype": dtype.str}, [data, shapes]
    shape = next((s for s in map(_shape, values) if s is not None), None)
    try:
        arr = pa.array(values)
    except (pa.ArrowException, TypeError, ValueError) as e:
        raise TypeError(f"feature cache: column '{name}' has values of mixed types ({e})") from e
    return {"name": name, "kind": "py", "shape": shape}, [arr]


def encode(value: Any) -> bytes:
    """The Arrow IPC file bytes of `value`."""
    import pyarrow as pa

    found: list[list[dict[str, Any]]] = []
    skeleton = _skeleton(value, found)
    rows = found[0] if found else []
    names = list(rows[0]) if rows else []
    if any(list(r) != names for r in rows):
        raise TypeError("feature cache: every feature row must have the same keys in the same order")
    columns, arrays, fields = [], [], []
    for name in names:
        meta, arrs = _column(name, [r[name] for r in rows])
        columns.append(meta)
        for j, a in enumerate(arrs):
            arrays.append(a)
            fields.append(f"{name}#{j}")
    meta = {"format": _FORMAT, "skeleton": skeleton, "columns": columns, "rows": len(rows)}
    table = pa.Table.from_arrays(arrays, names=fields) if arrays else pa.table({})
    table = table.replace_schema_metadata({_META: json.dumps(meta).encode("utf-8")})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def save(path: str | Path, value: Any) -> None:
    atomic_write_bytes(path, encode(value))


# ----------------------------------------------------------------------------------------- read
def _to_python(arr: Any) -> list[Any]:
    """Arrow array to Python values: list columns go through numpy and slicing, several times
    faster than Array.to_pylist on token ids."""
    import pyarrow as pa

    t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = _to_python(arr.values)
        o = arr.offsets.to_numpy().tolist()
        out = [inner[o[i]:o[i + 1]] for i in range(len(arr))]
        if arr.null_count:
            valid = arr.is_valid().to_numpy(zero_copy_only=False).tolist()
            out = [x if ok else None for x, ok in zip(out, valid)]
        return out
    if (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)) and arr.null_count == 0:
        return arr.to_numpy(zero_copy_only=False).tolist()
    return arr.to_pylist()


def _restore(value: Any, shape: Any) -> Any:
    if value is None or shape is None:
        return value
    items = [_restore(v, shape[1]) for v in value] if _has_tuple(shape[1]) else value
    return tuple(items) if shape[0] == "tuple" else items


def _from_skeleton(node: Any, rows: list[dict[str, Any]]) -> Any:
    if isinstance(node, dict):
        if node.get(_ROWS) is True and len(node) == 1:
            return rows
        if _TUPLE in node and len(node) == 1:
            return tuple(_from_skeleton(v, rows) for v in node[_TUPLE])
        return {k: _from_skeleton(v, rows) for k, v in node.items()}
    if isinstance(node, list):
        return [_from_skeleton(v, rows) for v in node]
    return node


def _decode(table: Any) -> Any:
    raw = (table.schema.metadata or {}).get(_META)
    if raw is None:
        raise UnreadableEntry("no xbench metadata")
    meta = json.loads(raw)
    if meta.get("format") != _FORMAT:
        raise UnreadableEntry(f"format {meta.get('format')!r}, expected {_FORMAT}")
    n = int(meta["rows"])
    names, cols = [], []
    for c in meta["columns"]:
        name = c["name"]
        names.append(name)
        if c["kind"] == "ndarray":
            dtype = np.dtype(c["dtype"])
            if dtype.kind not in "biuf":
                raise UnreadableEntry(f"column '{name}': dtype {dtype} is not numeric")
            data = table.column(f"{name}#0").combine_chunks().to_pylist()
            shapes = _to_python(table.column(f"{name}#1").combine_chunks())
            # Copies, so that they are writable like the arrays that were stored.
            cols.append([np.frombuffer(b, dtype=dtype).reshape(s).copy() for b, s in zip(data, shapes)])
        elif c["kind"] == "py":
            values = _to_python(table.column(f"{name}#0").combine_chunks())
            if _has_tuple(c.get("shape")):
                values = [_restore(v, c["shape"]) for v in values]
            cols.append(values)
        else:
            raise UnreadableEntry(f"column '{name}': unknown kind {c['kind']!r}")
        if len(cols[-1]) != n:
            raise UnreadableEntry(f"column '{name}' has {len(cols[-1])} rows, expected {n}")
    rows = [dict(zip(names, vals)) for vals in zip(*cols)] if names else []
    return _from_skeleton(meta["skeleton"], rows)


def load(path: str | Path) -> Any:
    """The value saved at `path`; UnreadableEntry for anything else (including a pickle)."""
    import pyarrow as pa

    gc_was_on = gc.isenabled()
    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
            # Offsets in a planted or truncated file could point outside its buffers.
            table.validate(full=True)
            # Millions of new lists would trigger the cyclic collector over and over (half the time);
            # they hold no cycles, so it is paused while they are made.
            gc.disable()
            return _decode(table)
    except UnreadableEntry:
        raise
    except (pa.ArrowException, OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise UnreadableEntry(f"{type(e).__name__}: {e}") from e
    finally:
        if gc_was_on:
            gc.enable()
