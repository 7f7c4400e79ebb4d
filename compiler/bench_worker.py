"""One engine of `reidc bench` in a process of its own: built once, then timed round by round
when the parent asks (compiler/bench.py is the other side).

Started as `python -m compiler.bench_worker FD` with its thread settings in the environment
(TVM_NUM_THREADS, OMP_NUM_THREADS); FD is its end of a socket pair carrying pickled tuples:

    parent -> worker                          worker -> parent
    ("build", spec)                           ("ready", {"pid", "build_s"})
    ("prepare", entry, x, m, round_s)         ("prepared", {"out", "first_s", "calls"})
    ("round",)                                ("round", (mean, fastest) ms per call over `calls` calls)
    ("stop",)                                 (exits)
    any failure                               ("error", exception type, one line, traceback), exit 1

`prepare` runs the engine once on the inputs (its output is what the parent checks; the time
of that first call is torch.compile's compile time), then warms up (at least WARMUP calls and
`round_s` seconds) and chooses `calls`: how many calls make a round last about `round_s`.
Nothing runs unless asked, so an idle worker holds no CPU.
"""
from __future__ import annotations

import math
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .base.modes import RunMode

WARMUP = 2
MAX_CALLS = 10_000


def _source(spec: dict):
    """The PyTorch module the artifact was compiled from (loaded here, not pickled across)."""
    from .compile import artifact_source
    from .runtime import read_manifest
    path = Path(spec["artifact"])
    return artifact_source(read_manifest(path), path, spec.get("checkpoint")).eval()


def _entry_module(model, entry: str):
    import torch

    class Entry(torch.nn.Module):
        """The model with its modality argument fixed (visible, infrared) or a tensor (mixed)."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x, m=None):
            if entry == RunMode.MAIN:
                return self.model(x)
            return self.model(x, m if entry == RunMode.MIXED else entry)

    return Entry().eval()


def _torch_args(x: np.ndarray, m: np.ndarray | None):
    import torch
    return torch.from_numpy(x), (torch.from_numpy(m) if m is not None else None)


class ReidcEngine:
    """The artifact on TVM's runtime (compiler.runtime.Compiled), inputs checked once."""

    def __init__(self, spec: dict):
        from .runtime import Compiled
        self.compiled = Compiled(spec["artifact"])

    def call_for(self, entry: str, x, m) -> Callable[[], np.ndarray]:
        name, arrays = self.compiled.args(x, m if entry == RunMode.MIXED else entry)
        executor = self.compiled.executor
        return lambda: executor.call(name, arrays)[0]


class EagerEngine:
    """PyTorch eager, no_grad, torch.set_num_threads(threads)."""

    def __init__(self, spec: dict):
        import torch
        torch.set_num_threads(spec["threads"])
        self.model = _source(spec)

    def _module(self, entry: str):
        return _entry_module(self.model, entry)

    def call_for(self, entry: str, x, m) -> Callable[[], np.ndarray]:
        import torch
        fn = self._module(entry)
        xt, mt = _torch_args(x, m)

        def call():
            with torch.no_grad():
                return fn(xt, mt).numpy()
        return call


class CompileEngine(EagerEngine):
    """torch.compile (default backend) of the same module, one compiled function per entry;
    the first call of each (entry, batch) compiles."""

    def __init__(self, spec: dict):
        super().__init__(spec)
        self._compiled: dict[str, Callable] = {}

    def _module(self, entry: str):
        import torch
        if entry not in self._compiled:
            self._compiled[entry] = torch.compile(_entry_module(self.model, entry))
        return self._compiled[entry]


def onnx_session(module, x: np.ndarray, m: np.ndarray | None, threads: int):
    """An ONNX Runtime CPU session of `module` (exported with a dynamic batch axis)."""
    import onnxruntime as ort
    import torch
    args = (torch.from_numpy(x),) + ((torch.from_numpy(m),) if m is not None else ())
    names = ["x"] + (["modality"] if m is not None else [])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(module, args, str(path), input_names=names, output_names=["feat"],
                              dynamo=False, dynamic_axes={n: {0: "batch"} for n in names + ["feat"]})
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class OrtEngine:
    """ONNX Runtime (CPU provider, intra-op threads = threads) of the module exported per entry."""

    def __init__(self, spec: dict):
        import torch
        torch.set_num_threads(spec["threads"])  # the export only
        self.model, self.threads = _source(spec), spec["threads"]
        self._sessions: dict = {}

    def call_for(self, entry: str, x, m) -> Callable[[], np.ndarray]:
        if entry not in self._sessions:
            self._sessions[entry] = onnx_session(_entry_module(self.model, entry), x, m, self.threads)
        sess = self._sessions[entry]
        feed = {"x": x, **({"modality": m} if m is not None else {})}
        return lambda: sess.run(None, feed)[0]


ENGINES = {"reidc": ReidcEngine, "torch_eager": EagerEngine, "torch_compile": CompileEngine,
           "onnxruntime": OrtEngine}


def prepare(call: Callable[[], np.ndarray], round_s: float) -> dict:
    """First call (its output and time), then warm-up: at least WARMUP calls and `round_s`
    seconds; the calls per round come from the median of the warm-up's second half."""
    t = time.perf_counter()
    out = np.asarray(call())
    first_s = time.perf_counter() - t
    ts: list[float] = []
    while len(ts) < WARMUP or (sum(ts) < round_s and len(ts) < MAX_CALLS):
        t = time.perf_counter()
        call()
        ts.append(time.perf_counter() - t)
    one = max(statistics.median(ts[len(ts) // 2:]), 1e-6)
    return {"out": out, "first_s": first_s, "calls": max(1, min(MAX_CALLS, math.ceil(round_s / one)))}


def time_round(call: Callable[[], np.ndarray], calls: int) -> tuple[float, float]:
    """(mean, fastest) ms per call over `calls` back-to-back calls."""
    t0 = t = time.perf_counter()
    best = float("inf")
    for _ in range(calls):
        call()
        now = time.perf_counter()
        best, t = min(best, now - t), now
    return (t - t0) / calls * 1e3, best * 1e3


def serve(conn) -> None:
    msg = conn.recv()
    if msg[0] != "build":
        raise ValueError(f"expected a build request first, got {msg[0]!r}")
    t = time.perf_counter()
    engine = ENGINES[msg[1]["engine"]](msg[1])
    conn.send(("ready", {"pid": os.getpid(), "build_s": time.perf_counter() - t}))
    call, calls = None, 1
    while True:
        msg = conn.recv()
        if msg[0] == "prepare":
            _, entry, x, m, round_s = msg
            call = engine.call_for(entry, x, m)
            info = prepare(call, round_s)
            calls = info["calls"]
            conn.send(("prepared", info))
        elif msg[0] == "round":
            conn.send(("round", time_round(call, calls)))
        elif msg[0] == "stop":
            return
        else:
            raise ValueError(f"unknown request {msg[0]!r}")


def main(argv: list[str] | None = None) -> int:
    from multiprocessing.connection import Connection
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops its workers
    conn = Connection(int((argv or sys.argv[1:])[0]))
    try:
        serve(conn)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return 0  # the parent is gone: nothing to report to
    except BaseException as e:  # noqa: BLE001  (reported to the parent, which raises it)
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        try:
            conn.send(("error", type(e).__name__, lines[0] if lines else "", traceback.format_exc()))
        except OSError:
            pass
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
