"""CPU schedules (x86 and aarch64) of the real-valued convs as dlight rules: `Conv2dNCHWc` for
reidc's conv and grouped conv (with their fused epilogue), `Conv2dNCHWcInt8` for the int8 and
AMX-layout bf16 convs (the binary conv's rule is bconv_schedule.py, bit-packing's
bitpack_schedule.py, everything else's fallback_schedule.py). One rule serves both ISAs:
the target's SIMD width and register count (targets/presets.py) set the register tiles, LLVM
selects the instructions (x86: FMA, vpdpbusd; NEON: fmla, sdot).

Tunable knobs (register tile width, reduction split) are plain parameters so MetaSchedule
can search them later; the defaults are derived from the target's SIMD width.
"""
from __future__ import annotations

from tvm import s_tir
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from .arm_intrin import ARM_SDOT_S8S8_4x4
from .conv2d import CONV_BLOCK, GROUP_CONV_BLOCK, PAD_BLOCK
from .conv2d_bf16 import BCONV16_BLOCK, BPAD16_BLOCK
from .conv2d_int8 import LANES, QCONV_BLOCK, QPAD_BLOCK
from .amx_intrin import amx_intrinsics, amx_intrinsics_2x2
from .bf16_intrin import DPBF16_16x2, DPBF16_16x2_LOCAL
from .x86_intrin import AVX2_U8S8_8x4, AVX2_U8S8_8x8, VNNI_U8S8_16x4, VNNI_U8S8_16x4_LOCAL
from .schedule_utils import (anchored_nchwc, extent, largest_divisor_at_most, parallel_rows, register_tile,
                             rows_for_tasks, target_cores)


class Conv2dNCHWc(CPUScheduleRule):
    """Output-stationary direct conv: parallel over (n, oc-block group, row), a register tile of
    `reg_w` output pixels x `oct` output blocks of `ob` channels (`register_tile`), reduction
    loops outside, channel lanes vectorised. Several output blocks per tile let one broadcast
    input value feed several weight vectors: on AVX-512 (ob = one vector) 4 pixels x 4 blocks
    load 8 vectors per 16 FMAs where 8 pixels x 1 block loaded 9 per 8.
    A grouped conv (conv2d.py `group_conv2d_nchwc`) has the same loops: only its input block
    index depends on the output block, which stays outside the reductions (one block per tile)."""

    def __init__(self, vector_lanes: int = 8, accumulators: int = 12, acc_bytes: int = 16384,
                 weight_bytes: int = 16384, max_oc_tile: int = 4):
        self.lanes = vector_lanes
        self.accumulators = accumulators
        self.acc_bytes = acc_bytes
        self.weight_bytes = weight_bytes
        self.max_oc_tile = max_oc_tile

    def apply(self, func, target, tunable):
        for anchor in (CONV_BLOCK, GROUP_CONV_BLOCK):
            found = anchored_nchwc(func, anchor, PAD_BLOCK)
            if found is not None:
                break
        else:  # a conv is always lowered with a bias epilogue; others take the fallback
            return None
        sch, conv, out, (n, o, h, w, v) = found
        ob = extent(sch, v)
        ow = extent(sch, w)
        if ob is None or ow is None:
            return None
        oh = extent(sch, h)
        kh, kw, cin, cb = _conv_dims(sch, anchor)
        vecs_per_pixel = max(1, ob // self.lanes)
        oc = extent(sch, o)
        max_oct = self.max_oc_tile if anchor == CONV_BLOCK and oc else 1
        reg_w, oct_ = register_tile(ow, oc or 1, vecs_per_pixel, self.accumulators, max_oct)
        # rows per task: the accumulator block (rows x OW x oct x ob floats) stays within L1
        # (a multi-block tile gets twice the budget: 32 KiB measured best on ResNet-50)
        budget = self.acc_bytes * (2 if oct_ > 1 else 1)
        rows = largest_divisor_at_most(oh, max(1, budget // (ow * ob * 4 * oct_))) if oh else 1
        # but no fewer parallel tasks than two per core while rows can shrink (a symbolic batch counts as 1)
        rows = rows_for_tasks(oh, rows, (extent(sch, n) or 1) * ((oc or 1) // oct_), 2 * target_cores(target))
        # input-channel chunk: its weights (chunk x kh x kw x oct x ob floats) stay within L1
        chunks = max(1, cin // cb)
        per_chunk = largest_divisor_at_most(chunks, max(1, self.weight_bytes // (cb * kh * kw * ob * 4 * oct_)))
        ho, hi = sch.split(h, [None, rows])
        if oct_ > 1:
            oo, oi = sch.split(o, [None, oct_])
            sch.reorder(oo, ho, oi)
            outer = sch.fuse(n, oo, ho)
        else:
            outer = sch.fuse(n, o, ho)
        sch.parallel(outer)
        wo, wi = sch.split(w, [None, reg_w])
        sch.vectorize(v)
        sch.compute_at(conv, outer)
        sch.set_scope(conv, 0, "local")
        cl = sch.get_loops(conv)[1:]  # loops of extent 1 vanish under compute_at
        sp, red = _split_kinds(cl, cin, kh, kw)
        co = sp.pop(0) if oct_ > 1 else None   # the tile's output blocks: outermost under compute_at
        ch, cw, cv = _name_spatial(sp, rows, ow, ob)
        if cin > 1:   # a single input channel's loop vanished with the other unit loops
            icc, icm, ici = sch.split(red[0], [None, per_chunk, cb])
            head, mid, rest = [icc], [icm], red[1:] + [ici]
        else:
            head, mid, rest = [], [], red
        cwo, cwi = sch.split(cw, [None, reg_w]) if cw is not None else (None, None)
        tile = [lp for lp in (co, cwi) if lp is not None]
        order = head + ([ch] if ch is not None else []) + ([cwo] if cwo is not None else []) + mid + rest \
            + tile + [cv]
        sch.reorder(*order)
        for lp in tile:
            sch.unroll(lp)
        sch.vectorize(cv)
        init = sch.decompose_reduction(conv, order[0])
        sch.vectorize(sch.get_loops(init)[-1])
        parallel_rows(sch, func, PAD_BLOCK, 3)
        return sch


class Conv2dNCHWcInt8(CPUScheduleRule):
    """int8 conv (conv2d_int8.py): parallel over (n, oc-block, row block); per task an int32
    accumulator block of rows x OW x ob stays in L1. Three inner kernels, by what the target has:
    - AMX (`amx`, 64-channel input blocks, one weight set; a strided conv reads its input's
      phases, conv2d_int8.py): per (pixels x 16 output
      channels) tile, configure + zero tmm0, then per (c-block, ky, kx) two tile loads and one
      tdpbusd (pixels x 16 x 64 MACs), then store the tile;
    - VNNI: a register tile of `reg_w` pixels x 16 lanes under the reductions, the innermost
      16 x 4 (lanes x group) one vpdpbusd;
    - AVX2 (`avx2`, weights within [-63, 63]: the kernel's `reidc_int8_weight_max`): the same
      tile as two 8-lane halves, each 8 x 4 one vpmaddubsw + vpmaddwd, or with weights within
      [-31, 31] each 8 x 8 two vpmaddubsw added in int16 + one vpmaddwd (x86_intrin.py);
      NEON sdot likewise in 4-lane quarters;
    - else loops LLVM vectorises (widening multiplies).
    The fused epilogue (zero-point correction, scales, bias, ReLU, requantisation to the next
    layer's uint8) runs per row block; on AMX per tile group, on the accumulators just stored;
    on VNNI in the register tile's write-back, on the accumulators in registers.
    The AMX-layout bf16 conv (conv2d_bf16.py, on AMX-BF16 targets) takes the same path: AMX-BF16
    tiles (`amx_bf16`: tdpbf16ps, 32 input channels per tile row) where it has the same shape,
    with AVX512-BF16 (`dpbf16`) VNNI's register tile with one vdpbf16ps per 16 lanes x channel
    pair, else the loops. (Elsewhere a bf16 conv is conv2d.py's float32 conv of the decoded
    values.)"""

    def __init__(self, vnni: bool = False, amx: bool = False, sdot: bool = False, avx2: bool = False,
                 accumulators: int = 24, vector_bits: int = 512, acc_bytes: int = 32768, amx_bf16: bool = False,
                 amx_pairs: bool = True, dpbf16: bool = False):
        self.amx_pairs = amx_pairs
        self.dpbf16 = dpbf16
        self.vnni = vnni
        self.amx = amx
        self.amx_bf16 = amx_bf16
        self.sdot = sdot
        self.avx2 = avx2
        self.vector_bits = vector_bits
        self.accumulators = accumulators
        self.acc_bytes = acc_bytes

    def apply(self, func, target, tunable):
        found = anchored_nchwc(func, QCONV_BLOCK, QPAD_BLOCK)
        bf16 = found is None
        if bf16:
            found = anchored_nchwc(func, BCONV16_BLOCK, BPAD16_BLOCK)
        if found is None:
            return None
        sch, conv, out, (n, o, h, w, v) = found
        ow, oh, ob = extent(sch, w), extent(sch, h), extent(sch, v)
        if ob is None or ob % LANES or ow is None or oh is None:
            return None
        block = sch.get(conv)
        bufs = [(getattr(r, "buffer", None) or r.source) for r in block.reads]
        per_sample_weights = any(len(b.shape) == 1 for b in bufs)   # weights picked by the modality vector
        data = bufs[0]   # the (padded, or for a strided conv phase-split) input: the product's first operand
        red_ext = [int(iv.dom.extent) for iv in block.iter_vars if iv.iter_type == 2]   # rc, ry, rx, rg, ri
        order = str(block.annotations.get("reidc_int8_order", "dot4"))     # the weights' layout (Int8Flavour)
        signed = bool(int(block.annotations.get("reidc_int8_signed", 0)))
        weight_max = int(block.annotations.get("reidc_int8_weight_max", 127))
        dot4 = order == "dot4" and not per_sample_weights
        tiles = int(data.shape[-1]) == 64 and ob == 64 and not per_sample_weights
        amx = (self.amx_bf16 if bf16 else self.amx and dot4 and not signed) and tiles
        vnni = self.vnni and dot4 and not signed and not bf16
        dpbf16 = self.dpbf16 and bf16 and not amx and not per_sample_weights
        sdot = self.sdot and dot4 and signed and not bf16
        # vpmaddubsw's int16 pair sums saturate: exact only with |w| <= 63 (x86_intrin.py)
        avx2 = self.avx2 and dot4 and not signed and not bf16 and not vnni and weight_max <= 63
        rows = largest_divisor_at_most(oh, max(1, self.acc_bytes // (ow * ob * 4)))
        ho, hi = sch.split(h, [None, rows])
        outer = sch.fuse(n, o, ho)
        sch.parallel(outer)
        sch.vectorize(v)
        sch.compute_at(conv, outer)
        if not (vnni or dpbf16 or amx or sdot or avx2):
            sch.set_scope(conv, 0, "local")
        loops = sch.get_loops(conv)[1:]
        nred = sum(e > 1 for e in red_ext)
        sp, red = list(loops[:-nred]), list(loops[-nred:])
        cv = sp.pop()
        cw = sp.pop() if ow > 1 and sp else None
        ch = sp.pop() if rows > 1 and sp else None
        # Which reductions run under the register tile (the rest outside the row and pixel
        # loops, each of their steps storing and reloading the accumulators). VNNI: all of them
        # (R50 int8 on a Zen 4, 2 threads: kernels 10.88 -> 9.84 ms, batch 1 whole run -9%).
        # Elsewhere the input-block loop, where there is one (extent > 1), stays outside (AVX2
        # on the same Zen 4 measured it 2% faster than all inside), and only the taps and
        # channel groups are under the tile: before, whichever reduction came first went
        # outside, so a conv over one input block had its taps or groups there (the 1x1 64 ->
        # 256 conv of R50's layer1 ran at 30% of the VNNI peak).
        tiled = ([], red) if vnni or dpbf16 or red_ext[0] <= 1 else (red[:1], red[1:])   # (outside, under the tile)
        if amx:
            # input rows exactly OW pixels wide (a 1x1 conv's, or a narrow map's padded input
            # laid out per column tap: Int8Flavour.row_tiles): whole image rows fill a tile
            contiguous = int(data.shape[-2]) == ow
            self._amx(sch, conv, ch, cw, cv, red, ow, "bf16" if bf16 else "int8", contiguous)
        elif sdot:
            self._dot_tiles(sch, conv, ch, cw, cv, tiled, ow, 4, ARM_SDOT_S8S8_4x4)
        elif avx2 and weight_max <= 31 and red_ext[3] % 2 == 0:
            # 6-bit weights: two 4-channel groups per vpmaddwd (x86_intrin.AVX2_U8S8_8x8)
            self._dot_tiles(sch, conv, ch, cw, cv, tiled, ow, 8, AVX2_U8S8_8x8, pair=True)
        elif avx2:
            self._dot_tiles(sch, conv, ch, cw, cv, tiled, ow, 8, AVX2_U8S8_8x4)
        elif vnni or dpbf16:
            cvo, cvi = sch.split(cv, [None, LANES])
            dot = (VNNI_U8S8_16x4, VNNI_U8S8_16x4_LOCAL) if vnni else (DPBF16_16x2, DPBF16_16x2_LOCAL)
            self._vector(sch, conv, ch, cw, cvo, cvi, tiled, ow, ob, dot)
        else:
            self._loops(sch, conv, ch, cw, cv, tiled, ow)
        parallel_rows(sch, func, BPAD16_BLOCK if bf16 else QPAD_BLOCK, 3)
        return sch

    def _vector(self, sch, conv, ch, cw, cvo, cvi, tiled, ow, ob, dot):
        """A register tile of `reg_w` pixels x `ob` lanes under every reduction; its innermost
        16 lanes x group one instruction: `dot` = (the intrinsic on memory, on the local tile),
        vpdpbusd (groups of 4 u8) or vdpbf16ps (pairs of bf16)."""
        reg_w = largest_divisor_at_most(ow, max(1, self.accumulators // (ob // LANES)))
        head, red = tiled[0], list(tiled[1])
        ri = red.pop()          # the channel group: innermost
        cwo, cwi = sch.split(cw, [None, reg_w]) if cw is not None else (None, None)
        inner = [cvo, cvi, ri]
        order = head + ([ch] if ch is not None else []) + ([cwo] if cwo is not None else []) + red \
            + ([cwi] if cwi is not None else []) + inner
        sch.reorder(*order)
        if cwi is not None:
            sch.unroll(cwi)
        sch.unroll(cvo)
        # VNNI: the accumulators are zeroed per tile, in registers, under the pixel loop (not
        # as a pass over the task's block first: small-K convs 3-5% faster on a Zen 4). The tile
        # is a "local" buffer of its own, stored after its reductions: zeroed in the task's
        # block, the tile's zeros were a memset LLVM kept (1 KB per tile; R50 int8 kernels at
        # batch 16 on a Zen 4: 159.9 -> 157.3 ms). The fused epilogue runs per tile too, not on
        # the task's whole block (up to 32 KB, L1's size) after its last tile (R50 int8 kernels
        # at batch 16 155.5 -> 150.8 ms, whole run -5%), and inlined into the write-back: it
        # reads the tile in registers (kernels/stack_tiles.py keeps it off the heap) and the
        # task's int32 block is gone, with its 16 stores and loads a tile.
        in_tile = bool(not head and red)
        cached = in_tile and cwo is not None
        if cached:
            wb = sch.cache_write(conv, 0, "local")
            sch.reverse_compute_at(wb, cwo)
            tails = [wb]
            out = sch.get_consumers(wb)
            if len(out) == 1:   # the fused epilogue per tile too: in the write-back, on the registers
                try:
                    sch.reverse_compute_inline(out[0])
                except s_tir.ScheduleError:   # deliberate: then after the write-back, on the tile just stored
                    try:
                        sch.reverse_compute_at(out[0], cwo)
                        tails.append(out[0])
                    except s_tir.ScheduleError:   # deliberate: the epilogue then runs per task, as before
                        pass
            for tail in tails:
                loops = sch.get_loops(tail)
                below = [i for i, lp in enumerate(loops) if sch.get(lp).same_as(sch.get(cwo))][0] + 1
                vo, vi = sch.split(loops[-1], [None, LANES])   # 16-lane copies: LLVM keeps the tile in registers
                sch.vectorize(vi)
                for lp in loops[below:-1] + [vo]:
                    sch.unroll(lp)
        init = sch.decompose_reduction(conv, red[0] if in_tile else order[0])
        sch.vectorize(sch.get_loops(init)[-1])
        if cached:   # unrolled zeroing (pixels x 16-lane blocks): constant offsets into the tile
            for lp in sch.get_loops(init)[-3:-1]:
                sch.unroll(lp)
        sch.tensorize(cvi, dot[1] if cached else dot[0])

    def _loops(self, sch, conv, ch, cw, cv, tiled, ow):
        """No int8 dot product: 16 output channels (int32 lanes: 2 AVX2 registers, 4 SSE/NEON)
        x `reg_w` pixels of accumulators under the reductions, products widened by LLVM
        (vpmaddwd on x86)."""
        regs = max(1, 512 // self.vector_bits)
        reg_w = largest_divisor_at_most(ow, max(1, self.accumulators // regs))
        cvo, cvi = sch.split(cv, [None, LANES])
        head, red = tiled[0], list(tiled[1])
        ri = red.pop()
        cwo, cwi = sch.split(cw, [None, reg_w]) if cw is not None else (None, None)
        order = head + ([ch] if ch is not None else []) + [cvo] + ([cwo] if cwo is not None else []) + red \
            + ([cwi] if cwi is not None else []) + [ri, cvi]
        sch.reorder(*order)
        if cwi is not None:
            sch.unroll(cwi)
        sch.unroll(ri)
        sch.vectorize(cvi)
        init = sch.decompose_reduction(conv, order[0])
        sch.vectorize(sch.get_loops(init)[-1])

    def _dot_tiles(self, sch, conv, ch, cw, cv, tiled, ow, lanes, intrin, pair=False):
        """A dot-product instruction of `lanes` int32 lanes x 4 input channels (NEON sdot: 4
        lanes; AVX2 vpmaddubsw + vpmaddwd: 8), or with `pair` x 8 (two 4-channel groups, the
        group loop's inner half of 2): 16 output channels x `reg_w` pixels of accumulators
        under the reductions, the 16 channels' blocks outermost."""
        regs = 16 // lanes
        reg_w = largest_divisor_at_most(ow, max(1, self.accumulators // regs))
        cvo, cvm, cvi = sch.split(cv, [None, regs, lanes])
        head, red = tiled[0], list(tiled[1])
        ri = red.pop()
        pairs = []
        if pair:   # the group loop (innermost of the rest) in halves of 2, the 2 with the lanes
            rgo, rgi = sch.split(red.pop(), [None, 2])
            red, pairs = red + [rgo], [rgi]
        cwo, cwi = sch.split(cw, [None, reg_w]) if cw is not None else (None, None)
        # (paired, 4 weight registers are live and LLVM spills one of 8 accumulators on AVX2's 16;
        # the halves outside the pixels, or 2 pixels, measured no faster on a Zen 3)
        order = head + ([ch] if ch is not None else []) + [cvo] + ([cwo] if cwo is not None else []) + red \
            + ([cwi] if cwi is not None else []) + [cvm] + pairs + [cvi, ri]
        sch.reorder(*order)
        if cwi is not None:
            sch.unroll(cwi)
        sch.unroll(cvm)
        init = sch.decompose_reduction(conv, order[0])
        sch.vectorize(sch.get_loops(init)[-1])
        sch.tensorize(pairs[0] if pair else cvi, intrin)

    def _amx(self, sch, conv, ch, cw, cv, red, ow, kind, contiguous=False):
        """Tile groups of m pixels x 64 output channels (`amx_intrinsics`), or, where the task has
        an even number of output rows, of two pixel tiles x 32 channels (`amx_intrinsics_2x2`:
        each weight tile serves both). A pixel tile is one row of m pixels, or, on a map
        narrower than 16 whose rows are `contiguous` in the input and the accumulator, 16 // OW
        whole image rows: 16 rows, not OW."""
        m = largest_divisor_at_most(ow, 16)
        per_tile = 16 // ow if contiguous and ow < 16 and 16 % ow == 0 else 1
        rows = extent(sch, ch) if ch is not None and cw is not None else 0
        if rows % (2 * per_tile):
            per_tile = 1
        pair = self.amx_pairs and rows and rows % 2 == 0
        init_i, update_i, store_i = amx_intrinsics_2x2(m, kind, per_tile) if pair else amx_intrinsics(m, kind)
        cwo, cwi = sch.split(cw, [None, m]) if cw is not None else (None, None)
        rg, ri = red[-2], red[-1]
        taps = red[:-2]          # c-block, ky, kx (those of extent > 1)
        if extent(sch, rg) > 16:   # bf16: 32 pairs per 64-channel block, 16 per tile row
            rgo, rg = sch.split(rg, [None, 16])
            taps = taps + [rgo]
        if pair:
            cho, chi = sch.split(ch, [None, 2 * per_tile])
            cvo, cvi = sch.split(cv, [2, 32])
            spatial, inner = [cho, cwo, cvo], [chi, cwi, cvi, rg, ri]
        else:
            spatial = ([ch] if ch is not None else []) + ([cwo] if cwo is not None else [])
            inner = ([cwi] if cwi is not None else []) + [cv, rg, ri]
        # accumulators in a local buffer written back, and the fused epilogue run, per tile group
        sch.reorder(*spatial, *taps, *inner)
        wb = sch.cache_write(conv, 0, "local")
        sch.reverse_compute_at(wb, spatial[-1])
        # the epilogue too, per tile group: it reads the tiles just stored, while they are in L1
        # (after the whole task's groups it read them back from up to 32 KB: 7% of R50 int8's kernels)
        out = sch.get_consumers(wb)
        if len(out) == 1:
            try:
                sch.reverse_compute_at(out[0], spatial[-1])
                sch.vectorize(sch.get_loops(out[0])[-1])
            except s_tir.ScheduleError:   # deliberate: the epilogue then runs once per task, as before
                pass
        init = sch.decompose_reduction(conv, taps[0] if taps else inner[0])
        depth = len(inner) - 2   # the loops the init and the store tile: all but the reduction's
        sch.tensorize(sch.get_loops(init)[-depth], init_i)
        sch.tensorize(inner[0], update_i)
        sch.tensorize(sch.get_loops(wb)[-depth], store_i)


def _conv_dims(sch, anchor: str = CONV_BLOCK):
    """(kh, kw, input channels (per group), input channel block) read off the conv block's iter
    domains."""
    block = sch.get(sch.get_sblock(anchor))
    red = [iv.dom.extent for iv in block.iter_vars if iv.iter_type == 2]
    cin, kh, kw = (int(e) for e in red)
    return kh, kw, cin, _ic_block(sch, anchor)


def _split_kinds(loops, cin, kh, kw):
    """Loops under a compute_at point: spatial ones first, then the reductions (ic, ry, rx) in
    the compute's order; unit-extent loops are dropped by compute_at, so count only the others."""
    nred = sum(e > 1 for e in (cin, kh, kw))
    return (list(loops[:-nred]), list(loops[-nred:])) if nred else (list(loops), [])


def _name_spatial(sp, rows, ow, ob):
    """Name the (row, column, lane) loops among the spatial ones; unit loops are absent."""
    sp = list(sp)
    cv = sp.pop()  # the lane loop is always innermost and never unit (ob >= 3)
    cw = sp.pop() if ow > 1 and sp else None
    ch = sp.pop() if rows > 1 and sp else None
    return ch, cw, cv


def _ic_block(sch, anchor: str = CONV_BLOCK) -> int:
    """Innermost channel block of the conv's data input: its first 5-D read (weights are 6/7-D,
    the modality vector 1-D)."""
    block = sch.get(sch.get_sblock(anchor))
    for region in block.reads:
        buf = getattr(region, "buffer", None) or region.source
        if len(buf.shape) == 5:
            return int(buf.shape[-1])
    raise ValueError(f"{anchor} reads no 5-D data buffer")
