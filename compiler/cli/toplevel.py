"""The `reidc` app itself: the top-level error handler, --debug and --version, and the script's
entry point. The commands register themselves on `app` when compiler/cli/__init__.py imports them."""
from __future__ import annotations

import os
import sys

import typer
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import TyperException

from ..api import UserError, __version__
from ..base.errors import one_line
from .common import err, out

_debug = {"on": False}


class _Guarded(TyperGroup):
    """The top-level handler: every command ends with its result, one `error:` line and exit 1,
    or (Ctrl-C) one `interrupted` line and exit 130; never a traceback unless --debug."""

    def invoke(self, ctx):
        import signal
        import warnings
        warnings.showwarning = lambda message, *a, **k: err.print(f"[yellow]warning:[/] {escape(str(message))}",
                                                                   highlight=False, soft_wrap=True)
        interrupted = []

        def on_sigint(signum, frame):  # remember it: TVM's FFI turns the KeyboardInterrupt raised
            interrupted.append(signum)  # inside a C++ call into a RuntimeError
            raise KeyboardInterrupt
        try:
            previous = signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread
            previous = None
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except KeyboardInterrupt:
            interrupted.append(signal.SIGINT)
        except Exception as e:  # noqa: BLE001  (the one place every other error is turned into a line)
            if not interrupted:
                if _debug["on"]:
                    raise
                internal = not isinstance(e, (UserError, OSError, ValueError))
                msg = f"{type(e).__name__}: {one_line(e)}" if internal else one_line(e)
                err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
                if internal:
                    err.print("[dim](a bug in reidc, not in your input: rerun with --debug for the traceback and "
                              "please report it)[/]", highlight=False)
                raise typer.Exit(1)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        err.print("interrupted: nothing half-written was kept (outputs are replaced only when complete)",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(130)


app = typer.Typer(cls=_Guarded, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="reidc: compile person re-identification networks for real hardware.")


def _version(value: bool):
    if value:
        out.print(f"reidc {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="show the full traceback of an error"),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print reidc's version and exit")):
    """reidc: compile person re-identification networks for real hardware."""
    _debug["on"] = debug


def main():  # pragma: no cover
    """The `reidc` script. After Ctrl-C the process ends at once once its one line is out:
    interpreter teardown would run TVM's destructors and join worker threads mid-task."""
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C outside a command (while starting up or exiting)
        err.print("interrupted", highlight=False)
        raise SystemExit(130)  # noqa: B904
    except SystemExit as e:
        if e.code == 130:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        raise
