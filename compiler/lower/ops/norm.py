"""The per-channel affine (what every BN folds into); batch_norm itself never reaches lowering."""
from __future__ import annotations

import numpy as np
from tvm import relax

from reidc.compiler.ir import Op

from ..registry import Lowered, LoweringError, lowers


@lowers(Op.AFFINE)
def _affine(low, nid, n, ins):
    cb = low.cb[n.inputs[0]]
    y = low.emit(relax.op.multiply(ins[0], low.per_channel(n, cb, np.asarray(n.attrs["scale"]))))
    return Lowered(low.emit(relax.op.add(y, low.per_channel(n, cb, np.asarray(n.attrs["bias"])))), cb)


@lowers(Op.BATCH_NORM)
def _batch_norm(low, nid, n, ins):
    raise LoweringError(f"batch_norm at {n.source or nid} reached lowering: the BN folds "
                        f"(compiler/passes/fold_*bn*.py) turn every BN into a conv or an affine")
