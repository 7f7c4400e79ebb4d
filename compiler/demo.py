"""`reidc demo`: the main job on the embedded default, end to end: export a zoo checkpoint,
compile it for this machine (verified against PyTorch), and time it against PyTorch eager,
each in a process of its own with 2 threads."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from reidc.frontend.checkpoint import save_checkpoint
from reidc.frontend.zoo import zoo_model

from .bench import bench
from .compile import CompileOptions, compile_checkpoint
from .ir import RunMode


def demo(model: str = "cmnas-resnet50", workdir: str | Path = "demo",
         progress: Callable[[str], None] = lambda msg: None) -> tuple[dict, dict]:
    """(the artifact's manifest, the benchmark row) for zoo `model`, written under `workdir`."""
    os.environ.setdefault("TVM_NUM_THREADS", "2")
    workdir = Path(workdir)
    ck = workdir / "ckpt"
    progress(f"exporting {model} (all-split) to {ck}")
    save_checkpoint(zoo_model(model, "all-split"), ck)
    man = compile_checkpoint(ck, workdir / "build", CompileOptions(target="host", progress=progress))
    progress("verified: " + ", ".join(f"{m} {e:.1e}" for m, e in man["verification"]["max_rel_err"].items()))
    row = bench(workdir / "build", ck, (1,), (RunMode.VISIBLE,), 2, 5, runtimes=("torch_eager",), progress=progress)[0]
    return man, row
