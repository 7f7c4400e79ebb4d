"""One engine of `reidc bench` in a process of its own: built once, then timed round by round
when the parent asks (compiler/bench_process.py is the other side).

Started as `python -m compiler.bench_worker FD` with its thread settings in the environment
(TVM_NUM_THREADS, OMP_NUM_THREADS); FD is its end of a socket pair carrying pickled tuples:

    parent -> worker                          worker -> parent
    ("build", spec)                           ("ready", {"pid", "build_s"})
    ("prepare", entry, x, m, round_s)         ("prepared", {"out", "first_s", "calls", ["ref"], ...engine.info})
    ("round",)                                ("round", (mean, fastest) ms per call over `calls` calls)
    ("stop",)                                 (exits)
    any failure                               ("error", exception type, one line, traceback), exit 1

`prepare` runs the engine once on the inputs (its output is what the parent checks; the time
of that first call is torch.compile's compile time), then warms up (at least WARMUP calls and
`round_s` seconds) and chooses `calls`: how many calls make a round last about `round_s`.
An engine's `info` (e.g. the precision OpenVINO reports it runs) goes along with it, and so
does PyTorch eager's strict fp32 output on a GPU (`ref`, untimed: see EagerEngine.reference).
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
from .layer_engines import LAYER_ENGINES

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
    """PyTorch eager, no_grad, torch.set_num_threads(threads); on the GPU (spec "device"
    "cuda") each call uploads the input and downloads the features, as reidc's call does."""

    def __init__(self, spec: dict):
        import torch
        torch.set_num_threads(spec["threads"])
        self.device = spec.get("device", "cpu")
        self.model = _source(spec).to(self.device)

    def _module(self, entry: str):
        return _entry_module(self.model, entry)

    def _context(self):
        import contextlib
        return contextlib.nullcontext()

    def call_for(self, entry: str, x, m) -> Callable[[], np.ndarray]:
        import torch
        fn = self._module(entry)
        xt, mt = _torch_args(x, m)
        if self.device != "cpu":
            xt = xt.pin_memory()

        def call():  # on the CPU .to / .cpu return the tensors themselves
            with torch.no_grad(), self._context():
                y = fn(xt.to(self.device, non_blocking=True), None if mt is None else mt.to(self.device))
                return y.float().cpu().numpy()
        return call

    def reference(self, entry: str, x, m) -> np.ndarray | None:
        """On a GPU, the same call with TF32 off: what the errors are measured against. PyTorch
        runs cuDNN convs in TF32 by default on Ampere and later (about 1e-3 relative per conv;
        on an H200 it moved a binarized network's features by 10% through sign flips), which
        is what the timed calls keep, being what users run. None on the CPU (no TF32 there)."""
        import torch
        if self.device == "cpu":
            return None
        flags = (torch.backends.cudnn, torch.backends.cuda.matmul)
        saved = [f.allow_tf32 for f in flags]
        try:
            for f in flags:
                f.allow_tf32 = False
            return np.asarray(EagerEngine.call_for(self, entry, x, m)())
        finally:
            for f, v in zip(flags, saved):
                f.allow_tf32 = v


class Fp16Engine(EagerEngine):
    """PyTorch eager under fp16 autocast on the GPU (what a PyTorch user runs there for speed)."""

    info = {"precision": "fp16 autocast"}

    def _context(self):
        import torch
        return torch.autocast("cuda", dtype=torch.float16)


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


def export_onnx(module, x: np.ndarray, m: np.ndarray | None, path: Path) -> Path:
    """`module` exported to ONNX at `path` (TorchScript exporter, a dynamic batch axis; inputs
    "x" and, for the mixed entry, "modality"; output "feat")."""
    import torch
    args = (torch.from_numpy(x),) + ((torch.from_numpy(m),) if m is not None else ())
    names = ["x"] + (["modality"] if m is not None else [])
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, args, str(path), input_names=names, output_names=["feat"],
                          dynamo=False, dynamic_axes={n: {0: "batch"} for n in names + ["feat"]})
    return path


CALIB_SAMPLES = 8  # calibration inputs of the int8 (QDQ) models
CALIB_SEED = 2     # bench times and compares on seed 1: the calibration never sees that input


def quantize_qdq(fp32: Path, out: Path, entry: str, input_shape: tuple[int, ...]) -> Path:
    """A static int8 QDQ model of the ONNX model `fp32`, written to `out`: ONNX Runtime's
    quant_pre_process (no symbolic shape inference), then quantize_static with QDQ nodes,
    per-channel int8 weights, uint8 activations, MinMax calibration.

    Calibration: CALIB_SAMPLES inputs from reference.seeded_inputs (the generator of the input
    bench times, standard normal images of `input_shape`) with seed CALIB_SEED, fed one at a
    time (batch 1); for the mixed entry each comes with its modality code, alternating visible
    and infrared, so both modalities' layers are calibrated. Noise, not person images: the
    error against eager is measured on another noise input, not on a data set."""
    import logging

    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    from .reference import seeded_inputs
    xs, ms = seeded_inputs(tuple(input_shape), CALIB_SAMPLES, entry, seed=CALIB_SEED)
    feeds = [{"x": xs[i:i + 1], **({"modality": ms[i:i + 1]} if ms is not None else {})}
             for i in range(CALIB_SAMPLES)]

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    pre = out.with_name(out.stem + ".pre.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # one warning per 1-d weight (BN scales) that per-channel skips
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Calibration(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
        pre.unlink(missing_ok=True)
    return out


class OnnxEngine:
    """The module exported to ONNX once per entry (int8 engines: then quantized, quantize_qdq),
    for an ONNX consumer to build from in `call_for`.

    With spec["onnx_dir"] (bench's parent makes one per run) the files are shared: the first
    engine to need an entry's model writes it there and the others read it, so ONNX Runtime
    and OpenVINO run the very same export and the very same QDQ model, and only that first
    engine loads PyTorch at all (workers are prepared one at a time: no two write at once).
    `info` is what the engine reports about the model it last built (the parent puts it in
    the row)."""
    int8 = False

    def __init__(self, spec: dict):
        self.spec, self.threads = spec, spec["threads"]
        self._model = None
        self._onnx: dict[str, bytes] = {}
        self.info: dict = {}

    def _module(self, entry: str):
        if self._model is None:
            import torch
            torch.set_num_threads(self.threads)  # the export only
            self._model = _source(self.spec)
        return _entry_module(self._model, entry)

    def onnx(self, entry: str, x, m) -> bytes:
        if entry not in self._onnx:
            shared = self.spec.get("onnx_dir")
            with tempfile.TemporaryDirectory() as own:
                d = Path(shared) / _model_key(self.spec) if shared else Path(own)
                d.mkdir(exist_ok=True)
                path = _made(d / f"{entry}.onnx", lambda p: export_onnx(self._module(entry), x, m, p))
                if self.int8:
                    path = _made(d / f"{entry}.int8.onnx", lambda p: quantize_qdq(path, p, entry, x.shape[1:]))
                self._onnx[entry] = path.read_bytes()
        return self._onnx[entry]


def _model_key(spec: dict) -> str:
    """The folder of one PyTorch model's ONNX files (a baseline's are apart)."""
    import hashlib
    return hashlib.sha256(f"{spec['artifact']}\0{spec.get('checkpoint')}".encode()).hexdigest()[:16]


def _made(path: Path, make: Callable[[Path], Path]) -> Path:
    """`path`, made by make(a temporary name beside it) and renamed unless it is there."""
    if not path.exists():
        tmp = path.with_name(f"tmp{os.getpid()}.{path.name}")
        make(tmp)
        os.replace(tmp, path)
    return path


def _feed(x, m) -> dict:
    return {"x": x, **({"modality": m} if m is not None else {})}


def ort_session(model: bytes, threads: int):
    """An ONNX Runtime CPU session (intra-op threads = threads, all graph optimizations)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


class OrtEngine(OnnxEngine):
    """ONNX Runtime (CPU provider, intra-op threads = threads) of the module exported per entry."""

    def __init__(self, spec: dict):
        super().__init__(spec)
        self._sessions: dict = {}

    def call_for(self, entry: str, x, m) -> Callable[[], np.ndarray]:
        if entry not in self._sessions:
            self._sessions[entry] = ort_session(self.onnx(entry, x, m), self.threads)
        if self.int8:
            self.info = {"precision": f"int8 QDQ (u8 activations, per-channel s8 weights; "
                                      f"{CALIB_SAMPLES} calibration inputs)"}
        sess, feed = self._sessions[entry], _feed(x, m)
        return lambda: sess.run(None, feed)[0]


class OrtInt8Engine(OrtEngine):
    """ONNX Runtime on the static int8 QDQ model of the same export (quantize_qdq)."""
    int8 = True


class OpenVinoEngine(OnnxEngine):
    """OpenVINO on the CPU: the same ONNX export (int8: the same QDQ model as ONNX Runtime's,
    which OpenVINO runs with int8 kernels), reshaped to the batch's static shape and compiled
    per (entry, batch) with INFERENCE_NUM_THREADS = threads, PERFORMANCE_HINT LATENCY and
    INFERENCE_PRECISION_HINT `hint` (int8: f32 for what is not quantized).

    OpenVINO falls back to f32 without a word on a CPU lacking bf16, so `info` holds what the
    compiled model reports (_ov_info): its INFERENCE_PRECISION_HINT and the runtime precision
    of its convolutions (e.g. {"bf16": 20} or {"u8": 20}) in the graph it executes."""
    hint = "f32"

    def __init__(self, spec: dict):
        super().__init__(spec)
        import openvino
        self.core = openvino.Core()
        self._compiled: dict = {}

    def call_for(self, entry: str, x, m) -> Callable[[], np.ndarray]:
        feed = _feed(x, m)
        key = (entry, tuple(x.shape))
        if key not in self._compiled:
            model = self.core.read_model(self.onnx(entry, x, m))
            model.reshape({k: list(v.shape) for k, v in feed.items()})
            compiled = self.core.compile_model(model, "CPU", {
                "INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": self.hint})
            self._compiled[key] = compiled, _ov_info(compiled, self.int8)
        compiled, self.info = self._compiled[key]
        request = compiled.create_infer_request()
        return lambda: request.infer(feed)[0]


def _ov_info(compiled, int8: bool) -> dict:
    """What OpenVINO reports it runs: its INFERENCE_PRECISION_HINT (bf16 falls back to f32 on
    a CPU without bf16) and the runtime precisions of its convolutions, counted; `precision`
    says it in a few words."""
    convs: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        if rt["layerType"].astype(str) == "Convolution":
            p = rt["runtimePrecision"].astype(str)
            convs[p] = convs.get(p, 0) + 1
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return {"precision": f"int8 QDQ, the rest {hint}" if int8 else hint, "inference_precision_hint": hint,
            "conv_precisions": convs}


class OpenVinoBf16Engine(OpenVinoEngine):
    hint = "bf16"


class OpenVinoInt8Engine(OpenVinoEngine):
    int8 = True


ENGINES = {"reidc": ReidcEngine, "torch_eager": EagerEngine, "torch_compile": CompileEngine, "torch_fp16": Fp16Engine,
           "onnxruntime": OrtEngine, "onnxruntime_int8": OrtInt8Engine, "openvino": OpenVinoEngine,
           "openvino_bf16": OpenVinoBf16Engine, "openvino_int8": OpenVinoInt8Engine, **LAYER_ENGINES}


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
            info = {**prepare(call, round_s), **getattr(engine, "info", {})}
            if type(engine) is EagerEngine and (ref := engine.reference(entry, x, m)) is not None:
                info["ref"] = ref
            calls = info["calls"]
            conn.send(("prepared", info))
        elif msg[0] == "round":
            conn.send(("round", time_round(call, calls)))
        elif msg[0] == "kernel":  # a layer engine's conv kernel alone (compiler/layer_engines.py)
            conn.send(("kernel", engine.kernel_ms(msg[1])))
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
