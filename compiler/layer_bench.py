"""One binary layer, measured whole: `python -m compiler.layer_bench --threads N` prints JSON.

The ResNet-18 layer 14x14x256 -> 256, 3x3, stride 1, batch 1: bit-packing of the float input
(with its BN threshold), the popcount conv, and the float epilogue (scale, bias), built
through reidc's own pipeline from a one-layer IR graph; against PyTorch's float conv of the
same shape. Run in a fresh process because TVM fixes its thread count at the first parallel call.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    import tvm
    from tvm import relax

    from reidc.compiler.bench import time_ms
    from reidc.compiler.ir import Graph, Node, Op, RunMode
    from reidc.compiler.ir.ops import BITS
    from reidc.compiler.lower.build import build
    from reidc.compiler.lower.to_relax import to_relax
    from reidc.compiler.passes.bitpack_weights import bitpack_weights
    from reidc.targets import get_target

    c, o, hw = 256, 256, 14
    rng = np.random.default_rng(0)
    signs = np.where(rng.standard_normal((o, c, 3, 3)) < 0, -1, 1).astype(np.int8)
    scale = rng.uniform(0.5, 1.5, o).astype(np.float32)
    g = Graph("layer")
    g.add("x", Node(Op.INPUT, (), ("N", c, hw, hw), attrs={"name": "x"}))
    g.add("p", Node(Op.BITPACK, ("x",), ("N", c, hw, hw), BITS,
                    {"threshold": rng.normal(0, 0.1, c).astype(np.float32), "flip": np.zeros(c, np.int8)}))
    g.add("b", Node(Op.BCONV2D, ("p",), ("N", o, hw, hw), attrs={
        "signs": signs, "scale": scale, "bias": np.zeros(o, np.float32), "stride": (1, 1), "padding": (1, 1)}))
    g.outputs = ["b"]
    g = bitpack_weights(g)
    ex = build(to_relax({RunMode.VISIBLE: g}), get_target("host"))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    got = vm[RunMode.VISIBLE.value](tvm.runtime.tensor(x)).numpy()
    thr = g["p"].attrs["threshold"]
    xs = torch.from_numpy(np.where(x < thr[None, :, None, None], -1.0, 1.0))
    ref = torch.nn.functional.conv2d(xs, torch.from_numpy(signs.astype(np.float64)), padding=1).numpy()
    exact = bool(np.array_equal(np.rint(got / scale[None, :, None, None]).astype(np.int64), ref.astype(np.int64)))
    f = vm.time_evaluator(RunMode.VISIBLE.value, tvm.cpu(), number=args.repeat, repeat=5)
    reidc_ms = min(f(tvm.runtime.tensor(x)).results) * 1e3
    xt, wt = torch.from_numpy(x), torch.from_numpy(rng.standard_normal((o, c, 3, 3)).astype(np.float32))
    with torch.no_grad():
        torch_ms = min(time_ms(lambda: torch.nn.functional.conv2d(xt, wt, padding=1), warmup=5, repeat=args.repeat)
                       for _ in range(3))
    macs = o * c * 9 * hw * hw
    print(json.dumps({"shape": "14x14x256->256 3x3", "threads": args.threads, "reidc_ms": reidc_ms,
                      "binary_macs_per_s": macs / reidc_ms * 1e3, "torch_float_conv_ms": torch_ms,
                      "speedup_vs_torch_float": torch_ms / reidc_ms, "exact": exact}))


if __name__ == "__main__":
    main()
