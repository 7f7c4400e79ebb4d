"""Capture a torch.export program (.pt2) into reidc's IR, at the ATen level: parameters and
constant subgraphs are folded, the backbone's ops and the ones a ReID head uses (F.normalize, cat,
clamp, eval-mode dropout) are mapped onto IR ops; anything else is an error naming the op and
its module path."""
from __future__ import annotations

import operator
from pathlib import Path

import torch
import torch.fx as fx

from reidc.compiler.base.errors import CaptureError, UnsupportedOpError
from reidc.compiler.ir import Graph, Op, Placement, verify

from .capture_common import (Builder, conv_attrs, conv_op, flatten_features, maxpool_attrs, np_of, pair,
                             slope_of)

def _all_constant(n: fx.Node, tensors: dict) -> bool:
    ins = [v for v in n.all_input_nodes]
    return bool(ins) and all(v.name in tensors for v in ins) and n.op == "call_function"


def _fold_constant(n: fx.Node, tensors: dict, where: str) -> torch.Tensor:
    """Evaluate an ATen op whose inputs are all parameters/constants (ATen ops are pure)."""
    def sub(v):
        return tensors[v.name] if isinstance(v, fx.Node) else v
    args = fx.node.map_aggregate(n.args, sub)
    kwargs = fx.node.map_aggregate(n.kwargs, sub)
    try:
        with torch.no_grad():
            out = n.target(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - report which op could not be folded
        raise CaptureError(f"cannot fold constant op {n.target} at {where}: {e}") from None
    if not isinstance(out, torch.Tensor):
        raise UnsupportedOpError(f"unsupported constant op {n.target} at {where} (returns {type(out).__name__})")
    return out

_aten = torch.ops.aten


def capture_exported(path: str | Path, name: str | None = None) -> Graph:
    """Load a `torch.export.save`d archive, checked first so that nothing in it is unpickled
    (frontend/pt2.py), and convert its ATen graph."""
    from .pt2 import load_program
    path = Path(path)
    return capture_program(load_program(path), name or path.stem)


class _Norm:
    """A pending L2 norm of a feature (F.normalize's linalg_vector_norm, clamp_min, expand_as),
    which becomes an `l2_normalize` when the feature is divided by it."""

    def __init__(self, x: str, eps: float = 0.0):
        self.x, self.eps = x, eps

    def __str__(self):
        return "an L2 norm other than F.normalize's"


_HEAD_OPS = (_aten.cat.default, _aten.clamp.default, _aten.clamp_min.default, _aten.hardtanh.default,
             _aten.relu6.default, _aten.dropout.default, _aten.sigmoid.default, _aten.hardsigmoid.default,
             _aten.hardswish.default, _aten.linalg_vector_norm.default,
             _aten.expand_as.default, _aten.div.Tensor)


def _head_op(b: Builder, n: fx.Node, t, a, where: str, X, pending: dict) -> str | None:
    """The ATen ops a ReID head uses beyond the backbone's: the IR node id, or None where the
    op leaves a pending value (an L2 norm on its way to F.normalize's division)."""
    if t == _aten.dropout.default:
        if len(a) > 2 and a[2]:
            raise UnsupportedOpError(f"unsupported op dropout in training mode at {where} (export the model in eval())")
        return X(a[0])
    if t == _aten.sigmoid.default:
        return b.add(where, Op.SIGMOID, [X(a[0])], source=where)
    if t == _aten.hardsigmoid.default:
        return b.add(where, Op.HARD_SIGMOID, [X(a[0])], source=where)
    if t == _aten.hardswish.default:
        x = X(a[0])
        return b.add(where, Op.MULTIPLY, [x, b.add(f"{where}.gate", Op.HARD_SIGMOID, [x], source=where)], source=where)
    if t == _aten.relu6.default:
        return b.add(where, Op.CLAMP, [X(a[0])], {"min": 0.0, "max": 6.0}, where)
    if t == _aten.hardtanh.default:
        lo, hi = (a[1] if len(a) > 1 else -1.0), (a[2] if len(a) > 2 else 1.0)
        return b.add(where, Op.CLAMP, [X(a[0])], {"min": float(lo), "max": float(hi)}, where)
    if t == _aten.linalg_vector_norm.default:
        x = X(a[0])
        ord_, dims, keep = (a[1] if len(a) > 1 else 2), (a[2] if len(a) > 2 else None), (a[3] if len(a) > 3 else False)
        if len(b.g[x].shape) != 2 or float(ord_) != 2.0 or list(dims or []) not in ([1], [-1]) or not keep:
            raise UnsupportedOpError(f"unsupported op linalg_vector_norm at {where} (reidc takes the L2 norm over the "
                                     "channels of (N, C) features, as F.normalize(x, dim=1))")
        pending[n.name] = _Norm(x)
        return None
    if t == _aten.clamp_min.default and isinstance(pending.get(a[0].name), _Norm):
        pending[n.name] = _Norm(pending[a[0].name].x, float(a[1]))
        return None
    if t == _aten.expand_as.default and isinstance(pending.get(a[0].name), _Norm):
        pending[n.name] = pending[a[0].name]
        return None
    if t == _aten.div.Tensor and isinstance(a[1], fx.Node) and isinstance(pending.get(a[1].name), _Norm):
        norm = pending[a[1].name]
        if X(a[0]) != norm.x or not norm.eps > 0:
            raise UnsupportedOpError(f"unsupported division by an L2 norm at {where} (only F.normalize's x / "
                                     "max(||x||, eps) with eps > 0)")
        return b.add(where, Op.L2_NORMALIZE, [norm.x], {"eps": norm.eps}, where)
    if t in (_aten.clamp.default, _aten.clamp_min.default):
        lo = a[1] if len(a) > 1 else None
        hi = a[2] if len(a) > 2 and t == _aten.clamp.default else None
        if isinstance(lo, fx.Node) or isinstance(hi, fx.Node):
            raise UnsupportedOpError(f"unsupported op clamp with tensor bounds at {where}")
        attrs = {k: float(v) for k, v in (("min", lo), ("max", hi)) if v is not None}
        return b.add(where, Op.CLAMP, [X(a[0])], attrs, where)
    if t == _aten.cat.default:
        parts, dim = list(a[0]), (a[1] if len(a) > 1 else 0)
        ids = [X(p) for p in parts]
        if any(len(b.g[i].shape) != 2 for i in ids) or dim not in (1, -1):
            raise UnsupportedOpError(f"unsupported op cat at {where} (reidc joins (N, C) features along dim 1; "
                                     f"got shapes {[b.g[i].shape for i in ids]}, dim {dim})")
        out = ids[0]
        for k, i in enumerate(ids[1:]):
            out = b.add(where if k == len(ids) - 2 else f"{where}.{k}", Op.CONCAT, [out, i], source=where)
        return out
    raise UnsupportedOpError(f"unsupported op {t} at {where}")


def _where(n: fx.Node) -> str:
    stack = n.meta.get("nn_module_stack") or {}
    return (list(stack.values())[-1][0] if stack else "") or n.name


def capture_program(ep, name: str = "model") -> Graph:
    sig = ep.graph_signature
    consts = {**{k: v for k, v in ep.state_dict.items()}, **dict(getattr(ep, "constants", {}) or {})}
    p2t = {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
           **getattr(sig, "inputs_to_lifted_tensor_constants", {})}
    b = Builder(name)
    env: dict[str, str] = {}
    pending: dict[str, object] = {}   # values that are not tensors of the IR (yet): see _head_op
    tensors: dict[str, torch.Tensor] = {}
    user_inputs = list(sig.user_inputs)
    if len(user_inputs) != 1:
        raise CaptureError(f"{name}: the program takes {len(user_inputs)} inputs; reidc expects one image tensor")
    for n in ep.graph.nodes:
        if n.op == "placeholder":
            if n.name in p2t:
                tensors[n.name] = consts[p2t[n.name]]
            else:
                shape = tuple(n.meta["val"].shape)
                if len(shape) != 4:
                    raise CaptureError(f"{name}: input {n.name} has shape {shape}; expected NCHW images")
                env[n.name] = b.add("x", Op.INPUT, [], {"name": "x"}, shape=("N",) + tuple(int(d) for d in shape[1:]))
            continue
        if n.op == "output":
            outs = [a for a in n.args[0] if a is not None]
            b.g.outputs = [env[o.name] for o in outs[:1]]
            continue
        t, a, where = n.target, n.args, _where(n)
        T = lambda v: tensors[v.name] if isinstance(v, fx.Node) and v.name in tensors else None  # noqa: E731

        def X(v, where=where):
            if v.name in env:
                return env[v.name]
            raise UnsupportedOpError(f"unsupported use of {pending.get(v.name, v.name)} at {where}")
        if _all_constant(n, tensors):  # e.g. sign(W) * alpha computed from parameters: fold now
            tensors[n.name] = _fold_constant(n, tensors, where)
            continue
        if t == _aten.sign.default:
            env[n.name] = b.add(where, Op.SIGN, [X(a[0])], {"site": n.name}, source=where)
        elif t == _aten.prelu.default:
            env[n.name] = b.add(where, Op.PRELU, [X(a[0])], {"slope": slope_of(T(a[1]), b.g[X(a[0])].shape[1])}, where)
        elif t == _aten.avg_pool2d.default:
            k = pair(a[1]); s = pair(a[2]) if len(a) > 2 and a[2] else k
            if (len(a) > 3 and pair(a[3]) != (0, 0)) or (len(a) > 4 and a[4]):
                raise UnsupportedOpError(f"unsupported op avg_pool2d with padding/ceil_mode at {where}")
            env[n.name] = b.add(where, Op.AVGPOOL2D, [X(a[0])], {"kernel": k, "stride": s}, where)
        elif t in (_aten.conv2d.default, _aten.convolution.default):
            if t == _aten.convolution.default and a[6]:
                raise UnsupportedOpError(f"unsupported op transposed convolution at {where}")
            stride, pad, dil = (a[3:6] if len(a) > 5 else (a[3] if len(a) > 3 else 1, a[4] if len(a) > 4 else 0, 1))
            groups = a[8] if t == _aten.convolution.default else (a[6] if len(a) > 6 else 1)
            env[n.name] = b.add(where, conv_op(T(a[1]), groups),
                                [X(a[0])], conv_attrs(T(a[1]), T(a[2]) if len(a) > 2 else None, stride, pad, dil,
                                                       groups, where), where)
        elif t in (_aten._native_batch_norm_legit_no_training.default, _aten.batch_norm.default):
            w, bias, mean, var = (T(v) for v in a[1:5])
            eps = a[-1] if t == _aten._native_batch_norm_legit_no_training.default else a[7]
            c = mean.shape[0]
            params = tuple(np_of(v) for v in (w if w is not None else torch.ones(c),
                                            bias if bias is not None else torch.zeros(c), mean, var))
            env[n.name] = b.add(where, Op.BATCH_NORM, [X(a[0])], {"eps": float(eps), "params": {
                Placement.SHARED: params}}, where, Placement.SHARED)
        elif t == operator.getitem:
            if a[1] != 0:   # e.g. max-pooling's indices: an error only where something reads them
                pending[n.name] = f"output {a[1]} of {a[0].target}"
                continue
            env[n.name] = env[a[0].name]
        elif t in _HEAD_OPS:
            out = _head_op(b, n, t, a, where, X, pending)
            if out is not None:
                env[n.name] = out
        elif t in (_aten.relu.default, _aten.relu_.default):
            env[n.name] = b.add(where, Op.RELU, [X(a[0])], source=where)
        elif t in (_aten.add.Tensor, _aten.add_.Tensor) and all(isinstance(v, fx.Node) for v in a[:2]):
            env[n.name] = b.add(n.name, Op.ADD, [X(a[0]), X(a[1])], source=where)
        elif t in (_aten.max_pool2d.default, _aten.max_pool2d_with_indices.default):
            k = pair(a[1]); s = pair(a[2]) if len(a) > 2 and a[2] else k
            p = pair(a[3]) if len(a) > 3 else (0, 0)
            if len(a) > 4 and pair(a[4]) != (1, 1):
                raise UnsupportedOpError(f"unsupported op max_pool2d with dilation at {where}")
            env[n.name] = b.add(where, Op.MAXPOOL2D, [X(a[0])], maxpool_attrs(k, s, p, len(a) > 5 and a[5]), where)
        elif t in (_aten.adaptive_max_pool2d.default,) and pair(a[1]) == (1, 1):
            env[n.name] = b.add(where, Op.GLOBAL_MAXPOOL, [X(a[0])], source=where)
        elif (t == _aten.adaptive_avg_pool2d.default and pair(a[1]) == (1, 1)) or (
                t == _aten.mean.dim and sorted(d % 4 for d in a[1]) == [2, 3]):
            env[n.name] = b.add(where, Op.GLOBAL_AVGPOOL, [X(a[0])], source=where)
        elif t in (_aten.flatten.using_ints, _aten.view.default, _aten.reshape.default, _aten._unsafe_view.default):
            env[n.name] = flatten_features(b, X(a[0]), where)
        elif t == _aten.linear.default:
            attrs = {"weight": np_of(T(a[1]))}
            if len(a) > 2 and a[2] is not None:
                attrs["bias"] = np_of(T(a[2]))
            env[n.name] = b.add(where, Op.DENSE, [X(a[0])], attrs, where)
        else:
            raise UnsupportedOpError(f"unsupported op {t} at {where}")
    return verify(b.g)
