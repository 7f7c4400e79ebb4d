"""What every command shares: the two consoles, the error line, progress lines, option parsers."""
from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from ..base.errors import one_line

err = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 160)  # tables stay whole when piped


def _fail(e: Exception) -> None:
    err.print(f"[bold red]error:[/] {escape(one_line(e))}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _progress(msg: str) -> None:
    err.print(f"[dim]reidc:[/] {escape(msg)}", highlight=False)


def _hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--input-size {text!r}: expected HxW, e.g. 256x128") from None
    return h, w


def _duration(text: str) -> float:
    """`20m`, `90s`, `1.5h` or plain seconds."""
    import math
    units = {"s": 1, "m": 60, "h": 3600}
    t = text.strip().lower()
    try:
        s = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        s = math.nan
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"--time-limit {text!r}: expected e.g. 20m, 90s or 1.5h (a positive duration)")
    return s
