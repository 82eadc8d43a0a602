"""On a terminal, a table shows data from the database as text: no markup,
no terminal control."""

from __future__ import annotations

import io

from rich.console import Console

HOSTILE = "[/][bold red]boom\x1b[2J\x1b]0;owned\x07\x9b31m\u202eevil\r"


def no_control(text: str) -> bool:
    return not any(ch in text for ch in "\x1b\x07\x9b\r\u202e")


def test_on_a_terminal_a_table_shows_data_as_text(monkeypatch) -> None:
    from orchestrator import output

    screen = io.StringIO()
    monkeypatch.setattr(output, "out", Console(file=screen, width=120, color_system=None,
                                               emoji=False, highlight=False))
    monkeypatch.setattr(output, "stdout_is_terminal", lambda: True)
    output.table(("key", "state"), [(HOSTILE, output.Styled(":warning: open", "red"))],
                 title=HOSTILE)
    shown = screen.getvalue()
    assert "[/][bold red]boom" in shown and ":warning: open" in shown and no_control(shown)
