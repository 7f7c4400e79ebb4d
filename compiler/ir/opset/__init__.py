"""The declarations of reidc's ops, one `OpSpec` each (compiler/ir/spec.py), grouped by family.
Importing this package declares them; `compiler.ir.ops.Op` is built from what it declares."""
from . import io, conv, norm, elementwise, pool, pad, binary, quant, bf16  # noqa: F401  (each declares its ops)
