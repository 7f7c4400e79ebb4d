"""int8 convs on CUDA tensor cores (sm_72+): reidc's implicit-GEMM conv (`conv2d_nchwc_int8_wmma`)
on TVM's s8 x s8 -> s32 WMMA intrinsics (16x16x16 fragments).

TVM 0.27's own int8 rule (dlight `MatmulInt8Tensorization`) fails in InjectSoftwarePipeline
(GetWmmaFragmentSize: "it != fragment_info_.end()") even for a plain s8 matmul, and its fp16 rule
with s8 fragments stages K in rows that WMMA cannot load: 8-bit fragments need a row stride
(ldm) that is a multiple of 16 elements and a 256-bit aligned pointer, so a 64-wide K row puts
the second and fourth fragment 16 and 48 bytes into it. This rule is TVM's int8 rule (the same
normalisation to C[S, I, J] += A[S, I, K] * B[S, J, K], padding to whole tiles, 128 x 128 block
tiles of 16 warps, 2 x 2 fragments a warp, accumulator staged through shared memory, epilogue
inlined after it) with two changes:
  - no software pipeline: the K stage is double-buffered (`double_buffer_scope`) but not
    pipelined, the part that fails;
  - K stages of 64 (4 fragments deep) in a fragment-major shared layout: the (row, k) staging
    buffer is stored as (k // 16, row, k % 16), so every fragment is 16 rows of 16 contiguous
    bytes (ldm 16) that start a multiple of 256 bytes into the buffer. tests/test_cuda.py reads
    these strides and offsets back from the generated CUDA.
"""
from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.dlight.gpu.base import GPUScheduleRule
from tvm.s_tir.dlight.gpu.matmul import (auto_inline_consumer_chain, auto_inline_producers, get_index_map,
                                         get_reduction_blocks)

from .conv2d_int8 import QWMMA_BLOCK
from .schedule_utils import block_named

FRAG = 16                  # WMMA m = n = k
WARPS_I, WARPS_J = 4, 4    # warps of a block along I and J
FRAGS_I, FRAGS_J = 2, 2    # fragments of a warp along I and J
K_FRAGS = 4                # fragments along K per shared-memory stage (K stages of 64)
WARP, VECTOR = 32, 4       # threads of a warp; bytes per thread per global load


def fragment_major(*ix):
    """(..., row, k) -> (..., k // 16, row, k % 16): a staged K tile as whole 16 x 16 fragments."""
    *lead, row, k = ix
    return (*lead, k // FRAG, row, k % FRAG)


class ConvInt8WMMA(GPUScheduleRule):
    """reidc's int8 tensor-core conv (its block `QWMMA_BLOCK`); other functions: None, and so is
    a conv the intrinsics do not tensorize (dlight's generic rules then schedule it)."""

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        if block_named(sch, func, QWMMA_BLOCK) is None:
            return None
        from tvm.s_tir.tensor_intrin.cuda import get_wmma_intrin_group
        blocks = get_reduction_blocks(sch, sch.get_child_blocks(get_root_block(sch)))
        if blocks is None:
            return None
        main = blocks[0]
        # normalise to C[S, I, J] += A[S, I, K] * B[S, J, K] and pad to whole block tiles
        reindex_a = sch.reindex(main, ("read", 0))
        reindex_b = sch.reindex(main, ("read", 1))
        reindex_c = sch.reindex(main, ("write", 0))
        maps = get_index_map(sch.get(main))
        if maps is None:
            return None
        matmul_map, a_map, b_map, c_map = maps
        sch.transform_layout(reindex_a, ("write", 0), a_map)
        sch.transform_layout(reindex_b, ("write", 0), b_map)
        sch.transform_layout(reindex_c, ("read", 0), c_map)
        sch.transform_block_layout(main, matmul_map)
        sch.pad_einsum(main, [1, FRAG * WARPS_I * FRAGS_I, FRAG * WARPS_J * FRAGS_J, FRAG * K_FRAGS])

        batch, i, j, k = sch.get_loops(main)
        i, i_inner = sch.split(i, [None, FRAG])
        j, j_inner = sch.split(j, [None, FRAG])
        k, k_inner = sch.split(k, [None, FRAG])
        sch.reorder(i, j, k, i_inner, j_inner, k_inner)
        inner = main
        outer = sch.blockize(i_inner)
        i0, i1, i2, i3 = sch.split(i, [None, 1, WARPS_I, FRAGS_I])
        j0, j1, j2, j3 = sch.split(j, [1, None, WARPS_J, FRAGS_J])
        k0, k1 = sch.split(k, [None, K_FRAGS])
        sch.reorder(i0, j0, i1, j1, j2, i2, k0, k1, i3, j3)
        sch.bind(batch, "blockIdx.z")
        sch.bind(sch.fuse(i0, j0), "blockIdx.x")
        sch.bind(sch.fuse(i1, j1), "blockIdx.y")
        warp = sch.fuse(j2, i2)
        sch.bind(warp, "threadIdx.y")

        def fetch_to_shared(index):
            stage = sch.cache_read(outer, index, "shared.dyn")
            sch.compute_at(stage, k0)
            fused = sch.fuse(*sch.get_loops(stage)[-2:])
            _, ty, tx, vec = sch.split(fused, [None, WARPS_I * WARPS_J, WARP, VECTOR])
            sch.bind(tx, "threadIdx.x")
            sch.bind(ty, "threadIdx.y")
            sch.vectorize(vec)
            sch.transform_layout(stage, ("write", 0), fragment_major)
            sch.annotate(stage, "tirx.manifest_shared_memory_local_stage", 1)
            sch.annotate(stage, "double_buffer_scope", 0)
            return stage

        auto_inline_producers(sch, fetch_to_shared(0))
        auto_inline_producers(sch, fetch_to_shared(1))
        a_frag = sch.cache_read(outer, 0, "wmma.matrix_a")
        b_frag = sch.cache_read(outer, 1, "wmma.matrix_b")
        sch.compute_at(a_frag, k1)
        sch.compute_at(b_frag, k1)
        staged = sch.cache_write(outer, 0, "shared.dyn")
        sch.storage_align(staged, 0, -2, 16, 4)
        store = sch.cache_write(outer, 0, "wmma.accumulator")
        sch.reverse_compute_at(store, warp)
        sch.reverse_compute_at(staged, warp)
        for blk in (store, a_frag, b_frag):
            ii, jj = sch.get_loops(blk)[-2:]
            io, ii = sch.split(ii, [None, FRAG])
            jo, jj = sch.split(jj, [None, FRAG])
            sch.reorder(io, jo, ii, jj)
            if blk is not store:
                sch.unroll(io)
                sch.unroll(jo)
        init = sch.get_child_blocks(sch.decompose_reduction(outer, k0))[0]
        group = get_wmma_intrin_group(load_scope="shared.dyn", store_scope="shared.dyn", in_dtype="int8",
                                      out_dtype="int32", trans_b=True)
        try:
            sch.tensorize(sch.get_loops(a_frag)[-2], group["load_a"])
            sch.tensorize(sch.get_loops(b_frag)[-2], group["load_b"])
            sch.tensorize(sch.get_loops(init)[-2], group["init"])
            sch.tensorize(sch.get_loops(store)[-2], group["store"])
            sch.tensorize(sch.get_loops(inner)[-3], group["compute"])
        except s_tir.ScheduleError:   # a tile the intrinsics do not match: dlight's rules take the conv
            return None
        auto_inline_consumer_chain(sch, staged)
        _, tx, vec = sch.split(sch.fuse(*sch.get_loops(staged)[-2:]), [None, WARP, VECTOR])
        sch.bind(tx, "threadIdx.x")
        sch.vectorize(vec)
        return sch
