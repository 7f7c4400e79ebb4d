"""What both captures share: the IR builder and the attribute helpers for convs, BNs and pools
(frontend/capture.py traces nn.Modules, frontend/capture_pt2.py reads torch.export programs)."""
from __future__ import annotations

import numpy as np
import torch

from reidc.compiler.base.errors import UnsupportedOpError
from reidc.compiler.ir import Graph, Node, Op, Placement
from reidc.compiler.ir.shapes import infer


def np_of(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32, copy=True)


def bn_params(bn) -> tuple:
    c = bn.num_features
    gamma = bn.weight if bn.weight is not None else torch.ones(c)
    beta = bn.bias if bn.bias is not None else torch.zeros(c)
    return tuple(np_of(t) for t in (gamma, beta, bn.running_mean, bn.running_var))


class Builder:
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


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def is_depthwise(weight, groups) -> bool:
    return groups > 1 and weight.shape[0] == groups and weight.shape[1] == 1


def conv_op(weight, groups) -> Op:
    """The IR op of a PyTorch conv: plain (groups 1), depthwise (groups = channels, one kernel
    per channel) or grouped (any other groups)."""
    return Op.CONV2D if groups == 1 else Op.DEPTHWISE_CONV2D if is_depthwise(weight, groups) else Op.GROUP_CONV2D


def conv_attrs(weight, bias, stride, padding, dilation, groups, where):
    """The attributes of `conv_op(weight, groups)`'s node."""
    if tuple(pair(dilation)) != (1, 1):
        raise UnsupportedOpError(f"unsupported op conv2d with dilation={tuple(pair(dilation))} groups={groups} at "
                                 f"{where} (reidc's convs, plain, depthwise and grouped, are undilated)")
    if isinstance(padding, str):
        raise UnsupportedOpError(f"unsupported op conv2d with padding={padding!r} at {where}")
    a = {"weight": np_of(weight), "stride": pair(stride), "padding": pair(padding)}
    if bias is not None:
        a["bias"] = np_of(bias)
    if conv_op(weight, groups) == Op.GROUP_CONV2D:
        a["groups"] = int(groups)
    return a



def maxpool_attrs(kernel, stride, padding, ceil_mode) -> dict:
    a = {"kernel": pair(kernel), "stride": pair(stride or kernel), "padding": pair(padding)}
    return {**a, "ceil_mode": True} if ceil_mode else a


def shared_bn(b: Builder, x: str, bn, where: str) -> str:
    return b.add(where, Op.BATCH_NORM, [x], {"eps": bn.eps, "params": {Placement.SHARED: bn_params(bn)}},
                 where, Placement.SHARED)



def slope_of(w: torch.Tensor, channels: int) -> np.ndarray:
    w = np_of(w).reshape(-1)
    return np.full(channels, w[0], np.float32) if w.size == 1 else w


def flatten_features(b: Builder, x: str, where: str) -> str:
    """global_avgpool already yields (N, C): flattening it is the identity; nothing else is supported."""
    if len(b.g[x].shape) == 2:
        return x
    raise UnsupportedOpError(f"unsupported op flatten of a {len(b.g[x].shape)}-D tensor at {where}")

