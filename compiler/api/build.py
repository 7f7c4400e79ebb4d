"""`reidc.compile`: a checkpoint on disk or a module in memory -> a verified Artifact."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from .artifact import Artifact


def compile(model, target: str = "host", *, output: str | Path | None = None,
            modes: Sequence[str] | None = None, input_shape: tuple[int, int, int] | None = None,
            tuning_db: str | Path | None = None, batch: int | None = None, verify: bool = True,
            arch: str | Path | None = None, split_config: str | Path | None = None, weights: str = "model",
            feature: str | None = None, mixed_strategy: str | None = None, dump_ir: str | Path | None = None,
            seed: int = 0, progress: Callable[[str], None] | None = None) -> Artifact:
    """Compile `model` for `target` (a preset name such as "host", "x86-avx512", "rpi5",
    "cuda-sm80", or a TVM target JSON) and verify it against PyTorch on seeded inputs.

    model: a checkpoint (a reidc checkpoint folder, a .safetensors or weights-only .pt with
      `arch=`, CM-NAS's model.pth + `split_config=`, a .pt2 program), or a torch.nn.Module in
      memory: one of reidc's networks (frontend.models / frontend.bire), or any module of
      supported ops with `input_shape=(C, H, W)` (exported with torch.export; no file written).
    output: the artifact folder (a new one, or an artifact reidc wrote: replaced atomically).
      None: a temporary folder that lives as long as the returned Artifact (`.save()` it).
    modes: entries to build (visible, infrared, mixed); default all the model has.
    tuning_db: a `reidc.tune` database; batch: a fixed batch (tuned kernels need one).
    verify=False writes the build unverified (e.g. for a target this machine cannot run).
    Other keywords are `reidc compile`'s options of the same names."""
    from reidc.compiler.compile import CompileOptions, compile_checkpoint, compile_module
    opts = CompileOptions(target=target, arch=None if arch is None else str(arch),
                          split_config=None if split_config is None else str(split_config),
                          dump_ir=None if dump_ir is None else str(dump_ir), mixed_strategy=mixed_strategy,
                          verify=verify, modes=tuple(modes) if modes else None, batch=batch,
                          tuning_db=None if tuning_db is None else str(tuning_db), weights=weights,
                          feature=feature, input_size=None, seed=seed, progress=progress or (lambda msg: None))
    owned = None
    if output is None:
        owned = tempfile.mkdtemp(prefix="reidc-")
        output = Path(owned) / "artifact"
    try:
        if isinstance(model, (str, os.PathLike)):
            if input_shape is not None:
                opts.input_size = tuple(input_shape)[-2:]
            compile_checkpoint(model, output, opts)
            source = None
        else:
            compile_module(model, output, opts, input_shape=input_shape)
            source = model
    except BaseException:
        if owned:
            import shutil
            shutil.rmtree(owned, ignore_errors=True)
        raise
    return Artifact(output, progress=progress, _owned_tmp=owned, _source_module=source)
