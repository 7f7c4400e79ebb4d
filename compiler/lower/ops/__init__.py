"""Each op's lowering to Relax, one file per family of ops (as compiler/ir/opset/)."""
from typing import Callable

from reidc.compiler.ir import Op

from ..registry import LOWERINGS, LoweringError
from . import io, conv, norm, elementwise, pool, pad, binary, quant, bf16  # noqa: F401  (each registers its ops)


def lowering_of(op: Op) -> Callable:
    try:
        return LOWERINGS[op]
    except KeyError:
        raise LoweringError(f"no lowering for op {op}") from None
