"""The CPU schedule of `fold_columns` (conv2d_int8.py: the stem's input folded into 64-channel
rows for AMX): a dlight rule, as cpu_schedules.py's."""
from __future__ import annotations

from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from .conv2d_int8 import FOLD_BLOCK
from .schedule_utils import anchored, extent


class FoldColumns(CPUScheduleRule):
    """Parallel over output rows; a row's 64 channels are 64 / cb copies of one pixel's `cb`
    channels (cb = 4: one 32-bit move each), unrolled, each vectorised over its channels."""

    def apply(self, func, target, tunable):
        found = anchored(func, FOLD_BLOCK, (FOLD_BLOCK,), anchor_is_output=True)
        if found is None:
            return None
        sch, out = found
        n, z, y, x, k = sch.get_loops(out)
        block = sch.get(out)
        data = next(getattr(r, "buffer", None) or r.source for r in block.reads)
        cb = int(data.shape[-1])
        if extent(sch, k) is None or extent(sch, k) % cb:
            return None
        ko, ki = sch.split(k, [None, cb])
        sch.parallel(sch.fuse(n, z, y))
        sch.unroll(ko)
        sch.vectorize(ki)
        return sch
