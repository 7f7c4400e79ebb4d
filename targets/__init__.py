"""Target presets as data: TVM target dicts plus what reidc's schedules need to know."""
from .presets import (PRESETS, TargetError, TargetPreset, ToolchainError, get_target, host_features,
                      preset_from_manifest)

__all__ = ["PRESETS", "TargetError", "TargetPreset", "get_target", "host_features", "preset_from_manifest",
           "ToolchainError"]
