"""The clock the cores sustain while every thread runs vector FMAs, measured: `reidc profile`'s
peak. /proc/cpuinfo states the base clock (2.6 GHz on the Xeons these machines have had) while
the cores run AVX-512 FMAs at 3.8-3.9 GHz with two threads busy, so a peak from it put kernels at
120% of "peak". Here each of `threads` parallel tasks runs CHAINS independent FMA chains of the
preset's vector width in registers (enough to cover FMA latency on two ports), timed with TVM's
time_evaluator; the clock is the FMAs per second over (2 FMA ports x threads).
"""
from __future__ import annotations

CHAINS = 12            # independent accumulators per thread: 2 ports x 4-cycle latency, with margin
ITERS = 2_000_000      # FMA rounds per call: about 3 ms at 4 GHz


def fma_loop(lanes: int, threads: int, chains: int = CHAINS, iters: int = ITERS):
    """A PrimFunc: `threads` parallel tasks, each `iters` rounds of a[t, k, :] = a[t, k, :] * b + c
    over `chains` vectors of `lanes` floats. b and c are scalars, so nothing in the loop aliases
    the accumulators and LLVM keeps them in registers (one vfmadd per vector, no memory operand)."""
    from tvm.script import tirx as T

    @T.prim_func
    def main(a: T.Buffer((threads, chains, lanes), "float32"), b: T.float32, c: T.float32):
        T.func_attr({"global_symbol": "main", "tir.noalias": True})
        for t in T.parallel(threads):
            for _ in range(iters):
                for k in T.unroll(chains):
                    for v in T.vectorized(lanes):
                        a[t, k, v] = a[t, k, v] * b + c
    return main


def build_fma_loop(preset, threads: int, iters: int = ITERS):
    """The FMA loop compiled for `preset` (its vector width and ISA): a runtime module."""
    import tvm
    ex = tvm.compile(tvm.IRModule({"main": fma_loop(preset.vector_lanes, threads, iters=iters)}),
                     target=preset.tvm_target())
    return ex.mod if hasattr(ex, "mod") else ex


def measured_ghz(preset, threads: int) -> float:
    """GHz = FMAs per second / (2 ports x threads), best of 5 rounds of 3 calls; `threads` must be
    the threads TVM's pool runs (a task per thread)."""
    import numpy as np
    import tvm
    mod = build_fma_loop(preset, threads)
    a = tvm.runtime.tensor(np.ones((threads, CHAINS, preset.vector_lanes), np.float32))
    seconds = min(mod.time_evaluator("main", tvm.cpu(), number=3, repeat=5)(a, 0.999, 0.001).results)
    fmas = threads * CHAINS * preset.vector_lanes * ITERS
    return fmas / seconds / (2 * preset.vector_lanes * threads) / 1e9
