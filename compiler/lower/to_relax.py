"""IR graphs (one per run mode) -> one TVM Relax IRModule with an entry per mode.

Activations travel in a blocked channel layout (N, C//cb, H, W, cb) between convs; the image
enters as NCHW and the feature leaves as (N, F). Convs call reidc's TE kernel; everything
else is a Relax op that TVM legalises and fuses into the conv epilogues.
Entries: `visible(x)`, `infrared(x)`, `mixed(x, modality)`; x is (n, 3, H, W) float32 with a
symbolic batch n, modality is (n,) int32 (0 visible, 1 infrared).
"""
from __future__ import annotations

import hashlib

import numpy as np
import tvm
from tvm import relax, tirx as tir

from compiler.ir import Graph, Op
from compiler.ir.bits import border_correction
from kernels.bconv2d import bconv2d_nchwc, pack_binary_weight
from kernels.bitpack import bitpack_nchwc
from kernels.conv2d import conv2d_nchwc, pack_weight

BLOCK = 16  # channel block for activations when the channel count allows


class LoweringError(ValueError):
    pass


def _block(c: int) -> int:
    for b in (BLOCK, 8):
        if c % b == 0:
            return b
    return c


class _Constants:
    """One relax.Constant per distinct array, shared by every entry of the module: the packed
    binary weights, and float weights a shared BN leaves equal in the visible and infrared
    entries, are stored once in the library."""

    def __init__(self):
        self.seen: dict[tuple, relax.Constant] = {}

    def __call__(self, a: np.ndarray) -> relax.Constant:
        a = np.ascontiguousarray(a)
        key = (a.dtype.str, a.shape, hashlib.sha1(a.tobytes()).hexdigest())
        if key not in self.seen:
            self.seen[key] = relax.const(a)
        return self.seen[key]


class _Lowerer:
    def __init__(self, bb: relax.BlockBuilder, g: Graph, x: relax.Var, m: relax.Var | None, n,
                 const: _Constants | None = None):
        self.bb, self.g, self.m, self.n = bb, g, m, n
        self.const = const or _Constants()
        self.val: dict[str, relax.Expr] = {}
        self.cb: dict[str, int] = {}   # channel block of a 4-D value; 0 for 2-D values
        self.x = x

    def emit(self, e):
        return self.bb.emit(e)

    def per_channel(self, nid: str, vec: np.ndarray) -> relax.Expr:
        """A (C,) or per-modality (2, C) constant shaped to broadcast over nid's layout."""
        node, cb = self.g[nid], self.cb[nid]
        c = node.shape[1]
        if vec.ndim == 1:
            shape = (1, c // cb, 1, 1, cb) if cb else (1, c)
            return self.const(vec.reshape(shape).astype("float32"))
        if self.m is None:
            raise LoweringError(f"per-modality constant at {node.source or nid} outside the mixed entry")
        table = self.const(vec.reshape((2, c // cb, cb) if cb else (2, c)).astype("float32"))
        picked = self.emit(relax.op.take(table, self.m, axis=0, mode="clip"))
        shape = (self.n, c // cb, 1, 1, cb) if cb else (self.n, c)
        return self.emit(relax.op.reshape(picked, shape))

    def lower(self, nid: str):
        n = self.g[nid]
        ins = [self.val[i] for i in n.inputs]
        op = n.op
        if op == Op.INPUT:
            if n.attrs["name"] == "modality":
                self.val[nid], self.cb[nid] = self.m, 0
                return
            _, c, h, w = n.shape
            cb = _block(c)
            v = self.emit(relax.op.reshape(self.x, (self.n, c // cb, cb, h, w)))
            self.val[nid] = self.emit(relax.op.permute_dims(v, [0, 1, 3, 4, 2]))
            self.cb[nid] = cb
        elif op == Op.CONV2D:
            src = n.inputs[0]
            cb, ob = self.cb[src], _block(n.shape[1])
            w = self.const(pack_weight(np.asarray(n.attrs["weight"]), cb, ob))
            args = [ins[0], w, tuple(n.attrs["stride"]), tuple(n.attrs["padding"])]
            if n.attrs["weight"].ndim == 5:
                args.append(ins[1])
            y = self.bb.emit_te(conv2d_nchwc, *args, primfunc_name_hint="conv2d",
                                primfunc_attrs={"op_pattern": 4})
            self.cb[nid] = ob
            bias = n.attr("bias")
            bias = np.zeros(n.shape[1], np.float32) if bias is None else np.asarray(bias)
            self.val[nid] = y
            self.val[nid] = self.emit(relax.op.add(y, self.per_channel(nid, bias)))
        elif op == Op.AFFINE:
            self.cb[nid] = self.cb[n.inputs[0]]
            y = self.emit(relax.op.multiply(ins[0], self.per_channel(nid, np.asarray(n.attrs["scale"]))))
            self.val[nid] = self.emit(relax.op.add(y, self.per_channel(nid, np.asarray(n.attrs["bias"]))))
        elif op == Op.RELU:
            self.cb[nid] = self.cb[n.inputs[0]]
            self.val[nid] = self.emit(relax.op.nn.relu(ins[0]))
        elif op == Op.PRELU:
            self.cb[nid] = self.cb[n.inputs[0]]
            zero = relax.const(np.float32(0))
            neg = self.emit(relax.op.multiply(relax.op.minimum(ins[0], zero), self.per_channel(nid, np.asarray(n.attrs["slope"]))))
            self.val[nid] = self.emit(relax.op.add(relax.op.maximum(ins[0], zero), neg))
        elif op == Op.SIGN:
            self.cb[nid] = self.cb[n.inputs[0]]
            pos = relax.op.astype(relax.op.greater_equal(ins[0], relax.const(np.float32(0))), "float32")
            self.val[nid] = self.emit(relax.op.subtract(relax.op.multiply(pos, relax.const(np.float32(2))),
                                                        relax.const(np.float32(1))))
        elif op == Op.AVGPOOL2D:
            cb = self.cb[nid] = self.cb[n.inputs[0]]
            self.val[nid] = self.emit(relax.op.nn.avg_pool2d(ins[0], n.attrs["kernel"], n.attrs["stride"],
                                                             layout=f"NCHW{cb}c"))
        elif op == Op.BITPACK:
            src_dtype = self.g[n.inputs[0]].dtype  # float32, or int32 from a bconv accumulator
            data = ins[0]
            if not self.cb[n.inputs[0]]:  # (N, C) -> (N, 1, 1, 1, C): one channel block, 1x1 pixels
                data = self.emit(relax.op.reshape(data, (self.n, 1, 1, 1, n.shape[1])))
            args = [data, self.const(np.asarray(n.attrs["threshold"], src_dtype)),
                    self.const(np.asarray(n.attrs["flip"], np.int8)), n.shape[1]]
            if len(ins) > 1:
                args.append(ins[1])
            self.val[nid] = self.bb.emit_te(bitpack_nchwc, *args, primfunc_name_hint="bitpack")
            self.cb[nid] = -1  # packed NHWC words
        elif op == Op.BCONV2D:
            self.lower_bconv(nid, n, ins)
        elif op == Op.ADD:
            a, b = n.inputs
            if self.cb[a] != self.cb[b]:
                raise LoweringError(f"add at {n.source or nid}: operands in layouts c{self.cb[a]} and c{self.cb[b]}")
            self.cb[nid] = self.cb[a]
            self.val[nid] = self.emit(relax.op.add(ins[0], ins[1]))
        elif op == Op.MAXPOOL2D:
            cb = self.cb[nid] = self.cb[n.inputs[0]]
            self.val[nid] = self.emit(relax.op.nn.max_pool2d(
                ins[0], n.attrs["kernel"], n.attrs["stride"], n.attrs["padding"], layout=f"NCHW{cb}c"))
        elif op == Op.GLOBAL_AVGPOOL:
            y = self.emit(relax.op.mean(ins[0], axis=[2, 3]))
            self.val[nid] = self.emit(relax.op.reshape(y, (self.n, n.shape[1])))
            self.cb[nid] = 0
        elif op == Op.DENSE:
            if self.cb[n.inputs[0]]:
                raise LoweringError(f"dense at {n.source or nid} needs a 2-D input")
            w = self.const(np.asarray(n.attrs["weight"]).T)
            y = self.emit(relax.op.matmul(ins[0], w))
            b = n.attr("bias")
            self.val[nid] = self.emit(relax.op.add(y, relax.const(np.asarray(b).reshape(1, -1)))) if b is not None else y
            self.cb[nid] = 0
        else:
            raise LoweringError(f"no lowering for op {op} at {n.source or nid}")

    def lower_bconv(self, nid, n, ins):
        src = self.g[n.inputs[0]]
        ob = _block(n.shape[1])
        w = self.const(pack_binary_weight(np.asarray(n.attrs["packed"]), ob))
        corr = [self.const(a) for a in border_correction(np.asarray(n.attrs["signs"]), src.shape[2:] or (1, 1),
                                                          n.attrs["stride"], n.attrs["padding"])]
        dot = self.bb.emit_te(bconv2d_nchwc, ins[0], w, *corr, src.shape[1], tuple(n.attrs["stride"]),
                              tuple(n.attrs["padding"]), primfunc_name_hint="bconv2d",
                              primfunc_attrs={"op_pattern": 4})
        self.cb[nid] = ob
        if len(n.shape) == 2:  # binary dense: (N, O//ob, 1, 1, ob) -> (N, O)
            dot = self.emit(relax.op.reshape(dot, (self.n, n.shape[1])))
            self.cb[nid] = 0
        if n.attr("accumulator"):  # a bitpack with an integer threshold reads the int32 dot
            self.val[nid] = dot
            return
        y = self.emit(relax.op.multiply(relax.op.astype(dot, "float32"), self.per_channel(nid, np.asarray(n.attrs["scale"]))))
        self.val[nid] = self.emit(relax.op.add(y, self.per_channel(nid, np.asarray(n.attrs["bias"]))))

    def output(self, nid: str) -> relax.Expr:
        v, cb, node = self.val[nid], self.cb[nid], self.g[nid]
        if cb:  # back to NCHW
            _, c, h, w = node.shape
            v = self.emit(relax.op.permute_dims(v, [0, 1, 4, 2, 3]))
            v = self.emit(relax.op.reshape(v, (self.n, c, h, w)))
        return v


def bit_sites(g: Graph) -> list[str]:
    """The bitpack nodes in execution order, named by the sign they replace (its module path for
    reidc's models, its node name in an exported program): the keys of `presign_values`."""
    return [n.attr("site") or n.source or nid for nid, n in g.items() if n.op == Op.BITPACK]


def _function(bb, mode, g, name, with_bits, const, batch):
    x_node = next((n for _, n in g.items() if n.op == Op.INPUT and n.attrs["name"] == "x"), None)
    if x_node is None:
        raise LoweringError(f"{mode} graph has no image input")
    if len(g.outputs) != 1:
        raise LoweringError(f"{mode} graph has {len(g.outputs)} outputs; expected one")
    nvar = tir.Var("n", "int64") if batch is None else tir.IntImm("int64", batch)
    x = relax.Var("x", relax.TensorType((nvar,) + tuple(x_node.shape[1:]), "float32"))
    params = [x]
    m = None
    if mode == "mixed":
        m = relax.Var("modality", relax.TensorType((nvar,), "int32"))
        params.append(m)
    with bb.function(name, params):
        with bb.dataflow():
            low = _Lowerer(bb, g, x, m, nvar, const)
            for nid in g.topo():
                low.lower(nid)
            result = low.output(g.outputs[0])
            if with_bits:
                result = relax.Tuple([result] + [low.val[nid] for nid, n in g.items() if n.op == Op.BITPACK])
            out = bb.emit_output(result)
        bb.emit_func_output(out)


def to_relax(graphs: dict[str, Graph], batch: int | None = None) -> tvm.IRModule:
    """One Relax function per mode graph; each takes the batch size symbolically, or fixed at
    `batch` (what tuning measures, and the tuned kernels need: MetaSchedule tunes static shapes). Graphs with
    binary layers also get `<mode>_bits`, returning (features, packed bits of every bitpack in
    `bit_sites` order), which verification uses to count sign flips exactly; it shares all
    kernels with the main entry."""
    bb = relax.BlockBuilder()
    const = _Constants()
    for mode, g in graphs.items():
        _function(bb, mode, g, mode, False, const, batch)
        if g.count(Op.BITPACK):
            _function(bb, mode, g, f"{mode}_bits", True, const, batch)
    return bb.get()
