"""Exceptions of ``jaxvpp``: bad input data, infeasible coordination targets and numerical failures.

``InputError`` locates the problem: ``file`` (the file's name as given), ``row`` (the line number in the
file, header = line 1, so the first data row is row 2) and ``column`` (the column name, or a command-line
parameter such as ``--alpha``, shown as ``parameter --alpha``). Any of them may be ``None`` when it does
not apply.
"""

from __future__ import annotations

import os


class InputError(ValueError):
    """Invalid input data, located by file, row (line number, header = 1) and column.

    ``str(exc)`` reads e.g. ``fleet.csv, row 4, column 'soc_min': soc_min (0.95) must be below soc_max (0.9)``;
    parts that are ``None`` are left out.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | os.PathLike[str] | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = None if file is None else str(file)
        self.row = None if row is None else int(row)
        self.column = column

    def location(self) -> str:
        """The location prefix, e.g. ``fleet.csv, row 4, column 'soc_min'`` or ``parameter --alpha`` (may be empty)."""
        parts = []
        if self.file is not None:
            parts.append(self.file)
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.column is not None:
            # a command-line option (``--alpha``) is a parameter, not a file column
            parts.append(f"parameter {self.column}" if self.column.startswith("-") else f"column {self.column!r}")
        return ", ".join(parts)

    def __str__(self) -> str:
        loc = self.location()
        return f"{loc}: {self.message}" if loc else self.message

    def __reduce__(self):  # keep the keyword-only attributes through pickling (multiprocessing)
        return (_rebuild_input_error, (self.message, self.file, self.row, self.column))


def _rebuild_input_error(message: str, file: str | None, row: int | None, column: str | None) -> InputError:
    return InputError(message, file=file, row=row, column=column)


class InfeasibleTargetError(RuntimeError):
    """The fleet cannot follow the requested target; ``steps`` lists the offending 0-based step indices."""

    def __init__(self, message: str, steps: list[int] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.steps: list[int] = [int(s) for s in (steps or [])]

    def __str__(self) -> str:
        if not self.steps:
            return self.message
        shown = ", ".join(str(s) for s in self.steps[:20])
        more = f" (and {len(self.steps) - 20} more)" if len(self.steps) > 20 else ""
        return f"{self.message} (steps, 0-based: {shown}{more})"

    def __reduce__(self):
        return (InfeasibleTargetError, (self.message, self.steps))


class NumericalError(RuntimeError):
    """A solver returned non-finite values; nothing is written."""
