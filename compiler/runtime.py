"""Load an artifact directory and run it (validating inputs against its manifest)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import ArtifactError, InputError

LIB, MANIFEST = "model.so", "manifest.json"


def read_manifest(path: str | Path) -> dict:
    p = Path(path)
    if not (p / MANIFEST).is_file() or not (p / LIB).is_file():
        raise ArtifactError(f"{p}: not a reidc artifact (needs {LIB} and {MANIFEST})")
    try:
        return json.loads((p / MANIFEST).read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{p / MANIFEST}: corrupt manifest: {e}") from None


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Compiled:
    """A compiled model: `run(x, "visible" | "infrared" | modality_vector)` -> features.

    Runs wherever the artifact's target can run from here: in this process (x86, CUDA), or
    under qemu for an aarch64 build (see targets/executors.py)."""

    def __init__(self, path: str | Path, progress=lambda msg: None, rpc: tuple[str, str] | None = None):
        """`rpc`: (tracker HOST:PORT, device key) to run on a remote device instead."""
        # TVM's CPU thread pool reads TVM_NUM_THREADS once, at the first parallel kernel; left
        # unset it takes half the logical CPUs (1 thread on a 2-core VM, measured 1.8x slower).
        os.environ.setdefault("TVM_NUM_THREADS", str(usable_cpus()))
        import tvm
        from targets import TargetError, preset_from_manifest
        from targets.executors import executor_for
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if self.manifest.get("tvm_version") != tvm.__version__:
            raise ArtifactError(f"{self.path}: built with TVM {self.manifest.get('tvm_version')}, "
                                f"this is TVM {tvm.__version__}")
        try:
            self.preset = preset_from_manifest(self.manifest["target"])
        except (KeyError, TargetError) as e:
            raise ArtifactError(f"{self.path / MANIFEST}: bad target entry: {e}") from None
        if rpc:
            from targets.executors import RPCExecutor
            self.executor = RPCExecutor(self.path / LIB, *rpc, device="cuda" if self.preset.kind == "cuda" else "cpu")
        else:
            missing = self.preset.missing_on_host()
            if missing:
                raise ArtifactError(f"{self.path} is built for {self.preset.name}; running it here needs "
                                    f"{', '.join(missing)}")
            self.executor = executor_for(self.preset, self.path / LIB, progress)
        self.input_shape = tuple(self.manifest["input_shape"])
        self.modes = tuple(self.manifest["modes"])

    def check(self, x: np.ndarray, modality) -> tuple[np.ndarray, str, np.ndarray | None]:
        x = np.asarray(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise InputError(f"input has shape {tuple(x.shape)}; this artifact takes (N, "
                             f"{', '.join(map(str, self.input_shape))}) float32 images")
        if x.shape[0] < 1:
            raise InputError("input batch is empty")
        fixed = self.manifest.get("batch")
        if fixed and x.shape[0] != fixed:
            raise InputError(f"input batch is {x.shape[0]}; this artifact was built for batch {fixed} "
                             "(compile without --batch for any batch size)")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if "main" in self.modes:
            return x, "main", None
        if isinstance(modality, str):
            if modality not in ("visible", "infrared"):
                raise InputError(f"modality {modality!r}: expected visible, infrared or a per-sample vector")
            return x, modality, None
        m = np.asarray(modality)
        if m.shape != (x.shape[0],) or not np.isin(m, (0, 1)).all():
            raise InputError(f"modality vector must hold {x.shape[0]} values of 0 (visible) or 1 (infrared); "
                             f"got shape {m.shape}")
        return x, "mixed", np.ascontiguousarray(m, dtype=np.int32)

    def args(self, x, modality) -> tuple[str, list[np.ndarray]]:
        x, mode, m = self.check(x, modality)
        if mode not in self.modes:
            raise InputError(f"{self.path} has no {mode} entry (built with --modes {','.join(self.modes)}); "
                             f"recompile with --modes including {mode}")
        return mode, [x] if m is None else [x, m]

    def run(self, x: np.ndarray, modality="visible") -> np.ndarray:
        mode, a = self.args(x, modality)
        return self.executor.call(mode, a)[0]

    def run_bits(self, x: np.ndarray, modality="visible") -> list[np.ndarray]:
        """[features, packed bits of every bitpack layer...] from the `<mode>_bits` entry."""
        mode, a = self.args(x, modality)
        return self.executor.call(f"{mode}_bits", a)

    def time_ms(self, x, modality, number: int = 5, repeat: int = 3) -> float:
        mode, a = self.args(x, modality)
        return self.executor.time_ms(mode, a, number=number, repeat=repeat)
