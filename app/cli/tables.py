"""How ``multusctl -o table`` looks: aligned columns, relative times, short durations and sizes.

Pure functions from the JSON documents (``app.store.queries`` shapes, already decoded) to text
lines; no I/O, no imports beyond the standard library, so rendering costs nothing at start-up.
Every cell is one line (newlines become spaces) and an empty cell is ``-``, so columns stay
aligned and a script splitting on whitespace still finds every column.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

Row = Mapping[str, Any]
Column = tuple[str, Callable[[Row], str]]


def table(columns: Sequence[Column], rows: Sequence[Row]) -> list[str]:
    """A header line and one line per row, columns separated by two spaces, left-aligned."""
    cells = [[_cell(render(row)) for _, render in columns] for row in rows]
    headers = [title for title, _ in columns]
    widths = [max([len(title), *(len(line[i]) for line in cells)]) for i, title in enumerate(headers)]
    lines = ["  ".join(title.ljust(width) for title, width in zip(headers, widths, strict=True)).rstrip()]
    lines.extend(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )
    return lines


def _cell(value: str) -> str:
    text = " ".join(str(value).split())
    return text or "-"


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def age(value: str | None, *, now: datetime | None = None) -> str:
    """How long ago, kubectl style: ``0s``, ``12s``, ``3m``, ``2h``, ``4d``; ``-`` for no time."""
    moment = parse_time(value)
    if moment is None:
        return "-"
    seconds = max(0.0, ((now or datetime.now(UTC)) - moment).total_seconds())
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{int(seconds // length)}{unit}"
    return f"{int(seconds)}s"


def ago(value: str | None, *, now: datetime | None = None) -> str:
    """``3m ago`` for prose (``status``, ``show`` headers); ``-`` for no time."""
    text = age(value, now=now)
    return text if text == "-" else f"{text} ago"


def duration_ms(value: float | None) -> str:
    """``850us``, ``12.3ms``, ``1.25s``."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}us"
    if value < 1000:
        return f"{value:.1f}ms"
    return f"{value / 1000:.2f}s"


def size(value: int) -> str:
    """``512 B``, ``1.2 KiB``, ``3.4 MiB``, ``1.0 GiB``."""
    amount = float(value)
    for unit in ("B", "KiB", "MiB"):
        if amount < 1024:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GiB"


def joined(values: Sequence[Any] | None) -> str:
    return ",".join(str(value) for value in values or ()) or "-"


def error(value: Mapping[str, Any] | None) -> str:
    """``11 no capacity (retry)`` from a document's ``error``; ``-`` when there is none."""
    if not value:
        return "-"
    code = value.get("code")
    text = " ".join(
        str(part) for part in (code if code is not None else "", value.get("msg") or "") if part != ""
    )
    details = value.get("details")
    return f"{text} ({details})" if details else text or "-"


def counts(values: Mapping[str, int] | None) -> str:
    """``ready 2, adding 1`` (``none`` when empty)."""
    if not values:
        return "none"
    return ", ".join(f"{state} {count}" for state, count in sorted(values.items()))


def fields(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """``Label:  value`` lines with the values aligned."""
    width = max(len(label) for label, _ in pairs) + 1
    return [f"{(label + ':').ljust(width)}  {value}" for label, value in pairs]
