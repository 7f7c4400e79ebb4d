"""The kernels a program runs, without building it: TVM's legalisation and fusion of the Relax
module (the PrimFuncs that get scheduled, as tuning sees them), and how often an entry calls each.

Each kernel is named three ways:
- `key`: the structural hash of its PrimFunc (what MetaSchedule keys its database by): the same
  kernel in two programs has the same key, whatever TVM numbered it;
- `name`: TVM's name in this program (what the VM calls it, so what a profile records);
- `family`: the name without TVM's numbering (`fused_conv2d9_add10` -> `fused_conv2d_add`).
`shapes` are its parameters' shapes (the batch is the symbol `n` in a dynamic-batch program) and
`macs` a conv's multiply-accumulates per image (None for other kernels).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import relax

from reidc.targets import TargetPreset

from .build import fused_module
from .kernel_macs import conv_macs, output_index


@dataclass(frozen=True)
class Kernel:
    key: str
    name: str
    family: str
    shapes: tuple[tuple[str, ...], ...]
    macs: int | None
    calls: int


def family(name: str) -> str:
    """TVM's fused-function name without the numbers it appends to repeated op names."""
    return "_".join(re.sub(r"(?<=[a-z])\d+$", "", part) for part in name.split("_"))


def _shape(ty) -> tuple[str, ...]:
    shape = getattr(ty, "shape", None)
    dims = tuple(str(getattr(d, "value", d)) for d in shape.values) if isinstance(shape, relax.ShapeExpr) else ("?",)
    return dims + (str(getattr(ty, "dtype", "?")),)


def _macs(name: str, shapes: list[tuple[str, ...]]) -> int | None:
    """A conv's multiply-accumulates per image (`kernel_macs.conv_macs` at batch 1; by TVM's
    name, not the family: "conv2d_int8" and "conv2d_bf16" lose their digits there)."""
    if len(shapes) < 3:
        return None
    weight, out = shapes[1], shapes[output_index(name)]
    if not all(d.isdigit() for d in weight[:-1]) or len(out) != 6 or not all(d.isdigit() for d in out[1:5]):
        return None
    return conv_macs(name, tuple(int(d) for d in weight[:-1]), weight[-1], (1,) + tuple(int(d) for d in out[1:5]))


def _calls(func: relax.Function) -> dict[str, list]:
    """{kernel name: [calls, its arguments' and outputs' shapes]} of a Relax function."""
    found: dict[str, list] = {}
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def visit(e):
        if isinstance(e, relax.Call) and e.op.same_as(call_tir) and isinstance(e.args[0], tvm.ir.GlobalVar):
            name = e.args[0].name_hint
            if name not in found:
                outs = e.ty_args[0]
                outs = list(outs.fields) if isinstance(outs, relax.TupleType) else [outs]
                found[name] = [0, [_shape(a.ty) for a in e.args[1].fields] + [_shape(o) for o in outs]]
            found[name][0] += 1
    relax.analysis.post_order_visit(func, visit)
    return found


def program_kernels(mod: tvm.IRModule, preset: TargetPreset, entry: str) -> list[Kernel]:
    """The kernels `entry` of the Relax module `mod` (compiler/lower/to_relax.py) calls, in the
    order of their first call, once each with their call count."""
    fused = fused_module(mod, preset)
    funcs = {gv.name_hint: f for gv, f in fused.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    out = []
    for name, (calls, shapes) in _calls(fused[entry]).items():
        f = funcs.get(name)
        if f is None:
            continue
        fam = family(name)
        out.append(Kernel(key=f"{tvm_ffi.structural_hash(f) & 0xFFFFFFFFFFFFFFFF:016x}", name=name, family=fam,
                          shapes=tuple(shapes), macs=_macs(name, shapes), calls=calls))
    return out
