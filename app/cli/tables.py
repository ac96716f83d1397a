"""How ``multusctl -o table`` looks: aligned columns, relative times, short durations and sizes.

Pure functions from the JSON documents (``app.store.queries`` shapes, already decoded) to text
lines; no I/O. On multusctl's start-up path, so it imports only ``time``: not ``datetime`` or
``typing``. Times are the API's RFC 3339 UTC strings (``2026-05-01T10:00:00.123456Z``), read by
hand into seconds since the epoch; any other offset goes to ``datetime`` (imported then).
Every cell is one line (newlines become spaces) and an empty cell is ``-``, so columns stay
aligned and a script splitting on whitespace still finds every column; a character a terminal
would act on (an escape sequence a plugin's stderr carried into an error, a bidi override) is
shown as its escape, so nothing recorded can redraw the operator's terminal. ``fields`` values and
``error`` texts are one such line too.
"""

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, TypeAlias

    Row: TypeAlias = Mapping[str, Any]
    Column: TypeAlias = tuple[str, str | Callable[[Row], Any]]
    """A title and what its cells show: a key of the row (its value as it is), or a function of it."""


def table(columns: "Sequence[Column]", rows: "Sequence[Row]") -> list[str]:
    """A header line and one line per row, columns separated by two spaces, left-aligned.

    Built a column at a time (a history table is thousands of cells, drawn on every multusctl
    run): a column's cells are read in one comprehension, checked in one go (``_cells``), and
    each line is one ``%`` format. The last column is not padded: no line ends in spaces."""
    grid = []
    for title, render in columns:
        values = [row[render] for row in rows] if isinstance(render, str) else [render(row) for row in rows]
        grid.append([title, *_cells(values)])
    widths = [max(map(len, column)) for column in grid]
    template = "  ".join([*(f"%-{width}s" for width in widths[:-1]), "%s"])
    return [template % line for line in zip(*grid, strict=True)]


def _cells(values: "list[Any]") -> list[str]:
    """Each value as ``_cell`` makes it. Most columns are plain one-line strings, which stay as
    they are but for an empty one: joined with ``|``, a single scan of the text for each rule
    (printable, no space beside a ``|`` or an end, no double space) finds a value that breaks
    one; a ``|`` inside a value can only send the column to ``_cell``, never let one through."""
    try:
        joined = "|".join(values)
    except TypeError:  # not all strings
        return [_cell(value) for value in values]
    if (
        joined.isprintable()
        and "  " not in joined
        and "| " not in joined
        and " |" not in joined
        and joined[:1] != " "
        and joined[-1:] != " "
    ):
        return [value or "-" for value in values] if "" in values else values
    return [_cell(value) for value in values]


def _cell(value: object) -> str:
    """One line, whitespace runs as one space, ``-`` when empty; any other character that is not
    printable (a terminal escape, a bidi override, a lone surrogate) written as its Python escape
    (``\\x1b``), never sent to the terminal as it is."""
    text = value if type(value) is str else str(value)
    if text.isprintable() and text[:1] != " " and text[-1:] != " " and "  " not in text:
        return text or "-"  # the only whitespace a printable string has is single inner spaces
    text = " ".join(text.split())
    if not text.isprintable():
        text = "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)
    return text or "-"


def epoch(value: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 time (``None`` for no time)."""
    if not value:
        return None
    if len(value) == 27 and value[26] == "Z" and value[19] == "." and value[16] == ":":
        # the API's own spelling, 2026-05-01T10:00:00.123456Z: the general reading below, in fewer
        # steps (the same sum, so the same float: its minute, then whole seconds, then the fraction)
        minute = _MINUTES.get(value[:16])
        if minute is None:
            minute = _minute(value[:16])
        numbers = value[17:19] + value[20:26]
        if minute is not None and numbers.isascii() and numbers.isdigit():
            return minute + int(value[17:19]) + float(value[19:26])
    if len(value) >= 19 and value[10] in "Tt " and value[13] == ":" and value[16] == ":":
        tail = value[19:]
        fraction = ""
        if tail[:1] == ".":
            digits = len(tail) - len(tail[1:].lstrip("0123456789"))
            fraction, tail = tail[:digits], tail[digits:]
        clock = value[11:13] + value[14:16] + value[17:19]
        midnight = _MIDNIGHTS.get(value[:10])
        if midnight is None:
            midnight = _midnight(value[:10])
        if tail in _UTC and midnight is not None and clock.isascii() and clock.isdigit():
            seconds = int(clock[:2]) * 3600 + int(clock[2:4]) * 60 + int(clock[4:])
            return midnight + seconds + (float(fraction) if len(fraction) > 1 else 0.0)
    from datetime import datetime  # another offset: rare, and the exact rules are datetime's

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


_UTC = ("Z", "z", "+00:00", "-00:00")
_MIDNIGHTS: dict[str, int] = {}
"""Seconds since the epoch of each ``YYYY-MM-DD`` seen: a table's rows share a few dates."""


_MINUTES: dict[str, int] = {}
"""Seconds since the epoch of each ``YYYY-MM-DDTHH:MM`` seen: a table's rows share a few minutes."""


def _minute(prefix: str) -> int | None:
    clock = prefix[11:13] + prefix[14:16]
    midnight = _MIDNIGHTS.get(prefix[:10])
    if midnight is None:
        midnight = _midnight(prefix[:10])
    if midnight is None or prefix[10] + prefix[13] != "T:" or not (clock.isascii() and clock.isdigit()):
        return None
    _MINUTES[prefix] = seconds = midnight + int(clock[:2]) * 3600 + int(clock[2:]) * 60
    return seconds


def _midnight(date: str) -> int | None:
    digits = date[:4] + date[5:7] + date[8:10]
    if date[4:5] != "-" or date[7:8] != "-" or len(date) != 10 or not (digits.isascii() and digits.isdigit()):
        return None
    _MIDNIGHTS[date] = seconds = _days_from_civil(int(date[:4]), int(date[5:7]), int(date[8:10])) * 86400
    return seconds


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def age(value: str | None, *, now: float | None = None) -> str:
    """How long ago, kubectl style: ``0s``, ``12s``, ``3m``, ``2h``, ``4d``; ``-`` for no time.

    ``now`` is seconds since the epoch (default: the clock)."""
    moment = epoch(value)
    if moment is None:
        return "-"
    seconds = max(0.0, (time.time() if now is None else now) - moment)
    if seconds >= 86400:
        return f"{int(seconds // 86400)}d"
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60:
        return f"{int(seconds // 60)}m"
    return f"{int(seconds)}s"


def ago(value: str | None, *, now: float | None = None) -> str:
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


def joined(values: "Sequence[Any] | None") -> str:
    """``a,b`` (``-`` for none)."""
    if not values:
        return "-"
    try:
        return ",".join(values) or "-"
    except TypeError:  # not all strings
        return ",".join(str(value) for value in values) or "-"


def error(value: "Mapping[str, Any] | None") -> str:
    """``11 no capacity (retry)`` from a document's ``error``; ``-`` when there is none."""
    if not value:
        return "-"
    code = value.get("code")
    text = " ".join(
        str(part) for part in (code if code is not None else "", value.get("msg") or "") if part != ""
    )
    details = value.get("details")
    return _cell(f"{text} ({details})" if details else text)


def counts(values: "Mapping[str, int] | None") -> str:
    """``ready 2, adding 1`` (``none`` when empty)."""
    if not values:
        return "none"
    return ", ".join(f"{state} {count}" for state, count in sorted(values.items()))


def fields(pairs: "Sequence[tuple[str, str]]") -> list[str]:
    """``Label:  value`` lines with the values aligned."""
    width = max(len(label) for label, _ in pairs) + 1
    return [f"{(label + ':').ljust(width)}  {_cell(value)}" for label, value in pairs]
