"""Errors a user can act on.

Anything raised as an :class:`XbenchError` is printed by the CLI as one clear message,
without a traceback, and the process exits non-zero. Everything else is a bug.
"""
from __future__ import annotations

from pathlib import Path


class XbenchError(Exception):
    """An error caused by input or configuration, with a message meant for the user."""

    exit_code = 2


class ConfigError(XbenchError):
    """One or more configuration problems, reported together (torchtune style)."""

    def __init__(self, problems: list[str] | str, source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            msg = head + self.problems[0]
        else:
            msg = head + f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(msg)


class DataFormatError(XbenchError):
    """A data file that does not follow its format; names the file, line and field."""

    def __init__(
        self,
        path: str | Path,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.path, self.line, self.field = str(path), line, field
        where = self.path + (f", line {line}" if line is not None else "")
        what = f"field '{field}': " if field else ""
        exp = f" (expected {expected})" if expected else ""
        super().__init__(f"{where}: {what}{message}{exp}")


class DataNotFoundError(XbenchError):
    """No local files and no reachable hub for a dataset."""


class TrainingDiverged(XbenchError):
    """A non-finite loss; the last good checkpoint is kept."""

    exit_code = 3
