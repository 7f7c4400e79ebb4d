"""`reidc bench`: the compiled model against what users would run instead, in one process:
PyTorch eager, torch.compile and ONNX Runtime (exported from the same module)."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .reference import rel_err, seeded_inputs, torch_forward
from .runtime import Compiled


class _Entry(torch.nn.Module):
    """The model with its modality argument fixed (visible) or taken as a tensor (mixed)."""

    def __init__(self, model, mode):
        super().__init__()
        self.model, self.mode = model, mode

    def forward(self, x, m=None):
        if self.mode == "main":
            return self.model(x)
        return self.model(x, m if self.mode == "mixed" else self.mode)


def time_ms(fn: Callable[[], object], warmup: int = 2, repeat: int = 5) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def _onnx_session(entry: _Entry, x: np.ndarray, m: np.ndarray | None, threads: int):
    import onnxruntime as ort
    args = (torch.from_numpy(x),) + ((torch.from_numpy(m),) if m is not None else ())
    names = ["x"] + (["modality"] if m is not None else [])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.onnx"
        torch.onnx.export(entry, args, str(path), input_names=names, output_names=["feat"],
                          dynamo=False, dynamic_axes={n: {0: "batch"} for n in names + ["feat"]})
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def bench(compiled: Compiled, model: torch.nn.Module, batches=(1, 16), modes=("visible", "mixed"),
          threads: int = 2, repeat: int = 5, runtimes=("torch_eager", "torch_compile", "onnxruntime"),
          progress: Callable[[str], None] = lambda s: None,
          baseline: tuple[Compiled, torch.nn.Module] | None = None) -> list[dict]:
    """One row per (mode, batch). `baseline` (another compiled model and its PyTorch module,
    e.g. the fp32 network a binarized one replaces) adds its reidc, eager and ORT times."""
    torch.set_num_threads(threads)
    model = model.eval()
    man = compiled.manifest
    rows = []
    modes = [m for m in modes if m in compiled.modes] or list(compiled.modes[:1])
    for mode in modes:
        entry = _Entry(model, mode).eval()
        compiled_fn = torch.compile(entry) if "torch_compile" in runtimes else None
        sess = base_sess = None
        base_entry = _Entry(baseline[1].eval(), mode).eval() if baseline else None
        for batch in batches:
            x, m = seeded_inputs(tuple(man["input_shape"]), batch, mode, seed=1)
            xt = torch.from_numpy(x)
            mt = torch.from_numpy(m) if m is not None else None
            ref = torch_forward(model, x, mode, m)
            arg = m if mode == "mixed" else mode
            row = {"model": man["model"], "target": man["target"]["preset"], "batch": batch, "modality": mode,
                   "threads": threads}
            progress(f"{man['model']} {mode} batch {batch}: reidc")
            row["max_rel_err"] = rel_err(compiled.run(x, arg), ref)
            row["reidc_ms"] = compiled.time_ms(x, arg, number=1, repeat=repeat)
            with torch.no_grad():
                progress(f"{man['model']} {mode} batch {batch}: PyTorch eager")
                row["torch_eager_ms"] = time_ms(lambda: entry(xt, mt), repeat=repeat)
                if compiled_fn is not None:
                    progress(f"{man['model']} {mode} batch {batch}: torch.compile (compiling)")
                    compiled_fn(xt, mt)
                    row["torch_compile_ms"] = time_ms(lambda: compiled_fn(xt, mt), repeat=repeat)
            if "onnxruntime" in runtimes:
                progress(f"{man['model']} {mode} batch {batch}: ONNX Runtime")
                if sess is None:
                    sess = _onnx_session(entry, x, m, threads)
                feed = {"x": x, **({"modality": m} if m is not None else {})}
                row["onnxruntime_ms"] = time_ms(lambda: sess.run(None, feed), repeat=repeat)
                row["onnxruntime_rel_err"] = rel_err(sess.run(None, feed)[0], ref)
            if baseline:
                bc = baseline[0]
                row["baseline_model"] = bc.manifest["model"]
                progress(f"{man['model']} {mode} batch {batch}: baseline {row['baseline_model']}")
                row["baseline_reidc_ms"] = bc.time_ms(x, arg, number=1, repeat=repeat)
                with torch.no_grad():
                    row["baseline_torch_eager_ms"] = time_ms(lambda: base_entry(xt, mt), repeat=repeat)
                if base_sess is None:
                    base_sess = _onnx_session(base_entry, x, m, threads)
                feed = {"x": x, **({"modality": m} if m is not None else {})}
                row["baseline_onnxruntime_ms"] = time_ms(lambda: base_sess.run(None, feed), repeat=repeat)
            for k in ("torch_eager_ms", "torch_compile_ms", "onnxruntime_ms", "baseline_reidc_ms",
                      "baseline_torch_eager_ms", "baseline_onnxruntime_ms"):
                if k in row:
                    row[f"speedup_vs_{k[:-3]}"] = row[k] / row["reidc_ms"]
            rows.append(row)
    return rows
