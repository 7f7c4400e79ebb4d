"""The engines `python -m reidc.compiler.layer_bench` times, each in a bench worker process of
its own (compiler/bench_worker.py): one binary layer (the float input binarized at its BN
threshold, a 3x3 +-1 conv, a per-channel scale), batch 1,
- `layer_reidc`: reidc's own pipeline from a one-layer IR graph (bit-packing, popcount conv,
  fused float epilogue);
- `layer_openvino`: OpenVINO's `BinaryConvolution` (xnor-popcount) behind a 2-level
  FakeQuantize, the form its CPU plugin runs with its binary kernels, then the same scale;
- `layer_torch`: PyTorch's float conv of the same shape (what a float network runs there).
Every engine's output is checked against the exact integer conv (`reference`).

The binary engines also time their conv kernel alone (`kernel_ms`): the whole layer adds each
engine's layout changes, bit-packing and per-call overhead, which differ more between engines
than the kernels do. reidc's kernel is its fused popcount-conv function, called on the
arguments one instrumented run recorded (as `reidc profile` does); OpenVINO's is the
BinaryConvolution node's own time (its scale fused in) from its profiler, in a second compile
of the model with PERF_COUNT on, so that the whole-layer timing runs without the profiler."""
from __future__ import annotations

from typing import Callable

import numpy as np


def layer(spec: dict) -> dict:
    """The layer's deterministic data from spec["layer"] = {channels, out, size, seed}: +-1
    weights (O, C, 3, 3) int8, per-channel scale (O,), BN threshold (C,), input x (1, C, H, W)."""
    p = spec["layer"]
    c, o, hw = p["channels"], p["out"], p["size"]
    rng = np.random.default_rng(p["seed"])
    return {"signs": np.where(rng.standard_normal((o, c, 3, 3)) < 0, -1, 1).astype(np.int8),
            "scale": rng.uniform(0.5, 1.5, o).astype(np.float32),
            "threshold": rng.normal(0, 0.1, c).astype(np.float32),
            "x": rng.standard_normal((1, c, hw, hw)).astype(np.float32)}


def reference(d: dict) -> np.ndarray:
    """The exact +-1 conv (zero padding 1) of sign(x - threshold) (x >= threshold: +1), int64."""
    s = np.where(d["x"] < d["threshold"][None, :, None, None], -1, 1).astype(np.int64)
    w = d["signs"].astype(np.int64)
    n, c, h, wd = s.shape
    sp = np.pad(s, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], h, wd), np.int64)
    for ky in range(3):
        for kx in range(3):
            out += np.einsum("nchw,oc->nohw", sp[:, :, ky:ky + h, kx:kx + wd], w[:, :, ky, kx])
    return out


def exact(out: np.ndarray, d: dict) -> bool:
    """Whether an engine's float output, divided by the scale, is the exact integer conv."""
    ints = np.rint(np.asarray(out, np.float64) / d["scale"][None, :, None, None]).astype(np.int64)
    return bool(np.array_equal(ints, reference(d)))


class ReidcLayer:
    def __init__(self, spec: dict):
        import tvm
        from tvm import relax

        from .ir import Graph, Node, Op, RunMode
        from .ir.ops import BITS
        from .lower.build import build, lowering_options
        from .lower.to_relax import to_relax
        from .passes.bitpack_weights import bitpack_weights
        from ..targets import get_target
        d = layer(spec)
        o, c = d["signs"].shape[:2]
        hw = d["x"].shape[-1]
        g = Graph("layer")
        g.add("x", Node(Op.INPUT, (), ("N", c, hw, hw), attrs={"name": "x"}))
        g.add("p", Node(Op.BITPACK, ("x",), ("N", c, hw, hw), BITS,
                        {"threshold": d["threshold"], "flip": np.zeros(c, np.int8)}))
        g.add("b", Node(Op.BCONV2D, ("p",), ("N", o, hw, hw), attrs={
            "signs": d["signs"], "scale": d["scale"], "bias": np.zeros(o, np.float32), "stride": (1, 1),
            "padding": (1, 1)}))
        g.outputs = ["b"]
        preset = get_target("host")   # lowered as `reidc compile` lowers for it (the word binary convs count in)
        ex = build(to_relax({RunMode.VISIBLE: bitpack_weights(g)}, **lowering_options(preset)), preset)
        self._tvm = tvm
        self.vm = relax.VirtualMachine(ex, tvm.cpu())
        self.fn = self.vm[RunMode.VISIBLE.value]
        self.x = d["x"]

    def call_for(self, entry: str, x, m) -> Callable[[], np.ndarray]:
        xt = self._tvm.runtime.tensor(x)  # like the peers: the input is handed over once
        return lambda: self.fn(xt).numpy()

    def kernel(self) -> tuple[tuple, list]:
        """(key, [func, args, calls]) of the popcount conv kernel as one instrumented run
        recorded it (kernel_timing.record_vm_kernels, as `reidc profile` records)."""
        from .ir import RunMode
        from .kernel_timing import record_vm_kernels
        calls, _ = record_vm_kernels(self.vm, RunMode.VISIBLE.value, [self.x])
        conv = [k for k in calls if "bconv2d" in k[0]]
        if not conv:
            raise RuntimeError("no bconv2d kernel ran in reidc's layer")
        return conv[0], calls[conv[0]]

    def kernel_ms(self, round_s: float) -> float:
        """ms per call of the conv kernel alone over a round of about round_s seconds."""
        from .kernel_timing import time_kernels
        if not hasattr(self, "_kernel"):
            self._kernel = self.kernel()
        key, rec = self._kernel
        return time_kernels({key: rec}, round_s, rounds=1)[key] * 1e3


class OpenVinoLayer:
    def __init__(self, spec: dict):
        import openvino as ov
        import openvino.opset1 as op1
        import openvino.opset13 as op
        d = layer(spec)
        o, c = d["signs"].shape[:2]
        thr = op.constant(d["threshold"].reshape(1, c, 1, 1))
        x = op.parameter(list(d["x"].shape), np.float32, name="x")
        # levels=2: x > threshold -> 1, else 0 (ties differ from reidc's x >= threshold;
        # a tie has probability zero with this float input)
        bits = op.fake_quantize(x, thr, thr, op.constant(np.float32(0)), op.constant(np.float32(1)), 2)
        # a u1 Constant built from one value per element: the CPU plugin reads each byte's bits
        # in the reverse order of the values given (found by checking against `reference`)
        ones = (d["signs"] > 0).astype(np.uint8).reshape(-1, 8)[:, ::-1].reshape(-1)
        w = ov.op.Constant(ov.Type.u1, ov.Shape(list(d["signs"].shape)), ones.tolist())
        conv = op1.binary_convolution(bits, w, [1, 1], [1, 1], [1, 1], [1, 1], "xnor-popcount", 0.0)
        y = op.multiply(conv, op.constant(d["scale"].reshape(1, o, 1, 1)))
        config = {"INFERENCE_NUM_THREADS": spec["threads"], "PERFORMANCE_HINT": "LATENCY"}
        compiled = ov.Core().compile_model(ov.Model([y], [x]), "CPU", config)
        kinds = [str(n.get_rt_info()["layerType"].astype(str)) for n in compiled.get_runtime_model().get_ordered_ops()]
        if "BinaryConvolution" not in kinds:
            raise RuntimeError(f"OpenVINO did not run a BinaryConvolution kernel (ran {', '.join(kinds)})")
        self.request = compiled.create_infer_request()
        self._profiled = ov.Core().compile_model(ov.Model([y], [x]), "CPU", {**config, "PERF_COUNT": True})
        self.x = d["x"]

    def call_for(self, entry: str, x, m) -> Callable[[], np.ndarray]:
        return lambda: self.request.infer({0: x})[0]

    def kernel_ms(self, round_s: float) -> float:
        """Mean ms per call of the BinaryConvolution node over a round of about round_s seconds,
        from OpenVINO's profiler (microsecond counts, summed over the round's calls)."""
        from .kernel_timing import calls_per_round
        if not hasattr(self, "_preq"):
            self._preq = self._profiled.create_infer_request()
            self._kernel_calls = calls_per_round(self._preq.infer, [{0: self.x}], round_s)
        total = 0.0
        for _ in range(self._kernel_calls):
            self._preq.infer({0: self.x})
            total += sum(p.real_time.total_seconds() for p in self._preq.get_profiling_info()
                         if p.node_type == "BinaryConvolution")
        if total <= 0:
            raise RuntimeError("OpenVINO's profiler reported no BinaryConvolution time")
        return total / self._kernel_calls * 1e3


class TorchLayer:
    def __init__(self, spec: dict):
        import torch
        torch.set_num_threads(spec["threads"])
        self.torch = torch
        d = layer(spec)
        self.w = torch.from_numpy(d["signs"].astype(np.float32))
        self.scale = torch.from_numpy(d["scale"]).reshape(1, -1, 1, 1)

    def call_for(self, entry: str, x, m) -> Callable[[], np.ndarray]:
        torch = self.torch
        xt = torch.from_numpy(x)

        def call():
            with torch.no_grad():  # the float conv alone: what a float network's layer costs
                return (torch.nn.functional.conv2d(xt, self.w, padding=1) * self.scale).numpy()
        return call


LAYER_ENGINES = {"layer_reidc": ReidcLayer, "layer_openvino": OpenVinoLayer, "layer_torch": TorchLayer}
