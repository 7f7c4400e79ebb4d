"""Errors a user can cause; the CLI prints them as one line and exits non-zero."""
from frontend.arch import ArchError
from frontend.capture import CaptureError
from frontend.checkpoint import CheckpointError
from targets import TargetError, ToolchainError


class VerificationError(RuntimeError):
    """The compiled model disagrees with PyTorch; no artifact is written."""


class InputError(ValueError):
    """A run input (images, modality vector) that does not fit the artifact."""


class ArtifactError(ValueError):
    """An artifact directory that is missing, incomplete or from another TVM."""


USER_ERRORS = (ArchError, CaptureError, CheckpointError, TargetError, ToolchainError, VerificationError,
               InputError, ArtifactError)
