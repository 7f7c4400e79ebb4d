"""The clock the cores sustain while every thread runs vector FMAs, measured: `reidc profile`'s
peak. /proc/cpuinfo states the base clock (2.6 GHz on the Xeons these machines have had) while
the cores run AVX-512 FMAs at 3.8-3.9 GHz with two threads busy, so a peak from it put kernels at
120% of "peak". Here each of `threads` parallel tasks runs CHAINS independent FMA chains of the
preset's vector width in registers (enough to cover FMA latency on two ports), timed with TVM's
time_evaluator; the clock is the FMAs per second over (2 FMA ports x threads).
Some cores issue one 512-bit FMA a cycle, not two: Zen 4 (each as two 256-bit halves) and Intel
parts with one 512-bit FMA unit. On a 512-bit preset the loop also runs at 256 bits; where the
wide loop's lane FMAs per second do not reach 1.3x the narrow one's (a two-port core gives
about 2x, less its AVX-512 clock drop; a one-port core about 1x), the clock is the wide loop's
rate over one port, and the profile's peaks of the 512-bit units halve (`Clock.split_512`).
(Taken as two ports, a Zen 4 at 3.7 GHz read 1.83 GHz.)
"""
from __future__ import annotations

from dataclasses import dataclass

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


def build_fma_loop(preset, threads: int, iters: int = ITERS, lanes: int | None = None):
    """The FMA loop compiled for `preset` (its ISA; vectors of `lanes` floats, by default its
    vector width): a runtime module."""
    import tvm
    ex = tvm.compile(tvm.IRModule({"main": fma_loop(lanes or preset.vector_lanes, threads, iters=iters)}),
                     target=preset.tvm_target())
    return ex.mod if hasattr(ex, "mod") else ex


@dataclass(frozen=True)
class Clock:
    ghz: float
    split_512: bool = False   # one 512-bit FMA a cycle (two 256-bit halves, or one 512-bit unit)


def splits_512(wide_lane_fmas_per_s: float, narrow_lane_fmas_per_s: float) -> bool:
    """Whether 512-bit FMAs issue one a cycle: the 512-bit loop's lane FMAs per second below 1.3x
    the 256-bit loop's (two full-width ports give about 2x, less the AVX-512 clock drop of
    Skylake-SP's all-core bins; Zen 4 and one-port Intel parts about 1x)."""
    return wide_lane_fmas_per_s < 1.3 * narrow_lane_fmas_per_s


def _lane_fmas_per_s(preset, threads: int, lanes: int) -> float:
    """Lane FMAs per second of the loop at `lanes` floats, best of 5 rounds of 3 calls."""
    import numpy as np
    import tvm
    mod = build_fma_loop(preset, threads, lanes=lanes)
    a = tvm.runtime.tensor(np.ones((threads, CHAINS, lanes), np.float32))
    seconds = min(mod.time_evaluator("main", tvm.cpu(), number=3, repeat=5)(a, 0.999, 0.001).results)
    return threads * CHAINS * lanes * ITERS / seconds


def measured_clock(preset, threads: int) -> Clock:
    """GHz = vector FMAs per second at the preset's width / (FMA ports x threads): 2 ports, or 1
    where 512-bit FMAs issue one a cycle (`splits_512`; the clock is then the one the 512-bit
    kernels run at, below the 256-bit loop's on Intel parts that lower it for AVX-512);
    `threads` must be the threads TVM's pool runs (a task per thread)."""
    lanes = preset.vector_lanes
    rate = _lane_fmas_per_s(preset, threads, lanes)
    split = preset.vector_bits == 512 and splits_512(rate, _lane_fmas_per_s(preset, threads, 8))
    return Clock(rate / ((1 if split else 2) * lanes * threads) / 1e9, split_512=split)
