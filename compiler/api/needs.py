"""What the API says when a job needs the compiler's dependencies on a runtime-only install."""
from __future__ import annotations

from contextlib import contextmanager

from reidc.compiler.base.errors import UserError


class MissingDependencyError(UserError, ImportError):
    """A job that needs a package this installation lacks (`pip install 'reidc[compile]'`)."""


@contextmanager
def needs_compiler(what: str):
    """Turn a missing third-party module (torch, networkx, ...) met while doing `what` into one
    line saying how to install it; reidc's own missing modules stay bugs."""
    try:
        yield
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] == "reidc":
            raise
        raise MissingDependencyError(f"{what} needs {e.name}, which is not installed: "
                                     "pip install 'reidc[compile]' (the compiler's dependencies)") from None
