"""Capture a PyTorch nn.Module into reidc's IR (torch.export programs: frontend/capture_pt2.py).

Modules are traced with torch.fx, keeping `SwitchableBN` as one leaf so each BN becomes one
IR `batch_norm` node tagged shared or split, and the ReID toolboxes' layers (reid_layers.py)
as leaves mapped onto IR ops. Anything outside the supported op set is an error naming the op
and its module path.
"""
from __future__ import annotations

import operator

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from reidc.compiler.base.errors import CaptureError, UnsupportedOpError
from reidc.compiler.ir import Graph, Modality, Op, Placement, verify

from .bire import BinaryConv2d, binarize
from .capture_common import (Builder, bn_params, conv_attrs, conv_op, flatten_features, maxpool_attrs, np_of,
                             pair, shared_bn, slope_of)
from .capture_pt2 import capture_exported, capture_program  # noqa: F401  (one import for both captures)
from .models import SwitchableBN
from .reid_layers import (IBN, AdaptiveAvgMaxPool, ChannelGate, EmbeddingHead, GeneralizedMeanPooling, NonLocal,
                          PixelNorm, SELayer)

#: modules traced as one unit and mapped onto IR ops by `_reid_layer`
_REID_LEAVES = (PixelNorm, IBN, SELayer, ChannelGate, NonLocal, GeneralizedMeanPooling, AdaptiveAvgMaxPool,
                EmbeddingHead)


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
    b = Builder(name)
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
                env[n.name] = b.add(n.target, Op.CONV2D, [s_id], conv_attrs(
                    m.binary_weight(), None, m.stride, m.padding, m.dilation, m.groups, n.target), n.target)
            elif isinstance(m, nn.Conv2d):
                env[n.name] = b.add(n.target, conv_op(m.weight, m.groups),
                                    [x], conv_attrs(m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups,
                                                     n.target), n.target)
            elif isinstance(m, nn.InstanceNorm2d):
                if m.track_running_stats or not m.affine:
                    raise UnsupportedOpError(f"unsupported InstanceNorm2d with running statistics or without affine "
                                             f"at {n.target}")
                env[n.name] = b.add(n.target, Op.INSTANCE_NORM, [x], {"scale": np_of(m.weight), "bias": np_of(m.bias),
                                                                      "eps": float(m.eps)}, n.target)
            elif isinstance(m, SwitchableBN):
                if m.split:
                    params = {Modality.VISIBLE: bn_params(m.visible_bn), Modality.INFRARED: bn_params(m.thermal_bn)}
                    env[n.name] = b.add(n.target, Op.BATCH_NORM, [x, args[1]],
                                        {"eps": m.visible_bn.eps, "params": params}, n.target, Placement.SPLIT)
                else:
                    env[n.name] = b.add(n.target, Op.BATCH_NORM, [x], {
                        "eps": m.sharable_bn.eps, "params": {Placement.SHARED: bn_params(m.sharable_bn)}},
                        n.target, Placement.SHARED)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                env[n.name] = b.add(n.target, Op.BATCH_NORM, [x], {"eps": m.eps, "params": {
                    Placement.SHARED: bn_params(m)}}, n.target, Placement.SHARED)
            elif isinstance(m, nn.ReLU):
                env[n.name] = b.add(n.target, Op.RELU, [x], source=n.target)
            elif isinstance(m, _ACTIVATIONS):
                env[n.name] = _activation(b, type(m), x, n.target, m)
            elif isinstance(m, nn.PReLU):
                env[n.name] = b.add(n.target, Op.PRELU, [x], {"slope": slope_of(m.weight, b.g[x].shape[1])}, n.target)
            elif isinstance(m, nn.AvgPool2d):
                if pair(m.padding) != (0, 0) or m.ceil_mode:
                    raise UnsupportedOpError(f"unsupported op AvgPool2d with padding/ceil_mode at {n.target}")
                env[n.name] = b.add(n.target, Op.AVGPOOL2D, [x], {"kernel": pair(m.kernel_size),
                                    "stride": pair(m.stride or m.kernel_size)}, n.target)
            elif isinstance(m, nn.MaxPool2d):
                if pair(m.dilation) != (1, 1):
                    raise UnsupportedOpError(f"unsupported op max_pool2d with dilation at {n.target}")
                env[n.name] = b.add(n.target, Op.MAXPOOL2D, [x], maxpool_attrs(
                    m.kernel_size, m.stride, m.padding, m.ceil_mode), n.target)
            elif isinstance(m, nn.AdaptiveAvgPool2d) and pair(m.output_size) == (1, 1):
                env[n.name] = b.add(n.target, Op.GLOBAL_AVGPOOL, [x], source=n.target)
            elif isinstance(m, nn.AdaptiveMaxPool2d) and pair(m.output_size) == (1, 1):
                env[n.name] = b.add(n.target, Op.GLOBAL_MAXPOOL, [x], source=n.target)
            elif isinstance(m, nn.Identity):
                env[n.name] = x
            elif isinstance(m, _REID_LEAVES):
                env[n.name] = _reid_layer(b, m, x, n.target)
            elif isinstance(m, nn.Linear):
                a = {"weight": np_of(m.weight)}
                if m.bias is not None:
                    a["bias"] = np_of(m.bias)
                env[n.name] = b.add(n.target, Op.DENSE, [x], a, n.target)
            else:
                raise UnsupportedOpError(f"unsupported op {type(m).__name__} at module {n.target}")
        elif n.op == "call_function" and n.target in (operator.add, torch.add):
            env[n.name] = b.add(n.name, Op.ADD, args[:2])
        elif n.op == "call_function" and n.target in (binarize, torch.sign):
            env[n.name] = b.add(n.name, Op.SIGN, [args[0]], {"site": n.name})
        elif n.op == "call_function" and n.target in (torch.relu, torch.nn.functional.relu):
            env[n.name] = b.add(n.name, Op.RELU, [args[0]])
        elif n.op == "call_function" and n.target in _FUNCTIONAL:
            env[n.name] = _activation(b, _FUNCTIONAL[n.target], args[0], n.name)
        elif (n.op == "call_function" and n.target is torch.flatten) or (n.op == "call_method" and n.target == "flatten"):
            env[n.name] = flatten_features(b, args[0], where)
        else:
            raise UnsupportedOpError(f"unsupported op {n.target} ({n.op}) at {where}")
    return verify(b.g)



#: activation modules and the functions that compute the same
_ACTIVATIONS = (nn.ReLU6, nn.Hardtanh, nn.Sigmoid, nn.Hardsigmoid, nn.Hardswish)
_FUNCTIONAL = {F.relu6: nn.ReLU6, torch.sigmoid: nn.Sigmoid, F.sigmoid: nn.Sigmoid,
               F.hardsigmoid: nn.Hardsigmoid, F.hardswish: nn.Hardswish}


def _activation(b: Builder, kind: type, x: str, where: str, m: nn.Module | None = None) -> str:
    """ReLU6 / hardtanh as a clamp, sigmoid, hard-sigmoid, and hard-swish as x * hard_sigmoid(x)."""
    if kind is nn.Sigmoid:
        return b.add(where, Op.SIGMOID, [x], source=where)
    if kind is nn.Hardsigmoid:
        return b.add(where, Op.HARD_SIGMOID, [x], source=where)
    if kind is nn.Hardswish:
        return b.add(where, Op.MULTIPLY, [x, b.add(f"{where}.gate", Op.HARD_SIGMOID, [x], source=where)], source=where)
    lo, hi = (0.0, 6.0) if kind is nn.ReLU6 else (-1.0, 1.0)
    if kind is nn.Hardtanh and m is not None:
        lo, hi = float(m.min_val), float(m.max_val)
    return b.add(where, Op.CLAMP, [x], {"min": lo, "max": hi}, where)


def _reid_layer(b: Builder, m: nn.Module, x: str, where: str) -> str:
    """The IR of one of frontend/reid_layers.py's modules."""
    if isinstance(m, PixelNorm):
        std = m.std.reshape(-1).double()
        scale, bias = (1.0 / std), (-m.mean.reshape(-1).double() / std)
        return b.add(where, Op.AFFINE, [x], {"scale": np_of(scale), "bias": np_of(bias)}, where)
    if isinstance(m, IBN):
        # BN on channels half.. (identity statistics on the IN half), then IN on channels ..half:
        # the BN then folds into the conv before it; the IN's statistics are computed at run time
        ident = (np.ones(m.half, np.float32), np.zeros(m.half, np.float32), np.zeros(m.half, np.float32),
                 np.full(m.half, 1.0 - m.BN.eps, np.float32))
        params = tuple(np.concatenate([i, p]) for i, p in zip(ident, bn_params(m.BN)))
        if m.IN.eps != m.BN.eps or m.IN.track_running_stats or not m.IN.affine:
            raise UnsupportedOpError(f"unsupported IBN at {where}: InstanceNorm with running statistics, no affine, "
                                     "or an eps unlike its BN's")
        y = b.add(f"{where}.BN", Op.BATCH_NORM, [x], {"eps": m.BN.eps, "params": {Placement.SHARED: params}},
                  f"{where}.BN", Placement.SHARED)
        return b.add(f"{where}.IN", Op.INSTANCE_NORM, [y], {"scale": np_of(m.IN.weight), "bias": np_of(m.IN.bias),
                                                            "eps": float(m.IN.eps)}, f"{where}.IN")
    if isinstance(m, SELayer):
        fc1, fc2 = m.fc[0], m.fc[2]
        if fc1.bias is not None or fc2.bias is not None:
            raise UnsupportedOpError(f"unsupported SE layer with biased fc at {where}")
        g = b.add(f"{where}.avg_pool", Op.GLOBAL_AVGPOOL, [x], source=where)
        g = b.add(f"{where}.fc.0", Op.DENSE, [g], {"weight": np_of(fc1.weight)}, f"{where}.fc.0")
        g = b.add(f"{where}.fc.1", Op.RELU, [g], source=where)
        g = b.add(f"{where}.fc.2", Op.DENSE, [g], {"weight": np_of(fc2.weight)}, f"{where}.fc.2")
        g = b.add(f"{where}.fc.3", Op.SIGMOID, [g], source=where)
        return b.add(where, Op.SCALE_CHANNELS, [x, g], source=where)
    if isinstance(m, ChannelGate):
        fc1, fc2 = m.fc1, m.fc2
        g = b.add(f"{where}.global_avgpool", Op.GLOBAL_AVGPOOL, [x], source=where)
        for name, fc, act in (("fc1", fc1, Op.RELU), ("fc2", fc2, Op.SIGMOID)):
            a = {"weight": np_of(fc.weight).reshape(fc.out_channels, fc.in_channels)}
            if fc.bias is not None:
                a["bias"] = np_of(fc.bias)
            g = b.add(f"{where}.{name}", Op.DENSE, [g], a, f"{where}.{name}")
            g = b.add(f"{where}.{name}.act", act, [g], source=where)
        return b.add(where, Op.SCALE_CHANNELS, [x, g], source=where)
    if isinstance(m, NonLocal):
        if m.inter_channels != 1:
            raise UnsupportedOpError(f"unsupported non-local block with {m.inter_channels} inter channels at {where} "
                                     "(fast-reid's has one)")
        conv = lambda name, layer, src: b.add(f"{where}.{name}", Op.CONV2D, [src], conv_attrs(  # noqa: E731
            layer.weight, layer.bias, 1, 0, 1, 1, f"{where}.{name}"), f"{where}.{name}")
        theta, phi, g = (conv(k, getattr(m, k), x) for k in ("theta", "phi", "g"))
        s = b.add(f"{where}.f_g", Op.GLOBAL_AVGPOOL, [b.add(f"{where}.phi_g", Op.MULTIPLY, [phi, g], source=where)],
                  source=where)   # mean_j(phi_j g_j): theta^T phi g / HW, one inter channel
        y = b.add(f"{where}.y", Op.SCALE_CHANNELS, [theta, s], source=where)
        w = shared_bn(b, conv("W.0", m.W[0], y), m.W[1], f"{where}.W.1")
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
                a = {"weight": np_of(layer.weight).reshape(layer.out_channels, layer.in_channels)}
                if layer.bias is not None:
                    a["bias"] = np_of(layer.bias)
                y = b.add(name, Op.DENSE, [y], a, name)
            else:
                y = shared_bn(b, y, layer, name)
        return y
    raise UnsupportedOpError(f"unsupported op {type(m).__name__} at module {where}")


def _pooled(b: Builder, pool: nn.Module, x: str, where: str) -> str:
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        return b.add(where, Op.GLOBAL_AVGPOOL, [x], source=where)
    if isinstance(pool, nn.AdaptiveMaxPool2d):
        return b.add(where, Op.GLOBAL_MAXPOOL, [x], source=where)
    return _reid_layer(b, pool, x, where)


