"""The frontend's user errors, in a module that imports nothing heavy: the CLI catches them
without loading PyTorch."""
from compiler.base.errors import UserError


class ArchError(UserError, ValueError):
    """An architecture spec (arch.json, CM-NAS config.cfg, zoo name) that is malformed or unsupported."""


class CaptureError(UserError, ValueError):
    """A module or .pt2 program that uses something reidc cannot compile (names the op and where)."""


class UnsupportedOpError(CaptureError):
    """An op (or an op's setting) reidc has no lowering for; the message names the op and the
    module or node it is at."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read safely or does not fit its architecture."""
