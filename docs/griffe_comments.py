"""A griffe extension (``extensions:`` of the mkdocstrings handler in ``mkdocs.yml``): ``#:`` comments as
attribute docstrings.

The package documents fields and constants with Sphinx-style ``#:`` comments, on the line of the assignment
(``power_mw: Array  #: charge and discharge power limit P (MW)``) or on the lines just above it. griffe
reads only string docstrings, so without this the API reference would leave those attributes out.
"""

from __future__ import annotations

import ast
from typing import Any

import griffe


def _comment_of(lines: list[str], first: int, last: int) -> str | None:
    """The ``#:`` text of an assignment on lines ``first..last`` (1-based): trailing, else the block above."""
    trailing = lines[last - 1].split("#:", 1)
    if len(trailing) == 2 and trailing[1].strip():
        return trailing[1].strip()
    above, i = [], first - 2
    while i >= 0 and lines[i].strip().startswith("#:"):
        above.insert(0, lines[i].strip()[2:].strip())
        i -= 1
    return " ".join(above) if above else None


class HashColonComments(griffe.Extension):
    """Give an attribute without a docstring the text of its ``#:`` comment."""

    def on_attribute_instance(self, *, node: Any, attr: griffe.Attribute, agent: Any, **kwargs: Any) -> None:
        if attr.docstring is not None or not isinstance(node, ast.AST) or attr.lineno is None:
            return
        try:
            lines = attr.lines_collection[attr.filepath]
        except (KeyError, TypeError):
            return
        last = getattr(node, "end_lineno", None) or attr.endlineno or attr.lineno
        text = _comment_of(lines, attr.lineno, last)
        if text:
            attr.docstring = griffe.Docstring(text, lineno=attr.lineno, endlineno=last, parent=attr)
