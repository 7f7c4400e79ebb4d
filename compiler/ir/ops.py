"""The closed op set of reidc's IR, built from the declarations in compiler/ir/opset/.

Layout is NCHW for 4-D tensors; the batch dimension is the symbol "N". "Per-modality"
constants stack the visible and the infrared value along a new leading axis of size 2 and are
picked per sample by the graph's `modality` input (codes in compiler/base/modes.py).
To add an op: declare its `OpSpec` in an opset file and register its lowering with `@lowers`
in compiler/lower/ops/; `Op.<NAME>` then exists, and tests/test_op_specs.py checks it has
every part.
"""
from enum import StrEnum

from . import opset  # noqa: F401  (declares every op)
from .spec import BITS, SPECS

Op = StrEnum("Op", {name.upper(): name for name in SPECS})
Op.__doc__ = "An IR op; `spec_of(op)` (compiler/ir/spec.py) says what it is."

__all__ = ["Op", "BITS"]
