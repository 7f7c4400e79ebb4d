"""reidc's Python API (re-exported as `reidc.*`): what the CLI does, as functions and objects.

    import reidc
    art = reidc.compile("ckpt/", target="host")       # or an nn.Module; verified against PyTorch
    feats = art.run(images, modality="infrared")       # numpy in, numpy out
    art.save("artifact/"); art = reidc.load("artifact/")

Importing it loads no PyTorch: `load` and `Artifact.run` need TVM's runtime and numpy only;
the compiler is imported when `compile`, `tune`, `search`, `bench` or `verify` is called."""
from reidc.compiler.base.version import __version__

from .artifact import INPUT_CONTRACT, Artifact, inspect, load
from .build import compile
from .errors import (ArchError, ArtifactError, CaptureError, CheckpointError, DatasetError, EngineError, InputError,
                     OutputError, TargetError, ToolchainError, TuningDatabaseError, UnsupportedOpError, UserError,
                     VerificationError)
from .jobs import bench, profile, search, tune, tune_report, verify
from .tools import (demo, export_zoo, qemu_server, run_files, runner_bundle, target_presets, train_zoo, zoo_model,
                    zoo_models)

__all__ = ["__version__", "INPUT_CONTRACT", "compile", "load", "inspect", "Artifact", "tune", "tune_report", "search", "bench", "profile", "verify",
           "zoo_model", "zoo_models", "export_zoo", "train_zoo", "target_presets", "run_files", "runner_bundle", "qemu_server", "demo",
           "UserError", "ArchError", "CaptureError", "UnsupportedOpError", "CheckpointError", "TargetError",
           "ToolchainError", "VerificationError", "InputError", "ArtifactError", "OutputError",
           "TuningDatabaseError", "DatasetError", "EngineError"]
