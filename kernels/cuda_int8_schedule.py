"""The int8 conv on CUDA GPUs without int8 tensor cores (sm_61 to sm_70; from sm_72 the int8
convs take cuda_int8_wmma.py): `dp4a` (four u8 x s8 products added to an int32 in one
instruction) on shared-memory tiles, as a dlight rule.

For an output (N, O//ob, OH, OW, ob) (conv2d_int8.py's blocked layout, weights (ob, 4) per
4-channel group):
  block  = one (n, channel block, `rows` output rows) tile
  thread = `px` adjacent output pixels x `ch` adjacent output channels (schedule_utils.thread_tile),
           px x ch int32 accumulators in registers
  the reduction runs chunk by chunk: an input-channel block, and within it `groups` 4-channel
  groups, whatever fits `smem_bytes`; per chunk the block copies the (padded) input tile and
  the weight tile into shared memory, 4 bytes per thread and step, then each thread runs
  taps x groups x px x ch `dp4a`s (cuda_intrin.py).
The fused epilogue (requantisation) runs on the accumulators, per thread.
"""
from __future__ import annotations

from tvm import s_tir
from tvm.s_tir.dlight.gpu.base import GPUScheduleRule

from .conv2d_int8 import GROUP, QCONV_BLOCK, QPAD_BLOCK
from .cuda_intrin import DP4A_U8S8
from .schedule_utils import anchored, block_named, cooperative_fetch, extent, reads_of, thread_tile


class _TilesTooBig(Exception):
    """A chunk's input and weight tiles exceed the rule's shared-memory budget."""


class ConvInt8GPU(GPUScheduleRule):
    """See the module docstring; u8 x s8 convs in (ob, 4) weight groups only (the CUDA flavour,
    build.int8_flavour)."""

    def __init__(self, threads: int = 256, px: int = 4, ch: int = 4, smem_bytes: int = 32 * 1024):
        self.threads, self.px, self.ch, self.smem_bytes = threads, px, ch, smem_bytes

    def apply(self, func, target, tunable):
        probe = anchored(func, QCONV_BLOCK, (QCONV_BLOCK, QPAD_BLOCK))
        if probe is None:
            return None
        sch, _ = probe
        block = sch.get(sch.get_sblock(QCONV_BLOCK))
        if int(block.annotations.get("reidc_int8_signed", 0)) or block.annotations.get("reidc_int8_order") != "dot4":
            return None   # the CUDA flavour is u8 x s8 in (ob, 4) groups (build.int8_flavour)
        groups = int(block.iter_vars[-2].dom.extent)
        # the most 4-channel groups per chunk whose tiles fit in shared memory
        for g in sorted((d for d in range(1, groups + 1) if groups % d == 0), reverse=True):
            try:
                return self._schedule(func, g)
            except _TilesTooBig:
                continue
        return None

    def _schedule(self, func, gi: int):
        """The schedule with `gi` groups per chunk; None when the function is not of this rule's
        form; _TilesTooBig when its tiles do not fit."""
        sch, out = anchored(func, QCONV_BLOCK, (QCONV_BLOCK, QPAD_BLOCK))
        main = sch.get_sblock(QCONV_BLOCK)
        tile = thread_tile(sch, out, main, self.threads, self.px, self.ch)
        if tile is None:
            return None
        threads, spatial, named, red = tile.threads, tile.spatial, dict(tile.reductions), tile.red
        if 4 not in named or red[4] != GROUP:
            return None
        rg = named.pop(3, None) or sch.add_unit_loop(named[4])
        go, gin = sch.split(rg, [None, gi])
        rc = named.pop(0, None)
        taps = [named[k] for k in (1, 2) if k in named]
        sch.reorder(*([rc] if rc is not None else []), go, *taps, gin, *spatial, named[4])
        chunk = sch.fuse(rc, go) if rc is not None else go
        for lp in spatial:
            sch.unroll(lp)

        data_buf, weight = _inputs(sch, main)
        stages = []
        if block_named(sch, func, QPAD_BLOCK) is not None:
            stage = sch.get_sblock(QPAD_BLOCK)
            sch.set_scope(stage, 0, "shared")   # before compute_at: the region then spans all threads
        else:
            stage = sch.cache_read(main, data_buf, "shared")
        stages.append(stage)
        stages.append(sch.cache_read(main, weight, "shared"))
        smem = 0
        for st in stages:
            sch.compute_at(st, chunk)
            smem += _region_bytes(sch, st, chunk)
        if smem > self.smem_bytes:
            raise _TilesTooBig
        for st in stages:
            _fetch_words(sch, st, chunk, threads)
        sch.decompose_reduction(main, chunk)
        try:
            sch.tensorize(named[4], DP4A_U8S8)
        except s_tir.ScheduleError:
            return None
        return sch


def _inputs(sch, main):
    """Read indices of the conv's data (uint8) and weight (int8) buffers."""
    reads = reads_of(sch, main)
    data = next(i for i, b in reads if str(b.dtype) == "uint8")
    weight = next(i for i, b in reads if str(b.dtype) == "int8")
    return data, weight


def _region_bytes(sch, stage, at) -> int:
    """Bytes a stage computed under loop `at` writes per iteration of it: its loops' extents."""
    loops = sch.get_loops(stage)
    depth = 1 + next(i for i, lp in enumerate(loops) if sch.get(lp).same_as(sch.get(at)))
    size = 1
    for lp in loops[depth:]:
        size *= extent(sch, lp) or 1
    return size * _elem_bytes(sch, stage)


def _elem_bytes(sch, stage) -> int:
    w = sch.get(stage).writes[0]
    return (getattr(w, "buffer", None) or w.source).dtype.bits // 8


def _fetch_words(sch, stage, at, threads: int) -> None:
    """Spread a shared stage's copy over the block's threads, 4 bytes (one channel group) per
    thread and step where the innermost copy loop allows."""
    inner = sch.get_loops(stage)[-1]
    if (extent(sch, inner) or 0) % GROUP == 0:   # uint8 input or int8 weight bytes
        cooperative_fetch(sch, stage, at, threads, vector=GROUP)
    else:
        cooperative_fetch(sch, stage, at, threads)
