"""The CPU schedule of the Winograd conv (winograd.py) as a dlight rule:
  wino_in    parallel over (image, tile), the (m + 2)^2 (a, b) outputs unrolled (B^T's rows fold
             to constants), input channels vectorised;
  wino_gemm  parallel over ((a, b), output-block group, image); a register tile of tiles x
             output blocks (`register_tile`, as the direct conv's), the reduction over input
             channels outside it, lanes vectorised (bf16: each 16 lanes x channel pair one
             vdpbf16ps, kernels/bf16_intrin.py);
  output     A^T M A inlined into the fused epilogue: parallel over (image, block, tile row),
             the m x m pixels of a tile unrolled (A^T's rows fold to constants, the tile's
             (m + 2)^2 values of M are read once for its pixels)."""
from __future__ import annotations

from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from .bf16_intrin import DPBF16_16x2_LOCAL
from .schedule_utils import anchored, extent, largest_divisor_at_most, register_tile
from .winograd import WINO_GEMM, WINO_IN


class WinogradNCHWc(CPUScheduleRule):
    def __init__(self, vector_lanes: int = 8, accumulators: int = 12, max_oc_tile: int = 4):
        self.lanes = vector_lanes
        self.accumulators = accumulators
        self.max_oc_tile = max_oc_tile

    def apply(self, func, target, tunable):
        found = anchored(func, WINO_GEMM, (WINO_IN, WINO_GEMM))
        if found is None:
            return None
        sch, out = found
        m = extent(sch, sch.get_loops(sch.get_sblock(WINO_GEMM))[0]) - 2   # F(m x m, 3 x 3)
        self._input(sch)
        self._gemm(sch, target)
        self._output(sch, out, m)
        return sch

    def _input(self, sch):
        block = sch.get_sblock(WINO_IN)
        a, b, n, t, c = sch.get_loops(block)
        cw = largest_divisor_at_most(extent(sch, c), self.lanes)
        co, ci = sch.split(c, [None, cw])
        sch.reorder(n, t, co, a, b, ci)
        sch.parallel(sch.fuse(n, t))
        sch.unroll(a)
        sch.unroll(b)
        sch.vectorize(ci)

    def _gemm(self, sch, target):
        block = sch.get_sblock(WINO_GEMM)
        a, b, o, n, t, v, *red = sch.get_loops(block)   # red: (rc,), or bf16's (channel pair, 2)
        ob, tiles, blocks = extent(sch, v), extent(sch, t), extent(sch, o)
        bf16 = len(red) == 2
        if bf16 and ob % 16:
            raise ValueError(f"the bf16 Winograd GEMM needs output blocks of 16 lanes; has {ob}")
        lanes = 16 if bf16 else self.lanes
        rows, oct_ = register_tile(tiles, blocks, max(1, ob // lanes), self.accumulators, self.max_oc_tile)
        oo, oi = sch.split(o, [None, oct_])
        to, ti = sch.split(t, [None, rows])
        lane_loops = list(sch.split(v, [None, lanes])) if bf16 else [v]
        sch.reorder(a, b, oo, n, to, red[0], oi, ti, *lane_loops, *red[1:])
        sch.parallel(sch.fuse(a, b, oo, n))
        sch.unroll(oi)
        sch.unroll(ti)
        if bf16:
            sch.unroll(lane_loops[0])
        else:
            sch.vectorize(v)
        # the tile accumulates in a local buffer (registers), written to M once per tile: in M
        # itself LLVM loaded and stored every accumulator around every FMA
        store = sch.cache_write(block, 0, "local")
        sch.reverse_compute_at(store, to)
        sch.vectorize(sch.get_loops(store)[-1])
        init = sch.decompose_reduction(block, red[0])
        if bf16:
            sch.vectorize(sch.get_loops(init)[-1])
            sch.tensorize(lane_loops[1], DPBF16_16x2_LOCAL)

    def _output(self, sch, out, m):
        n, o, y, x, v = sch.get_loops(out)
        yo, yi = sch.split(y, [None, m])
        xo, xi = sch.split(x, [None, m])
        sch.reorder(n, o, yo, xo, yi, xi, v)
        sch.parallel(sch.fuse(n, o, yo))
        sch.unroll(yi)
        sch.unroll(xi)
        sch.vectorize(v)
