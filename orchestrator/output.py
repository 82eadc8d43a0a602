"""What the command line prints, and how.

Every value read from the database is data, never markup or terminal
control: before rich sees it, it is stripped of control characters (ANSI
escape sequences as a whole) and its rich markup is escaped. When stdout is
not a terminal, a table is printed as tab-separated lines with a header and
whole values (no box drawing, no truncation), so `| grep` and `| cut` work;
JSON carries ISO 8601 timestamps.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import sys
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# emoji=False: ":warning:" in a value is text, not an icon.
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

# Whole escape sequences first (CSI, OSC up to its terminator, two-byte ESC
# sequences, their 8-bit forms), so that no "[31m" is left behind; then any
# other C0/C1 control character but tab and newline, and the bidirectional
# overrides that reorder what a terminal shows.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n"})


@dataclasses.dataclass(frozen=True)
class Styled:
    """A table cell with a rich style (the style is ours, the value is data)."""

    value: Any
    style: str


def clean(value: Any) -> str:
    """``value`` as text without terminal control: what may reach a terminal."""
    if value is None:
        return ""
    return _CONTROLS.sub("", _ESCAPES.sub("", str(value)))


def markup(value: Any) -> str:
    """``value`` as rich markup that shows exactly its (clean) text."""
    return escape(clean(value))


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def say(text: Any, *, to_stderr: bool = False) -> None:
    """A line of plain text, which may hold data: no markup, no control."""
    (err if to_stderr else out).print(clean(text), markup=False)


def say_markup(template: str, *values: Any) -> None:
    """A line of our markup with data filled in: ``say_markup("[red]{}[/]", reason)``."""
    out.print(template.format(*(markup(v) for v in values)))


def error(message: Any) -> None:
    err.print(f"error: {clean(message)}", markup=False)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
          title: str | None = None, show_header: bool = True) -> None:
    """A rich table on a terminal; tab-separated lines (header first) elsewhere."""
    if not stdout_is_terminal():
        lines = [columns] if show_header else []
        lines += [[_tsv(c.value if isinstance(c, Styled) else c) for c in row] for row in rows]
        for line in lines:
            click.echo("\t".join(line))
        return
    rendered = Table(*(escape(c) for c in columns), title=markup(title) if title else None,
                     show_header=show_header)
    for column in rendered.columns:
        column.overflow = "fold"
    for row in rows:
        rendered.add_row(*(f"[{c.style}]{markup(c.value)}[/]" if isinstance(c, Styled)
                           else markup(c) for c in row))
    out.print(rendered)


def timestamp(value: dt.datetime | None) -> str:
    """A point in time for a table cell: UTC, to the second."""
    if value is None:
        return ""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def age(seconds: float | None) -> str:
    """A duration for a table cell, in its two largest units: 3d04h, 2m05s."""
    if seconds is None:
        return ""
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _tsv(value: Any) -> str:
    return clean(value).translate(_TSV_ESCAPES)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def to_json(data: Any, *, indent: int | None = 2) -> str:
    """JSON text (ASCII only, so control characters are escaped too)."""
    return json.dumps(data, indent=indent, sort_keys=True, default=_json_default)


def print_json(data: Any, *, indent: int | None = 2) -> None:
    click.echo(to_json(data, indent=indent))
