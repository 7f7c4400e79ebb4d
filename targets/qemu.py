"""Run an aarch64 library on this x86 machine: reidc's C++ runner (targets/runner/reidc_run.cc),
cross-compiled against TVM's aarch64 runtime, under qemu-user. Timings under qemu say nothing
about ARM speed; this proves the code, boards measure it."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .arm_runtime import SYSROOT, ensure_runner, runtime_dir
from .presets import ToolchainError


class QemuError(ToolchainError):
    pass


class QemuExecutor:
    def __init__(self, lib: Path, progress=lambda msg: None, timeout_s: float = 1800):
        if not shutil.which("qemu-aarch64"):
            raise QemuError("qemu-aarch64 is not installed (apt-get install qemu-user); it runs aarch64 "
                            "artifacts on this x86 machine")
        self.lib = Path(lib).resolve()
        self.runner = ensure_runner(progress)
        self.libs = runtime_dir() / "lib"
        self.timeout_s = timeout_s
        self.description = "reidc_run under qemu-aarch64"

    def _run(self, entry: str, arrays, repeat: int = 0) -> tuple[list[np.ndarray], float | None]:
        with tempfile.TemporaryDirectory(prefix="reidc-qemu-") as d:
            specs = []
            for i, a in enumerate(arrays):
                a = np.ascontiguousarray(a)
                p = Path(d) / f"in{i}.bin"
                a.tofile(p)
                specs.append(f"{p}:{a.dtype.name}:{'x'.join(map(str, a.shape))}")
            cmd = ["qemu-aarch64", "-L", SYSROOT, str(self.runner), str(self.lib), entry, d, *specs]
            if repeat:
                cmd[6:6] = ["--repeat", str(repeat)]
            env = {**os.environ, "LD_LIBRARY_PATH": str(self.libs)}
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                raise QemuError(f"{self.lib}: {entry} did not finish within {self.timeout_s:.0f} s under qemu") from None
            if r.returncode != 0:
                tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
                raise QemuError(f"{self.lib}: {entry} failed under qemu (exit {r.returncode}): {' | '.join(tail)}")
            outs, ms = [], None
            for line in r.stdout.splitlines():
                name, *rest = line.split()
                if name == "time_ms":
                    ms = float(rest[0])
                elif name.startswith("out"):
                    dtype, shape = rest
                    outs.append(np.fromfile(Path(d) / f"{name}.bin", dtype=dtype).reshape(
                        [int(s) for s in shape.split("x")] if shape else []))
            return outs, ms

    def call(self, entry: str, arrays) -> list[np.ndarray]:
        return self._run(entry, arrays)[0]

    def time_ms(self, entry: str, arrays, number: int = 5, repeat: int = 3) -> float:
        return self._run(entry, arrays, repeat=max(1, number * repeat))[1]
