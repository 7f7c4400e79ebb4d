"""The IR interpreter for tests: compiler/ir/interp.py runs each op's declared reference semantics.
Bits come back as the int8 +-1 values they stand for."""
from reidc.compiler.ir.interp import run as run_ir

__all__ = ["run_ir"]
