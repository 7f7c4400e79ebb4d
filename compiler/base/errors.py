"""Errors a user can cause, and the one line the CLI prints for any error.

Every user error derives from `UserError`: the CLI prints it as one line and exits 1, and
`reidc bench` re-raises one that a worker process reported under its own class. Each layer
defines its own where nothing else needs it (targets/presets.py, the tuning database...); the
frontend's, the runtime's and the verifier's are here, so catching them imports nothing heavy.
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave reidc (or a machine that lacks something), not a bug."""


class ArchError(UserError, ValueError):
    """An architecture spec (arch.json, CM-NAS config.cfg, zoo name) that is malformed or unsupported."""


class CaptureError(UserError, ValueError):
    """A module or .pt2 program that uses something reidc cannot compile (names the op and where)."""


class UnsupportedOpError(CaptureError):
    """An op (or an op's setting) reidc has no lowering for; the message names the op and the
    module or node it is at."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read safely or does not fit its architecture."""


class VerificationError(UserError, RuntimeError):
    """The compiled model disagrees with PyTorch; no artifact is written."""


class InputError(UserError, ValueError):
    """A run input (images, modality vector) that does not fit the artifact."""


class ArtifactError(UserError, ValueError):
    """An artifact directory that is missing, incomplete or from another TVM."""


class DatasetError(UserError, ValueError):
    """A dataset folder that does not have the layout it claims."""


class EngineError(RuntimeError):
    """A benchmark worker failed or died (crash, signal, killed); one line naming the engine."""


def user_error_class(name: str) -> type[UserError] | None:
    """The user-error class called `name` among those imported so far (None if none is)."""
    todo = [UserError]
    while todo:
        cls = todo.pop()
        if cls.__name__ == name:
            return cls
        todo.extend(cls.__subclasses__())
    return None


_OPS = {"mkdir": "create folder", "makedirs": "create folder", "open": "open", "write_text": "write",
        "write_bytes": "write", "read_text": "read", "read_bytes": "read", "replace": "rename",
        "rename": "rename", "unlink": "remove", "rmtree": "remove", "mkstemp": "create a file in",
        "mkdtemp": "create a folder in", "copy2": "copy", "copyfile": "copy", "iterdir": "list", "stat": "read",
        "chmod": "change the mode of", "save": "write", "load": "read"}


def one_line(e: BaseException) -> str:
    """An exception as the single line the CLI prints. File-system errors name the operation
    (from the innermost frame that raised it) and the path."""
    if isinstance(e, OSError) and (e.filename or e.strerror):
        tb, op = e.__traceback__, None
        while tb is not None:
            op = _OPS.get(tb.tb_frame.f_code.co_name, op)
            tb = tb.tb_next
        path = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
        return f"cannot {op or 'access'} {path}: {e.strerror or e}"
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    if isinstance(e, KeyError) and text:
        return f"missing entry {text}"
    return text or type(e).__name__
