"""Bit-packing fused into the binary conv that produces its input (a Relax pass between TVM's
FuseOps and FuseTIR).

TVM's FuseOps leaves a bitpack (a reduction over 64 channels) as a kernel of its own after the
fused binary conv whose float output it packs: the next binary conv's input is then one more
kernel call, one more pass over the thread pool, and a read of the conv's whole output. In a
Bi-Real block that float output is also the next block's residual, so it is still written; what
fusion removes is the separate kernel. This pass extends the conv's fused group with the
bitpack call: the group returns (output, bits), and FuseTIR makes one PrimFunc of both, whose
schedule (kernels/bconv_schedule.py `BConv2dNCHWc`) packs each output row's words in the same
parallel task that computed the row.

It fires where a bitpack's data is the output of a fused group holding a binary conv
(kernels/bconv2d.py's block), its other arguments (the thresholds) are constants or values
defined before the conv, and each word holds whole channel blocks (channels a multiple of the
word's bits); it leaves every other bitpack alone (the one after the stem's max-pool,
per-modality thresholds picked after the conv, a partial last word, a conv group that already
returns a tuple).
"""
from __future__ import annotations

import tvm
from tvm import relax, s_tir, tirx

from reidc.compiler.ir.bits import WORD_BITS
from reidc.kernels.bconv2d import BCONV_BLOCK
from reidc.kernels.bitpack import BITPACK_BLOCK, whole_words
from reidc.kernels.schedule_utils import block_named

from .kernel_macs import PACKS_OUTPUT

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")


def _has_block(func, name: str) -> bool:
    return isinstance(func, tirx.PrimFunc) and block_named(s_tir.Schedule(func), func, name) is not None


def _call_tir_callees(func: relax.Function) -> list:
    """The GlobalVars a primitive Relax function calls through call_tir."""
    out = []

    def visit(e):
        if isinstance(e, relax.Call) and e.op.same_as(_CALL_TIR):
            out.append(e.args[0])
    relax.analysis.post_order_visit(func.body, visit)
    return out


def _roles(mod: tvm.IRModule) -> tuple[set, set]:
    """(primitive groups holding a binary conv and returning one tensor, bitpack PrimFuncs),
    found once per module: each PrimFunc is looked at once."""
    bitpacks = {gv for gv, f in mod.functions.items() if _has_block(f, BITPACK_BLOCK)}
    bconvs = {gv for gv, f in mod.functions.items() if _has_block(f, BCONV_BLOCK)}
    groups = {gv for gv, f in mod.functions.items()
              if isinstance(f, relax.Function) and f.attrs and f.attrs.get("Primitive")
              and not isinstance(f.ret_ty, relax.TupleType) and any(c in bconvs for c in _call_tir_callees(f))}
    return groups, bitpacks


def _merged(mod: tvm.IRModule, group, bitpack_call) -> relax.Function:
    """The group function extended with the bitpack of its output: params + the bitpack's other
    arguments; returns (output, bits)."""
    f = mod[group]
    extra = [relax.Var(f"bitpack_arg{i}", a.ty) for i, a in enumerate(bitpack_call.args[1].fields[1:])]
    body = f.body
    out = body.body
    # the bits' batch in the group's own symbolic batch (its output's), the rest as the call had it
    outer = bitpack_call.ty
    batch = out.ty.shape.values[0]
    bits_ty = relax.TensorType([batch] + list(outer.shape.values[1:]), outer.dtype)
    bits = relax.Var("bits", bits_ty)
    both = relax.Var("out_bits", relax.TupleType([out.ty, bits_ty]))
    new_bindings = [relax.VarBinding(bits, relax.call_tir(bitpack_call.args[0], [out, *extra], bits_ty)),
                    relax.VarBinding(both, relax.Tuple([out, bits]))]
    blocks = list(body.blocks)
    last = blocks[-1]
    kind = relax.DataflowBlock if isinstance(last, relax.DataflowBlock) else relax.BindingBlock
    blocks[-1] = kind(list(last.bindings) + new_bindings)
    return relax.Function(list(f.params) + extra, relax.SeqExpr(blocks, both),
                          relax.TupleType([out.ty, bits_ty]), f.is_pure, f.attrs)


def _whole_words(data_ty, bits_ty) -> bool:
    """Whether each packed word holds whole channel blocks of the conv's output (N, C/cb, H, W,
    cb): the form the conv's schedule packs under its row task (bitpack_schedule.py)."""
    try:
        blocks, cb = (int(v) for v in data_ty.shape.values[1:5:3])
        words = int(bits_ty.shape.values[-1])
    except (TypeError, AttributeError):
        return False
    word = str(bits_ty.dtype)
    return (word in WORD_BITS and WORD_BITS[word] % cb == 0 and whole_words(cb, blocks * cb, word)
            and words * WORD_BITS[word] == blocks * cb)


def _available(arg, before: int, params: set, position: dict) -> bool:
    """Whether `arg` is defined before binding `before`: a constant, a parameter, or bound earlier."""
    return isinstance(arg, tvm.ir.expr.Constant) or arg in params or position.get(arg, before) < before


def _rewrite_block(mod: tvm.IRModule, bb: relax.BlockBuilder, block, params: set, merged: dict, roles):
    """The block with each fusable (conv group, bitpack) pair rewritten; None if none was."""
    groups, bitpacks = roles
    bindings = list(block.bindings)
    producer = {}   # var -> index of its binding, for conv-group calls
    for i, b in enumerate(bindings):
        if isinstance(b, relax.VarBinding) and isinstance(b.value, relax.Call) and b.value.op in groups:
            producer[b.var] = i
    fuse = {}   # producer index -> bitpack binding index
    position = {b.var: k for k, b in enumerate(bindings)}
    for j, b in enumerate(bindings):
        v = b.value if isinstance(b, relax.VarBinding) else None
        if not (isinstance(v, relax.Call) and v.op.same_as(_CALL_TIR) and v.args[0] in bitpacks):
            continue
        data, *rest = b.value.args[1].fields
        i = producer.get(data)
        if i is None or i in fuse or not all(_available(a, i, params, position) for a in rest):
            continue
        if not _whole_words(data.ty, b.value.ty):   # a partial last word: its own kernel, as before
            continue
        fuse[i] = j
    if not fuse:
        return None
    out, drop = [], set(fuse.values())
    for i, b in enumerate(bindings):
        if i in drop:
            continue
        if i not in fuse:
            out.append(b)
            continue
        pack = bindings[fuse[i]]
        key = (b.value.op, pack.value.args[0])
        if key not in merged:
            func = _merged(mod, b.value.op, pack.value)
            merged[key] = (func, bb.add_func(func, b.value.op.name_hint + PACKS_OUTPUT))
        func, gv = merged[key]
        call = bb.normalize(relax.Call(gv, list(b.value.args) + list(pack.value.args[1].fields[1:])))
        var = relax.DataflowVar if isinstance(b.var, relax.DataflowVar) else relax.Var
        both = var(f"{b.var.name}_bits", call.ty)   # the callee's type in this function's shapes
        out += [relax.VarBinding(both, call),
                relax.VarBinding(b.var, relax.TupleGetItem(both, 0)),
                relax.VarBinding(pack.var, relax.TupleGetItem(both, 1))]
    kind = relax.DataflowBlock if isinstance(block, relax.DataflowBlock) else relax.BindingBlock
    return kind(out)


@tvm.transform.module_pass(opt_level=0, name="reidc_fuse_bitpack")
def fuse_bitpack_into_producer(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Each fusable (binary conv group, bitpack) pair of every entry function becomes one call
    of a group returning (output, bits); one new group per (group, bitpack kernel) pair."""
    merged: dict = {}
    updates = {}
    roles = _roles(mod)
    if not all(roles):
        return mod
    bb = relax.BlockBuilder(mod)
    for gv, f in mod.functions.items():
        if not isinstance(f, relax.Function) or (f.attrs and f.attrs.get("Primitive")):
            continue
        if not isinstance(f.body, relax.SeqExpr):
            continue
        blocks, changed = [], False
        for blk in f.body.blocks:
            new = _rewrite_block(mod, bb, blk, set(f.params), merged, roles)
            blocks.append(new if new is not None else blk)
            changed |= new is not None
        if changed:
            updates[gv] = relax.Function(f.params, relax.SeqExpr(blocks, f.body.body), f.ret_ty,
                                         f.is_pure, f.attrs)
    if not updates:
        return mod
    for gv, f in updates.items():
        bb.update_func(gv, f)
    return relax.transform.Normalize()(bb.get())
