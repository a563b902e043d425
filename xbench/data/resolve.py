"""The one local-then-hub lookup of a task's data: the card's local layouts under the data roots,
in order, then the card's hub dataset (docs/data.md).

A task type supplies how to read a local file (`read_local`, which may refuse a file, e.g. QA
files whose gold answers are blanked) and how to read the hub (`from_hub`); this module does the
order, the provenance and the one message when neither has the data: what was looked for (or
refused), where the hub would have it, and why the hub was not used.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from xbench.data.sources import Provenance, data_roots, no_data_message
from xbench.errors import DataNotFoundError, XbenchError

T = TypeVar("T")


@dataclass(frozen=True)
class Refused:
    """A local file that exists but cannot be used; the lookup goes on, and the message names it."""

    reason: str


def local_then_hub(rels: Sequence[str], read_local: Callable[[int, Path], T | Refused],
                   from_hub: Callable[[], tuple[T, Provenance]], *, data_dir: str | Path | None, what: str,
                   local_hint: str, hub_hint: str | None, notes: Sequence[str] = ()) -> tuple[T, Provenance]:
    """The examples of the first usable local file (`rels[i]` under the data roots, read by
    `read_local(i, path)`), else of `from_hub()`.

    `from_hub` raises when the hub cannot serve (offline, no such config, the card names no hub
    source); that exception's type and first line close the message, after `notes` (what the user
    can do instead). An XbenchError from either reader is a problem with the data itself and passes
    through unchanged.
    """
    roots = data_roots(data_dir)
    tried: list[str] = []
    refused: list[str] = []
    if roots is not None:
        for rel in rels:
            tried.extend(map(str, roots.candidates(rel)))
        for i, path in roots.ordered(list(rels)):
            got = read_local(i, path)
            if isinstance(got, Refused):
                refused.append(got.reason)
                continue
            return got, Provenance("local", files=[roots.record(path)])
    try:
        return from_hub()
    except XbenchError:
        raise
    except Exception as exc:  # datasets raises many types for "offline" / "not reachable" / "no such split"
        msg = no_data_message(what, local_hint, hub_hint)
        if refused:
            msg += "\n  refused: " + "\n  refused: ".join(refused)
        elif tried:
            msg += "\n  looked for: " + ", ".join(tried)
        for note in notes:
            msg += "\n  " + note
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise DataNotFoundError(f"{msg}\n  ({type(exc).__name__}: {detail})") from None


def no_hub(reason: str) -> Callable[[], Any]:
    """A `from_hub` for a card without a hub source: it fails, and its reason ends the message."""
    def fail() -> Any:
        raise LookupError(reason)
    return fail
