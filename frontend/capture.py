"""Capture a PyTorch model (an nn.Module, or a torch.export program saved as .pt2) into reidc's IR.

nn.Modules are traced with torch.fx, keeping `SwitchableBN` as one leaf so each BN becomes one
IR `batch_norm` node tagged shared or split. `.pt2` programs are read at the ATen level.
Anything outside the supported op set is an error naming the op and its module path.
"""
from __future__ import annotations

import operator
from pathlib import Path

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from reidc.compiler.ir import Graph, Modality, Node, Op, Placement, verify
from reidc.compiler.ir.shapes import infer

from .bire import BinaryConv2d, binarize
from .models import SwitchableBN
from .reid_layers import (IBN, AdaptiveAvgMaxPool, ChannelGate, EmbeddingHead, GeneralizedMeanPooling, NonLocal,
                          PixelNorm, SELayer)

#: modules traced as one unit and mapped onto IR ops by `_reid_layer`
_REID_LEAVES = (PixelNorm, IBN, SELayer, ChannelGate, NonLocal, GeneralizedMeanPooling, AdaptiveAvgMaxPool,
                EmbeddingHead)
from reidc.compiler.base.errors import CaptureError, UnsupportedOpError


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32, copy=True)


def _bn_params(bn) -> tuple:
    c = bn.num_features
    gamma = bn.weight if bn.weight is not None else torch.ones(c)
    beta = bn.bias if bn.bias is not None else torch.zeros(c)
    return tuple(_np(t) for t in (gamma, beta, bn.running_mean, bn.running_var))


class _Builder:
    """Adds IR nodes with inferred shapes; keeps names unique and ordered."""

    def __init__(self, name):
        self.g = Graph(name)
        self.k = 0

    def add(self, base, op, inputs, attrs=None, source="", modality=Placement.ANY, shape=None, dtype="float32"):
        attrs = attrs or {}
        if shape is None:
            shape = infer(op, [self.g[i].shape for i in inputs], attrs)
        nid = self.g.fresh_id(base.replace(".", "_") or str(op))
        self.g.add(nid, Node(op, inputs, shape, dtype, attrs, source, modality), order=self.k)
        self.k += 1
        return nid


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _is_depthwise(weight, groups) -> bool:
    return groups > 1 and weight.shape[0] == groups and weight.shape[1] == 1


def _conv_attrs(weight, bias, stride, padding, dilation, groups, where):
    if tuple(_pair(dilation)) != (1, 1) or (groups != 1 and not _is_depthwise(weight, groups)):
        raise UnsupportedOpError(f"unsupported op conv2d with dilation={tuple(_pair(dilation))} groups={groups} at "
                                 f"{where} (reidc has depthwise convs, groups = channels, and plain ones)")
    if isinstance(padding, str):
        raise UnsupportedOpError(f"unsupported op conv2d with padding={padding!r} at {where}")
    a = {"weight": _np(weight), "stride": _pair(stride), "padding": _pair(padding)}
    if bias is not None:
        a["bias"] = _np(bias)
    return a


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, (SwitchableBN, BinaryConv2d) + _REID_LEAVES) or super().is_leaf_module(m, qualname)


def capture_module(model: nn.Module, input_shape: tuple[int, int, int], name: str = "model") -> Graph:
    """Trace `model(x, modality)` (eval mode) into IR. input_shape is (C, H, W)."""
    model = model.eval()
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # fx raises many kinds of errors for untraceable code
        raise CaptureError(f"cannot trace {type(model).__name__}: {e}") from None
    b = _Builder(name)
    env: dict[str, str] = {}
    mods = dict(model.named_modules())
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for i, p in enumerate(placeholders):
        if i == 0:
            env[p.name] = b.add("x", Op.INPUT, [], {"name": "x"}, shape=("N",) + tuple(input_shape))
        elif i == 1:
            env[p.name] = b.add("modality", Op.INPUT, [], {"name": "modality"}, shape=("N",), dtype="int32")
        else:
            raise CaptureError(f"model takes an unexpected input {p.name!r}")
    for n in graph.nodes:
        if n.op == "placeholder":
            continue
        if n.op == "output":
            b.g.outputs = [env[n.args[0].name]]
            continue
        args = [env.get(a.name) if isinstance(a, fx.Node) else a for a in n.args]
        where = n.target if n.op == "call_module" else n.name
        if n.op == "call_module":
            m = mods[n.target]
            x = args[0]
            if isinstance(m, BinaryConv2d):  # sign + conv with +-alpha weights: found again by pattern
                s_id = b.add(f"{n.target}.sign", Op.SIGN, [x], {"site": n.target}, source=n.target)
                env[n.name] = b.add(n.target, Op.CONV2D, [s_id], _conv_attrs(
                    m.binary_weight(), None, m.stride, m.padding, m.dilation, m.groups, n.target), n.target)
            elif isinstance(m, nn.Conv2d):
                env[n.name] = b.add(n.target, Op.DEPTHWISE_CONV2D if _is_depthwise(m.weight, m.groups) else Op.CONV2D,
                                    [x], _conv_attrs(m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups,
                                                     n.target), n.target)
            elif isinstance(m, nn.InstanceNorm2d):
                if m.track_running_stats or not m.affine:
                    raise UnsupportedOpError(f"unsupported InstanceNorm2d with running statistics or without affine "
                                             f"at {n.target}")
                env[n.name] = b.add(n.target, Op.INSTANCE_NORM, [x], {"scale": _np(m.weight), "bias": _np(m.bias),
                                                                      "eps": float(m.eps)}, n.target)
            elif isinstance(m, SwitchableBN):
                if m.split:
                    params = {Modality.VISIBLE: _bn_params(m.visible_bn), Modality.INFRARED: _bn_params(m.thermal_bn)}
                    env[n.name] = b.add(n.target, Op.BATCH_NORM, [x, args[1]],
                                        {"eps": m.visible_bn.eps, "params": params}, n.target, Placement.SPLIT)
                else:
                    env[n.name] = b.add(n.target, Op.BATCH_NORM, [x], {
                        "eps": m.sharable_bn.eps, "params": {Placement.SHARED: _bn_params(m.sharable_bn)}},
                        n.target, Placement.SHARED)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                env[n.name] = b.add(n.target, Op.BATCH_NORM, [x], {"eps": m.eps, "params": {
                    Placement.SHARED: _bn_params(m)}}, n.target, Placement.SHARED)
            elif isinstance(m, nn.ReLU):
                env[n.name] = b.add(n.target, Op.RELU, [x], source=n.target)
            elif isinstance(m, nn.PReLU):
                env[n.name] = b.add(n.target, Op.PRELU, [x], {"slope": _slope(m.weight, b.g[x].shape[1])}, n.target)
            elif isinstance(m, nn.AvgPool2d):
                if _pair(m.padding) != (0, 0) or m.ceil_mode:
                    raise UnsupportedOpError(f"unsupported op AvgPool2d with padding/ceil_mode at {n.target}")
                env[n.name] = b.add(n.target, Op.AVGPOOL2D, [x], {"kernel": _pair(m.kernel_size),
                                    "stride": _pair(m.stride or m.kernel_size)}, n.target)
            elif isinstance(m, nn.MaxPool2d):
                if _pair(m.dilation) != (1, 1):
                    raise UnsupportedOpError(f"unsupported op max_pool2d with dilation at {n.target}")
                env[n.name] = b.add(n.target, Op.MAXPOOL2D, [x], _maxpool_attrs(
                    m.kernel_size, m.stride, m.padding, m.ceil_mode), n.target)
            elif isinstance(m, nn.AdaptiveAvgPool2d) and _pair(m.output_size) == (1, 1):
                env[n.name] = b.add(n.target, Op.GLOBAL_AVGPOOL, [x], source=n.target)
            elif isinstance(m, nn.AdaptiveMaxPool2d) and _pair(m.output_size) == (1, 1):
                env[n.name] = b.add(n.target, Op.GLOBAL_MAXPOOL, [x], source=n.target)
            elif isinstance(m, nn.Identity):
                env[n.name] = x
            elif isinstance(m, _REID_LEAVES):
                env[n.name] = _reid_layer(b, m, x, n.target)
            elif isinstance(m, nn.Linear):
                a = {"weight": _np(m.weight)}
                if m.bias is not None:
                    a["bias"] = _np(m.bias)
                env[n.name] = b.add(n.target, Op.DENSE, [x], a, n.target)
            else:
                raise UnsupportedOpError(f"unsupported op {type(m).__name__} at module {n.target}")
        elif n.op == "call_function" and n.target in (operator.add, torch.add):
            env[n.name] = b.add(n.name, Op.ADD, args[:2])
        elif n.op == "call_function" and n.target in (binarize, torch.sign):
            env[n.name] = b.add(n.name, Op.SIGN, [args[0]], {"site": n.name})
        elif n.op == "call_function" and n.target in (torch.relu, torch.nn.functional.relu):
            env[n.name] = b.add(n.name, Op.RELU, [args[0]])
        elif (n.op == "call_function" and n.target is torch.flatten) or (n.op == "call_method" and n.target == "flatten"):
            env[n.name] = _flatten(b, args[0], where)
        else:
            raise UnsupportedOpError(f"unsupported op {n.target} ({n.op}) at {where}")
    return verify(b.g)


def _maxpool_attrs(kernel, stride, padding, ceil_mode) -> dict:
    a = {"kernel": _pair(kernel), "stride": _pair(stride or kernel), "padding": _pair(padding)}
    return {**a, "ceil_mode": True} if ceil_mode else a


def _shared_bn(b: _Builder, x: str, bn, where: str) -> str:
    return b.add(where, Op.BATCH_NORM, [x], {"eps": bn.eps, "params": {Placement.SHARED: _bn_params(bn)}},
                 where, Placement.SHARED)


def _reid_layer(b: _Builder, m: nn.Module, x: str, where: str) -> str:
    """The IR of one of frontend/reid_layers.py's modules."""
    if isinstance(m, PixelNorm):
        std = m.std.reshape(-1).double()
        scale, bias = (1.0 / std), (-m.mean.reshape(-1).double() / std)
        return b.add(where, Op.AFFINE, [x], {"scale": _np(scale), "bias": _np(bias)}, where)
    if isinstance(m, IBN):
        # BN on channels half.. (identity statistics on the IN half), then IN on channels ..half:
        # the BN then folds into the conv before it; the IN's statistics are computed at run time
        ident = (np.ones(m.half, np.float32), np.zeros(m.half, np.float32), np.zeros(m.half, np.float32),
                 np.full(m.half, 1.0 - m.BN.eps, np.float32))
        params = tuple(np.concatenate([i, p]) for i, p in zip(ident, _bn_params(m.BN)))
        if m.IN.eps != m.BN.eps or m.IN.track_running_stats or not m.IN.affine:
            raise UnsupportedOpError(f"unsupported IBN at {where}: InstanceNorm with running statistics, no affine, "
                                     "or an eps unlike its BN's")
        y = b.add(f"{where}.BN", Op.BATCH_NORM, [x], {"eps": m.BN.eps, "params": {Placement.SHARED: params}},
                  f"{where}.BN", Placement.SHARED)
        return b.add(f"{where}.IN", Op.INSTANCE_NORM, [y], {"scale": _np(m.IN.weight), "bias": _np(m.IN.bias),
                                                            "eps": float(m.IN.eps)}, f"{where}.IN")
    if isinstance(m, SELayer):
        fc1, fc2 = m.fc[0], m.fc[2]
        if fc1.bias is not None or fc2.bias is not None:
            raise UnsupportedOpError(f"unsupported SE layer with biased fc at {where}")
        g = b.add(f"{where}.avg_pool", Op.GLOBAL_AVGPOOL, [x], source=where)
        g = b.add(f"{where}.fc.0", Op.DENSE, [g], {"weight": _np(fc1.weight)}, f"{where}.fc.0")
        g = b.add(f"{where}.fc.1", Op.RELU, [g], source=where)
        g = b.add(f"{where}.fc.2", Op.DENSE, [g], {"weight": _np(fc2.weight)}, f"{where}.fc.2")
        g = b.add(f"{where}.fc.3", Op.SIGMOID, [g], source=where)
        return b.add(where, Op.SCALE_CHANNELS, [x, g], source=where)
    if isinstance(m, ChannelGate):
        fc1, fc2 = m.fc1, m.fc2
        g = b.add(f"{where}.global_avgpool", Op.GLOBAL_AVGPOOL, [x], source=where)
        for name, fc, act in (("fc1", fc1, Op.RELU), ("fc2", fc2, Op.SIGMOID)):
            a = {"weight": _np(fc.weight).reshape(fc.out_channels, fc.in_channels)}
            if fc.bias is not None:
                a["bias"] = _np(fc.bias)
            g = b.add(f"{where}.{name}", Op.DENSE, [g], a, f"{where}.{name}")
            g = b.add(f"{where}.{name}.act", act, [g], source=where)
        return b.add(where, Op.SCALE_CHANNELS, [x, g], source=where)
    if isinstance(m, NonLocal):
        if m.inter_channels != 1:
            raise UnsupportedOpError(f"unsupported non-local block with {m.inter_channels} inter channels at {where} "
                                     "(fast-reid's has one)")
        conv = lambda name, layer, src: b.add(f"{where}.{name}", Op.CONV2D, [src], _conv_attrs(  # noqa: E731
            layer.weight, layer.bias, 1, 0, 1, 1, f"{where}.{name}"), f"{where}.{name}")
        theta, phi, g = (conv(k, getattr(m, k), x) for k in ("theta", "phi", "g"))
        s = b.add(f"{where}.f_g", Op.GLOBAL_AVGPOOL, [b.add(f"{where}.phi_g", Op.MULTIPLY, [phi, g], source=where)],
                  source=where)   # mean_j(phi_j g_j): theta^T phi g / HW, one inter channel
        y = b.add(f"{where}.y", Op.SCALE_CHANNELS, [theta, s], source=where)
        w = _shared_bn(b, conv("W.0", m.W[0], y), m.W[1], f"{where}.W.1")
        return b.add(where, Op.ADD, [w, x], source=where)
    if isinstance(m, GeneralizedMeanPooling):
        p = float(m.p.detach().reshape(-1)[0]) if isinstance(m.p, torch.Tensor) else float(m.p)
        return b.add(where, Op.GEM_POOL, [x], {"p": p, "eps": float(m.eps)}, where)
    if isinstance(m, AdaptiveAvgMaxPool):
        avg = b.add(f"{where}.avg", Op.GLOBAL_AVGPOOL, [x], source=where)
        return b.add(where, Op.ADD, [avg, b.add(f"{where}.max", Op.GLOBAL_MAXPOOL, [x], source=where)], source=where)
    if isinstance(m, EmbeddingHead):  # pooled (N, C): the 1x1 embedding conv is a dense, the neck a BN
        y = _pooled(b, m.pool_layer, x, f"{where}.pool_layer")
        for k, layer in enumerate(m.bottleneck):
            name = f"{where}.bottleneck.{k}"
            if isinstance(layer, nn.Conv2d):
                a = {"weight": _np(layer.weight).reshape(layer.out_channels, layer.in_channels)}
                if layer.bias is not None:
                    a["bias"] = _np(layer.bias)
                y = b.add(name, Op.DENSE, [y], a, name)
            else:
                y = _shared_bn(b, y, layer, name)
        return y
    raise UnsupportedOpError(f"unsupported op {type(m).__name__} at module {where}")


def _pooled(b: _Builder, pool: nn.Module, x: str, where: str) -> str:
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        return b.add(where, Op.GLOBAL_AVGPOOL, [x], source=where)
    if isinstance(pool, nn.AdaptiveMaxPool2d):
        return b.add(where, Op.GLOBAL_MAXPOOL, [x], source=where)
    return _reid_layer(b, pool, x, where)


def _slope(w: torch.Tensor, channels: int) -> np.ndarray:
    w = _np(w).reshape(-1)
    return np.full(channels, w[0], np.float32) if w.size == 1 else w


def _flatten(b: _Builder, x: str, where: str) -> str:
    """global_avgpool already yields (N, C): flattening it is the identity; nothing else is supported."""
    if len(b.g[x].shape) == 2:
        return x
    raise UnsupportedOpError(f"unsupported op flatten of a {len(b.g[x].shape)}-D tensor at {where}")


# ---------------------------------------------------------------------------------------------
# torch.export programs (.pt2), ATen level

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
             _aten.relu6.default, _aten.dropout.default, _aten.sigmoid.default, _aten.linalg_vector_norm.default,
             _aten.expand_as.default, _aten.div.Tensor)


def _head_op(b: _Builder, n: fx.Node, t, a, where: str, X, pending: dict) -> str | None:
    """The ATen ops a ReID head uses beyond the backbone's: the IR node id, or None where the
    op leaves a pending value (an L2 norm on its way to F.normalize's division)."""
    if t == _aten.dropout.default:
        if len(a) > 2 and a[2]:
            raise UnsupportedOpError(f"unsupported op dropout in training mode at {where} (export the model in eval())")
        return X(a[0])
    if t == _aten.sigmoid.default:
        return b.add(where, Op.SIGMOID, [X(a[0])], source=where)
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
    b = _Builder(name)
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
            env[n.name] = b.add(where, Op.PRELU, [X(a[0])], {"slope": _slope(T(a[1]), b.g[X(a[0])].shape[1])}, where)
        elif t == _aten.avg_pool2d.default:
            k = _pair(a[1]); s = _pair(a[2]) if len(a) > 2 and a[2] else k
            if (len(a) > 3 and _pair(a[3]) != (0, 0)) or (len(a) > 4 and a[4]):
                raise UnsupportedOpError(f"unsupported op avg_pool2d with padding/ceil_mode at {where}")
            env[n.name] = b.add(where, Op.AVGPOOL2D, [X(a[0])], {"kernel": k, "stride": s}, where)
        elif t in (_aten.conv2d.default, _aten.convolution.default):
            if t == _aten.convolution.default and a[6]:
                raise UnsupportedOpError(f"unsupported op transposed convolution at {where}")
            stride, pad, dil = (a[3:6] if len(a) > 5 else (a[3] if len(a) > 3 else 1, a[4] if len(a) > 4 else 0, 1))
            groups = a[8] if t == _aten.convolution.default else (a[6] if len(a) > 6 else 1)
            env[n.name] = b.add(where, Op.DEPTHWISE_CONV2D if _is_depthwise(T(a[1]), groups) else Op.CONV2D,
                                [X(a[0])], _conv_attrs(T(a[1]), T(a[2]) if len(a) > 2 else None, stride, pad, dil,
                                                       groups, where), where)
        elif t in (_aten._native_batch_norm_legit_no_training.default, _aten.batch_norm.default):
            w, bias, mean, var = (T(v) for v in a[1:5])
            eps = a[-1] if t == _aten._native_batch_norm_legit_no_training.default else a[7]
            c = mean.shape[0]
            params = tuple(_np(v) for v in (w if w is not None else torch.ones(c),
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
            k = _pair(a[1]); s = _pair(a[2]) if len(a) > 2 and a[2] else k
            p = _pair(a[3]) if len(a) > 3 else (0, 0)
            if len(a) > 4 and _pair(a[4]) != (1, 1):
                raise UnsupportedOpError(f"unsupported op max_pool2d with dilation at {where}")
            env[n.name] = b.add(where, Op.MAXPOOL2D, [X(a[0])], _maxpool_attrs(k, s, p, len(a) > 5 and a[5]), where)
        elif t in (_aten.adaptive_max_pool2d.default,) and _pair(a[1]) == (1, 1):
            env[n.name] = b.add(where, Op.GLOBAL_MAXPOOL, [X(a[0])], source=where)
        elif (t == _aten.adaptive_avg_pool2d.default and _pair(a[1]) == (1, 1)) or (
                t == _aten.mean.dim and sorted(d % 4 for d in a[1]) == [2, 3]):
            env[n.name] = b.add(where, Op.GLOBAL_AVGPOOL, [X(a[0])], source=where)
        elif t in (_aten.flatten.using_ints, _aten.view.default, _aten.reshape.default, _aten._unsafe_view.default):
            env[n.name] = _flatten(b, X(a[0]), where)
        elif t == _aten.linear.default:
            attrs = {"weight": _np(T(a[1]))}
            if len(a) > 2 and a[2] is not None:
                attrs["bias"] = _np(T(a[2]))
            env[n.name] = b.add(where, Op.DENSE, [X(a[0])], attrs, where)
        else:
            raise UnsupportedOpError(f"unsupported op {t} at {where}")
    return verify(b.g)
