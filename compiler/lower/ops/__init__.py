"""Each op's lowering to Relax, one file per family of ops (as compiler/ir/opset/)."""
from . import io, conv, norm, elementwise, pool, binary  # noqa: F401  (each registers its ops)
