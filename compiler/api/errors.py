"""Every error reidc raises for a user's input, as classes to catch. Each carries the one line
the CLI prints (`str(e)`); all but `EngineError` (a benchmark worker that failed) derive from
`UserError`."""
from compiler.base.atomic import OutputError
from compiler.base.errors import (ArtifactError, DatasetError, EngineError, InputError, UserError,
                                  VerificationError)
from compiler.tunedb.records import TuningDatabaseError
from frontend.errors import ArchError, CaptureError, CheckpointError, UnsupportedOpError
from targets.presets import TargetError, ToolchainError

__all__ = ["UserError", "ArchError", "CaptureError", "UnsupportedOpError", "CheckpointError", "TargetError",
           "ToolchainError", "VerificationError", "InputError", "ArtifactError", "OutputError",
           "TuningDatabaseError", "DatasetError", "EngineError"]
