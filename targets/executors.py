"""How a built library is executed from this machine: TVM's Relax VM in this process (x86 CPU,
or a CUDA GPU), or reidc's C++ runner under qemu for an aarch64 library. One interface:
`call(entry, arrays) -> [numpy arrays]` (tuples flattened) and `time_ms(entry, arrays)`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .presets import CUDA, QEMU_AARCH64, TargetPreset


class LocalExecutor:
    """The library loaded into this process; kernels run on the CPU or on CUDA GPU 0."""

    def __init__(self, lib: Path, device: str = "cpu"):
        import tvm
        from tvm import relax
        self._tvm = tvm
        self.device = tvm.cuda(0) if device == "cuda" else tvm.cpu()
        ex = tvm.runtime.load_module(str(lib))
        try:
            self.vm = relax.VirtualMachine(ex, self.device)
        except AttributeError as e:  # a shared library, but no Relax executable in it
            raise RuntimeError(f"it holds no Relax VM executable ({e})") from None
        self.description = f"TVM runtime, {device}"

    def _args(self, arrays):
        return [self._tvm.runtime.tensor(a, self.device) for a in arrays]

    def call(self, entry: str, arrays) -> list[np.ndarray]:
        out = self.vm[entry](*self._args(arrays))
        return [t.numpy() for t in _flatten(out)]

    def time_ms(self, entry: str, arrays, number: int = 5, repeat: int = 3) -> float:
        f = self.vm.time_evaluator(entry, self.device, number=number, repeat=repeat, min_repeat_ms=0)
        return min(f(*self._args(arrays)).results) * 1e3


def _flatten(v):
    if hasattr(v, "numpy"):
        return [v]
    return [t for e in v for t in _flatten(e)]


def executor_for(preset: TargetPreset, lib: Path, progress=lambda msg: None):
    """The executor that can run a library built for `preset` from this machine."""
    import platform
    if preset.runs_via == QEMU_AARCH64 and platform.machine() != "aarch64":
        from .qemu import QemuExecutor
        return QemuExecutor(lib, progress)
    return LocalExecutor(lib, "cuda" if preset.runs_via == CUDA else "cpu")


class RPCExecutor:
    """The library on a device registered with TVM's RPC tracker: uploaded, loaded there, run
    by a Relax VM on the device; timings come from the device's own clock."""

    def __init__(self, lib: Path, tracker: str, key: str, device: str = "cpu", timeout_s: float = 600):
        from tvm import relax, rpc
        from .presets import ToolchainError
        from .rpc import tracker_devices
        host, _, port = tracker.rpartition(":")
        if not host or not port.isdigit():
            raise ToolchainError(f"--rpc-tracker {tracker!r}: expected HOST:PORT")
        if tracker_devices(host, int(port), key) == 0:  # TVM's request would wait forever
            raise ToolchainError(f"the RPC tracker at {tracker} has no device with key {key!r} (or is unreachable)")
        self.session = rpc.connect_tracker(host, int(port)).request(key, priority=1, session_timeout=timeout_s)
        self.session.upload(str(lib))
        self.device = self.session.cuda(0) if device == "cuda" else self.session.cpu(0)
        self.vm = relax.VirtualMachine(self.session.load_module(Path(lib).name), self.device)
        self.description = f"RPC device {key!r} via tracker {tracker}"

    def _args(self, arrays):
        import tvm
        return [tvm.runtime.tensor(a, self.device) for a in arrays]

    def call(self, entry: str, arrays) -> list[np.ndarray]:
        return [t.numpy() for t in _flatten(self.vm[entry](*self._args(arrays)))]

    def time_ms(self, entry: str, arrays, number: int = 5, repeat: int = 3) -> float:
        f = self.vm.time_evaluator(entry, self.device, number=number, repeat=repeat, min_repeat_ms=0)
        return min(f(*self._args(arrays)).results) * 1e3
