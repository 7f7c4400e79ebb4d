"""Output shapes of IR ops (batch dimension symbolic as "N"). Pure functions."""
from __future__ import annotations

from .ops import Op


def conv_out(x, weight_shape, stride, padding):
    o, _, kh, kw = weight_shape[-4:]
    return (x[0], o, (x[2] + 2 * padding[0] - kh) // stride[0] + 1, (x[3] + 2 * padding[1] - kw) // stride[1] + 1)


def infer(op: Op, ins: list[tuple], attrs: dict) -> tuple:
    x = ins[0]
    if op == Op.CONV2D:
        return conv_out(x, attrs["weight"].shape, attrs["stride"], attrs["padding"])
    if op == Op.BCONV2D:
        if len(x) == 2:  # binary dense
            return (x[0], attrs["signs"].shape[0])
        return conv_out(x, attrs["signs"].shape, attrs["stride"], attrs["padding"])
    if op == Op.AVGPOOL2D:
        k, s = attrs["kernel"], attrs["stride"]
        return x[:2] + tuple((x[2 + d] - k[d]) // s[d] + 1 for d in (0, 1))
    if op == Op.MAXPOOL2D:
        k, s, p = attrs["kernel"], attrs["stride"], attrs["padding"]
        return x[:2] + tuple((x[2 + d] + 2 * p[d] - k[d]) // s[d] + 1 for d in (0, 1))
    if op == Op.GLOBAL_AVGPOOL:
        return x[:2]
    if op == Op.DENSE:
        return (x[0], attrs["weight"].shape[0])
    return x
