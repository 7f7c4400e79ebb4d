"""CUDA schedules as dlight rules: `ConvGPU` for reidc's float conv, grouped conv and binary conv
(each with its fused epilogue), `BitpackGPU` for bit-packing; the int8 conv's `ConvInt8GPU`
(dp4a) is in cuda_int8_schedule.py, the tensor-core convs' in cuda_wmma.py (bf16) and
cuda_int8_wmma.py (int8). Everything else takes TVM's dlight
GPU rules (Matmul, GEMV, Reduction, GeneralReduction, Fallback; see compiler/lower/build.py).

ConvGPU, for an output (N, O//ob, OH, OW, ob):
  block  = one (n, channel block, `rows` output rows) tile, `threads` threads
  thread = `px` adjacent output pixels x `ch` output channels, accumulators in registers
  the reduction runs in chunks (input channels for the float conv, 64-bit words for the binary
  conv); per chunk the block stages the padded input tile and the weight tile in shared memory,
  fetched cooperatively by all threads (consecutive threads read consecutive addresses).
The binary conv's inner loop is XOR + `__popcll` on packed words (PTX popc.b64).
"""
from __future__ import annotations

from tvm.s_tir.dlight.gpu.base import GPUScheduleRule

from .bconv2d import BCONV_BLOCK, BPAD_BLOCK
from .bitpack import BITPACK_BLOCK
from .cuda_wmma import ConvBF16WMMA
from .conv2d import CONV_BLOCK, GROUP_CONV_BLOCK, PAD_BLOCK
from .cuda_int8_schedule import ConvInt8GPU
from .cuda_int8_wmma import ConvInt8WMMA
from .schedule_utils import anchored, block_named, cooperative_fetch, largest_divisor_at_most, reads_of, thread_tile


class ConvGPU(GPUScheduleRule):
    """Direct conv with shared-memory tiles; `chunk_axis` names the reduction axis that is
    staged chunk by chunk (0: the float conv's input channels, 2: the binary conv's words).
    A grouped conv stages the chunks of its block's group (a thread block's output channels
    lie in one group)."""

    def __init__(self, anchor: str, pad: str, chunk_axis: int, elem_bytes: int, threads: int = 256,
                 px: int = 2, ch: int = 4, smem_bytes: int = 24 * 1024):
        self.anchor, self.pad, self.chunk_axis, self.elem_bytes = anchor, pad, chunk_axis, elem_bytes
        self.float_conv = anchor in (CONV_BLOCK, GROUP_CONV_BLOCK)   # NCHWc data; else the binary conv's NHWC words
        self.threads, self.px, self.ch, self.smem_bytes = threads, px, ch, smem_bytes

    def apply(self, func, target, tunable):
        found = anchored(func, self.anchor, (self.anchor, self.pad))
        if found is None:
            return None
        sch, out = found
        main = sch.get_sblock(self.anchor)
        tile = thread_tile(sch, out, main, self.threads, self.px, self.ch)
        if tile is None:
            return None
        threads, rows, oh, ow, spatial, named, red = (tile.threads, tile.rows, tile.oh, tile.ow, tile.spatial,
                                                      dict(tile.reductions), tile.red)
        chunk_total = red[self.chunk_axis]
        data_buf, weight = self._inputs(sch, main)
        per_unit = self._bytes_per_chunk_unit(sch, data_buf, weight, rows, oh, ow, red)
        step = self._chunk_step(data_buf, chunk_total)
        units = largest_divisor_at_most(chunk_total // step, max(1, self.smem_bytes // max(1, per_unit * step)))
        if self.chunk_axis in named:
            co, ci = sch.split(named.pop(self.chunk_axis), [None, units * step])
        else:
            co, ci = sch.add_unit_loop(main), None
        rest = [named[k] for k in sorted(named)]
        sch.reorder(co, *([ci] if ci is not None else []), *rest, *spatial)
        for lp in spatial:
            sch.unroll(lp)

        # stage the (padded) input tile and the weight tile in shared memory, per chunk
        if block_named(sch, func, self.pad) is not None:
            stage = sch.get_sblock(self.pad)
            sch.set_scope(stage, 0, "shared")  # before compute_at: the region then spans all threads
            sch.compute_at(stage, co)
        else:
            stage = sch.cache_read(main, data_buf[0], "shared")
            sch.compute_at(stage, co)
        cooperative_fetch(sch, stage, co, threads)
        if weight is not None:
            ws = sch.cache_read(main, weight[0], "shared")
            sch.compute_at(ws, co)
            cooperative_fetch(sch, ws, co, threads)
        sch.decompose_reduction(main, co)
        return sch

    def _inputs(self, sch, main):
        """(index, buffer) of the conv's data input and of its weights (None for per-modality
        weights, which are indexed per sample and stay in global memory)."""
        reads = reads_of(sch, main)
        wdim = 6 if self.float_conv else 5
        data = next(r for r in reads if len(r[1].shape) == (5 if self.float_conv else 4))
        weight = next((r for r in reads if len(r[1].shape) == wdim), None)
        return data, weight

    def _chunk_step(self, data, chunk_total: int) -> int:
        """The float conv's channel chunks are whole channel blocks (cb); words are single."""
        if self.float_conv:
            cb = int(data[1].shape[-1])
            return cb if chunk_total % cb == 0 else chunk_total
        return 1

    def _bytes_per_chunk_unit(self, sch, data, weight, rows, oh, ow, red) -> int:
        """Shared bytes one unit of the chunked axis costs: the input tile plus the weight tile."""
        if self.float_conv:
            _, kh, kw = red
            hp, wp = int(data[1].shape[2]), int(data[1].shape[3])
        else:
            kh, kw, _ = red
            hp, wp = int(data[1].shape[1]), int(data[1].shape[2])
        sh = max(1, (hp - kh) // max(1, oh - 1)) if oh > 1 else 1
        rows_in = min(hp, (rows - 1) * sh + kh)  # hp, wp: the (padded) input the conv reads
        cols_in = wp                              # a tile spans whole rows
        ob = int(weight[1].shape[-1]) if weight is not None else 0
        return self.elem_bytes * (rows_in * cols_in + kh * kw * ob)


class BitpackGPU(GPUScheduleRule):
    """One thread per output word, its 64 channel compares unrolled into a register, 128
    threads per block."""

    def apply(self, func, target, tunable):
        found = anchored(func, BITPACK_BLOCK, (BITPACK_BLOCK,), anchor_is_output=True)
        if found is None:
            return None
        sch, out = found
        if len(sch.get_loops(out)) != 5:
            return None
        store = sch.cache_write(out, 0, "local")
        bx, tx = sch.split(sch.fuse(*sch.get_loops(store)), [None, 128])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        sch.compute_at(out, tx)
        sch.unroll(sch.get_loops(out)[-1])
        return sch


def cuda_rules() -> list:
    return [ConvBF16WMMA(), ConvInt8WMMA(), ConvGPU(CONV_BLOCK, PAD_BLOCK, chunk_axis=0, elem_bytes=4),
            ConvGPU(GROUP_CONV_BLOCK, PAD_BLOCK, chunk_axis=0, elem_bytes=4),
            ConvGPU(BCONV_BLOCK, BPAD_BLOCK, chunk_axis=2, elem_bytes=8), ConvInt8GPU(),
            BitpackGPU()]
