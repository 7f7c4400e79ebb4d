"""Every error reidc raises for a user's input, as classes to catch. Each carries the one line
the CLI prints (`str(e)`); all but `EngineError` (a benchmark worker that failed) derive from
`UserError`."""
from reidc.compiler.base.atomic import OutputError
from reidc.compiler.base.errors import (ArchError, ArtifactError, CaptureError, CheckpointError, DatasetError,
                                        EngineError, InputError, UnsupportedOpError, UserError, VerificationError)
from reidc.compiler.tunedb.records import TuningDatabaseError
from reidc.targets.presets import TargetError, ToolchainError

__all__ = ["UserError", "ArchError", "CaptureError", "UnsupportedOpError", "CheckpointError", "TargetError",
           "ToolchainError", "VerificationError", "InputError", "ArtifactError", "OutputError",
           "TuningDatabaseError", "DatasetError", "EngineError"]
