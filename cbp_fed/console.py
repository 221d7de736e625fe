"""Rich output that keeps its content when it goes to a log, a pipe or CI instead of a terminal.

Rich takes 80 columns wherever its stream is not a terminal, so a wide table comes out with its cells
cut ("seco…") and long lines wrapped: exactly where people read results afterwards (`make demo > log`).
Off a terminal these consoles are wide enough never to cut: a table takes the width of its content.
"""

from __future__ import annotations

import rich
from rich.console import Console

PIPE_WIDTH = 10_000
"""Columns of a console that does not write to a terminal: wider than any table or line printed here."""


def make_console(stderr: bool = False) -> Console:
    """A Console on stdout (or stderr) at the terminal's width, or ``PIPE_WIDTH`` when that stream is
    not a terminal (tables are not expanded, so they stay as wide as their content)."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=PIPE_WIDTH)


def keep_lines_whole() -> None:
    """The same for rich's global console, which progress displays use (a search's or SDT's bar, printed
    once, finished, off a terminal): its line is not cut at 80 columns either."""
    if not rich.get_console().is_terminal:
        rich.reconfigure(width=PIPE_WIDTH)
