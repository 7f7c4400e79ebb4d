"""Register tiles on the stack, not in a heap workspace.

TVM's LowerTVMBuiltin serves every CPU allocation from TVMBackendAllocWorkspace except "global"
ones under 1 KB. A schedule's "local" register tile (a binary conv's popcount accumulators:
12 pixels x 16 channels of uint64 on AVX-512 is 1 KB; the VNNI conv's tile the same) so became
a heap pointer LLVM cannot promote: it keeps the accumulators in registers through the
reduction loop, but zeroes the tile in memory first (a 1 KB memset per tile) and stores it
after, and the epilogue reads it back. Marked `disable_lower_builtin`, the allocation stays an
LLVM alloca of constant size, which SROA turns into registers. Only "local" allocations of
constant size up to `MAX_BYTES` are marked (the stack of a TVM worker thread is 8 MB)."""
from __future__ import annotations

from tvm import tirx

from .tir_walk import rewritten

MAX_BYTES = 4096
DISABLE_LOWER_BUILTIN = "disable_lower_builtin"   # TVM's transform::kDisableLowerTVMBuiltin


def _bytes(buf) -> int | None:
    n = 1
    for e in buf.shape:
        if not isinstance(e, tirx.IntImm):
            return None
        n *= int(e.value)
    return n * buf.dtype.bits * buf.dtype.lanes // 8


def _marked(stmt):
    if not isinstance(stmt, tirx.AllocBuffer):
        return None
    size = _bytes(stmt.buffer)
    if stmt.buffer.scope() != "local" or size is None or size > MAX_BYTES \
            or DISABLE_LOWER_BUILTIN in (stmt.annotations or {}):
        return stmt
    marks = {**dict(stmt.annotations or {}), DISABLE_LOWER_BUILTIN: tirx.IntImm("int32", 1)}
    return tirx.AllocBuffer(stmt.buffer, marks, stmt.span)


def stack_register_tiles(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """`func` with its small "local" allocations kept on the stack."""
    body = rewritten(func.body, _marked)
    return func if body.same_as(func.body) else func.with_body(body)
