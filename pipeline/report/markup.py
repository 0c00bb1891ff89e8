"""Small helpers for writing escaped HTML: every piece of text goes through `esc`.

Nothing here reads files; each function takes plain values and returns an HTML string.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any


def esc(value: Any) -> str:
    """`value` as text, escaped for HTML element content and quoted attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def is_number(value: Any) -> bool:
    """True for finite ints and floats (bool excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: Any, digits: int | None = None) -> str:
    """A float with `digits` decimals (None: 4 below 10, 2 below 1000, else 1), ints as they
    are, "yes"/"no" for booleans, "-" for None, else str(value).

    Not escaped: pass the result through `esc` (the table helpers do).
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if digits is None:
            digits = 4 if abs(value) < 10 else 2 if abs(value) < 1000 else 1
        return f"{value:.{digits}f}"
    return str(value)


def tag(name: str, body: str = "", cls: str | None = None, **attrs: Any) -> str:
    """<name class=... attr=...>body</name>; `body` must already be HTML, attributes are escaped.

    A keyword ending in "_" has it dropped (`for_` -> `for`); "_" inside becomes "-".
    """
    parts = [name]
    if cls:
        parts.append(f'class="{esc(cls)}"')
    for key, value in attrs.items():
        if value is None:
            continue
        parts.append(f'{key.rstrip("_").replace("_", "-")}="{esc(value)}"')
    return f"<{' '.join(parts)}>{body}</{name}>"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    cls: str = "grid",
    row_classes: Sequence[str | None] | None = None,
    digits: Sequence[int | None] | None = None,
) -> str:
    """A table with escaped header and cell text.

    Cells are plain values (formatted with `fmt`) or `Raw` (HTML already built and escaped).
    row_classes: an optional CSS class per row (None for none).
    digits: decimals per column for float cells (None: `fmt`'s default).
    """
    head = "".join(tag("th", esc(h)) for h in headers)
    body = []
    for index, row in enumerate(rows):
        cells = "".join(
            tag(
                "td",
                c.html
                if isinstance(c, Raw)
                else esc(fmt(c, digits[column] if digits and column < len(digits) else None)),
                cls="num" if is_number(c) else None,
            )
            for column, c in enumerate(row)
        )
        row_cls = row_classes[index] if row_classes and index < len(row_classes) else None
        body.append(tag("tr", cells, cls=row_cls))
    return tag("table", tag("thead", tag("tr", head)) + tag("tbody", "".join(body)), cls=cls)


class Raw:
    """A table cell holding HTML that is already escaped."""

    __slots__ = ("html",)

    def __init__(self, html_text: str):
        self.html = html_text


def note(text: str, kind: str = "info") -> str:
    """A highlighted paragraph (kind: info, warn, error)."""
    return tag("p", esc(text), cls=f"note {kind}")


def badge(text: str, kind: str) -> str:
    """A small coloured label (kind: ok, bad, warn, neutral)."""
    return tag("span", esc(text), cls=f"badge {kind}")
