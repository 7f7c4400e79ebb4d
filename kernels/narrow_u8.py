"""float -> uint8 by one float add: clip(rint(x), 0, 255) as the low byte of x + 1.5 * 2^23.

Between 2^23 and 2^24 float32 steps by exactly 1, so for x in [0, 255] the add rounds x to the
nearest integer, ties to even (IEEE's default, rint's), and leaves it in the sum's low mantissa
byte (1.5 * 2^23 is 0x4B400000, whose low byte is 0): a truncating narrow of the sum's bits is the
result. On AVX-512 that is vmaxps + vminps + vaddps + vpmovdb a vector, where rounding, converting
and clamping in int32 (vrndscaleps + vminps + vcvttps2dq + vpmaxsd + vpmovusdb) took five: an
int8 conv's epilogue, which it ends, is a fifth to a third of a 1x1 conv over 64-128 channels.
Exact for every finite x (the clip comes first: rint commutes with clipping to integer bounds)."""
from __future__ import annotations

from tvm import te, tirx as tir

NARROW_BLOCK = "reidc_narrow_u8"
MAGIC = 12582912.0   # 1.5 * 2^23


def narrow_u8(x: te.Tensor) -> te.Tensor:
    """uint8 = clip(rint(x), 0, 255) for a float32 tensor of any shape."""
    def body(*i):
        v = tir.min(tir.max(x(*i), tir.const(0.0, "float32")), tir.const(255.0, "float32"))
        bits = tir.reinterpret("int32", v + tir.const(MAGIC, "float32"))
        return tir.Cast("uint8", bits)
    return te.compute(x.shape, body, name=NARROW_BLOCK, tag="elemwise")
