"""IR graphs (one per run mode) -> one TVM Relax IRModule with an entry per mode.

Activations travel in a blocked channel layout (N, C//cb, H, W, cb) between convs; the image
enters as NCHW and the feature leaves as (N, F). Each op's lowering is registered in
compiler/lower/ops/ (convs call reidc's TE kernels; everything else is a Relax op that TVM
legalises and fuses into the conv epilogues); this file walks the graphs, builds the entries.
Entries: `visible(x)`, `infrared(x)`, `mixed(x, modality)`; x is (n, 3, H, W) float32 with a
symbolic batch n, modality is (n,) int32 (0 visible, 1 infrared).
"""
from __future__ import annotations

import hashlib

import numpy as np
import tvm
from tvm import relax, tirx as tir

from reidc.compiler.ir import Graph, Op, RunMode
from reidc.kernels.conv2d_bf16 import Bf16Conv
from reidc.kernels.conv2d_int8 import Int8Flavour

from .ops import lowering_of
from .registry import LoweringError

BLOCK = 16  # channel block for activations when the channel count allows


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


class Lowerer:
    """Lowers one graph into the current Relax function, node by node, through each op's
    registered lowering (compiler/lower/registry.py); remembers every value and its layout."""

    def __init__(self, bb: relax.BlockBuilder, g: Graph, x: relax.Var, m: relax.Var | None, n,
                 const: _Constants | None = None, int8: Int8Flavour = Int8Flavour(), bf16: Bf16Conv = Bf16Conv.TILES,
                 binary_word: str = "uint64"):
        self.bb, self.g, self.m, self.n, self.x = bb, g, m, n, x
        self.binary_word = binary_word   # the word binary convs count in (packed bits stay uint64)
        self.int8 = int8   # how the int8 convs' arithmetic is written for the target's ISA
        self.bf16 = bf16   # the kernel bf16 convs lower to
        self.const = const or _Constants()
        self.val: dict[str, relax.Expr] = {}
        self.cb: dict[str, int] = {}   # channel block of a 4-D value; 0 for 2-D values; -1 packed bits

    def emit(self, e):
        return self.bb.emit(e)

    @staticmethod
    def block(c: int) -> int:
        """The channel block a c-channel activation is stored in."""
        for b in (BLOCK, 8):
            if c % b == 0:
                return b
        return c

    def per_channel(self, node, cb: int, vec: np.ndarray, dtype: str = "float32") -> relax.Expr:
        """A (C,) or per-modality (2, C) constant of `node`, shaped to broadcast over its output
        in channel block cb (0: a 2-D output)."""
        c = node.shape[1]
        if vec.ndim == 1:
            shape = (1, c // cb, 1, 1, cb) if cb else (1, c)
            return self.const(vec.reshape(shape).astype(dtype))
        if self.m is None:
            raise LoweringError(f"per-modality constant at {node.source} outside the mixed entry")
        table = self.const(vec.reshape((2, c // cb, cb) if cb else (2, c)).astype(dtype))
        picked = self.emit(relax.op.take(table, self.m, axis=0, mode="clip"))
        shape = (self.n, c // cb, 1, 1, cb) if cb else (self.n, c)
        return self.emit(relax.op.reshape(picked, shape))

    def relayout(self, v: relax.Expr, nid: str, cb: int) -> relax.Expr:
        """Node nid's 4-D value v, from its channel block to `cb` (both > 0)."""
        have = self.cb[nid]
        if have == cb:
            return v
        return self.reblock(v, self.g[nid].shape, have, cb)

    def reblock(self, v: relax.Expr, shape: tuple, have: int, cb: int) -> relax.Expr:
        """A blocked value of a (N, C, H, W) tensor, from channel block `have` to `cb`."""
        _, c, h, w = shape
        if have % cb == 0:   # split each block into have // cb: one transpose between two views
            v = self.emit(relax.op.reshape(v, (self.n, c // have, h, w, have // cb, cb)))
            v = self.emit(relax.op.permute_dims(v, [0, 1, 4, 2, 3, 5]))
            return self.emit(relax.op.reshape(v, (self.n, c // cb, h, w, cb)))
        if cb % have == 0:   # gather cb // have blocks into one
            v = self.emit(relax.op.reshape(v, (self.n, c // cb, cb // have, h, w, have)))
            v = self.emit(relax.op.permute_dims(v, [0, 1, 3, 4, 2, 5]))
            return self.emit(relax.op.reshape(v, (self.n, c // cb, h, w, cb)))
        v = self.emit(relax.op.permute_dims(v, [0, 1, 4, 2, 3]))
        v = self.emit(relax.op.reshape(v, (self.n, c // cb, cb, h, w)))
        return self.emit(relax.op.permute_dims(v, [0, 1, 3, 4, 2]))

    def lower(self, nid: str):
        n = self.g[nid]
        try:
            fn = lowering_of(n.op)
        except LoweringError as e:
            raise LoweringError(f"{e} at {n.source or nid}") from None
        self.val[nid], self.cb[nid] = fn(self, nid, n, [self.val[i] for i in n.inputs])

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


def _function(bb, mode, g, name, with_bits, const, batch, int8=Int8Flavour(), bf16=Bf16Conv.TILES,
              binary_word="uint64"):
    x_node = next((n for _, n in g.items() if n.op == Op.INPUT and n.attrs["name"] == "x"), None)
    if x_node is None:
        raise LoweringError(f"{mode} graph has no image input")
    if len(g.outputs) != 1:
        raise LoweringError(f"{mode} graph has {len(g.outputs)} outputs; expected one")
    nvar = tir.Var("n", "int64") if batch is None else tir.IntImm("int64", batch)
    x = relax.Var("x", relax.TensorType((nvar,) + tuple(x_node.shape[1:]), "float32"))
    params = [x]
    m = None
    if mode == RunMode.MIXED:
        m = relax.Var("modality", relax.TensorType((nvar,), "int32"))
        params.append(m)
    with bb.function(name, params):
        with bb.dataflow():
            low = Lowerer(bb, g, x, m, nvar, const, int8, bf16, binary_word)
            for nid in g.topo():
                low.lower(nid)
            result = low.output(g.outputs[0])
            if with_bits:
                result = relax.Tuple([result] + [low.val[nid] for nid, n in g.items() if n.op == Op.BITPACK])
            out = bb.emit_output(result)
        bb.emit_func_output(out)


def to_relax(graphs: dict[str, Graph], batch: int | None = None, int8: Int8Flavour = Int8Flavour(),
             bf16: Bf16Conv = Bf16Conv.TILES, binary_word: str = "uint64") -> tvm.IRModule:
    """One Relax function per mode graph; each takes the batch size symbolically, or fixed at
    `batch` (what tuning measures, and the tuned kernels need: MetaSchedule tunes static shapes). Graphs with
    binary layers also get `<mode>_bits`, returning (features, packed bits of every bitpack in
    `bit_sites` order), which verification uses to count sign flips exactly; it shares all
    kernels with the main entry. `int8`: how the int8 convs are written for the target's ISA
    (compiler/lower/build.py: `int8_flavour(preset)`); `bf16`: the kernel bf16 convs take
    (`bf16_conv(preset)`: AMX-BF16 tiles, AVX512-BF16 vdpbf16ps, CUDA tensor cores, or float32
    convs of the decoded values);
    `binary_word`: the word binary convs XOR and count in (`binary_word(preset)`), their packed
    uint64 input viewed as twice as many uint32 words where it is "uint32"."""
    bb = relax.BlockBuilder()
    const = _Constants()
    for mode, g in graphs.items():
        _function(bb, mode, g, mode, False, const, batch, int8, bf16, binary_word)
        if g.count(Op.BITPACK):
            _function(bb, mode, g, f"{mode}_bits", True, const, batch, int8, bf16, binary_word)
    return bb.get()
