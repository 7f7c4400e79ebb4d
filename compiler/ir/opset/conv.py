"""Float convolution and the fully connected layer."""
from __future__ import annotations

import numpy as np

from ..spec import Attr, Cost, OpSpec, conv_out, declare
from . import refmath


# a Winograd conv's `algorithm` -> m, the output tile's side of F(m x m, 3 x 3)
WINOGRAD_TILES = {"winograd_f2": 2, "winograd_f4": 4}


def _spatial(shape) -> int:
    return int(np.prod(shape[2:])) if len(shape) > 2 else 1


def _check_conv(n, ins, modal):
    x, w, pad = ins[0].shape, n.attrs["weight"], n.attrs["padding"]
    per_mod = w.ndim == 5
    if per_mod != modal:
        return "per-modality weights need the modality input, and only they do"
    if per_mod and w.shape[0] != 2:
        return f"per-modality weight must stack 2 modalities, has {w.shape[0]}"
    if w.ndim not in (4, 5):
        return f"weight must be (O, I, kh, kw), is {w.shape}"
    o, i = w.shape[-4:-2]
    if i != x[1]:
        return f"weight expects {i} input channels, input has {x[1]}"
    b = n.attrs.get("bias")
    if b is not None and b.shape != w.shape[:-4] + (o,):
        return f"bias shape {b.shape} does not fit {o} channels"
    pv = n.attrs.get("pad_value")
    if pv is not None and pv.shape != (i,):
        return f"pad_value shape {pv.shape} does not fit {i} input channels"
    algo = n.attrs.get("algorithm", "direct")
    if algo not in ("direct",) + tuple(WINOGRAD_TILES):
        return f"algorithm {algo!r}: expected direct, " + " or ".join(WINOGRAD_TILES)
    if algo != "direct" and (w.ndim != 4 or tuple(w.shape[2:]) != (3, 3) or tuple(n.attrs["stride"]) != (1, 1)
                                  or tuple(pad) != (1, 1) or pv is not None):
        return f"{algo} needs one 3x3 weight set, stride 1, padding 1 and a zero border"
    return None


def _conv_cost(n) -> Cost:
    count = int(np.prod(n.attrs["weight"].shape[-4:]))
    m = WINOGRAD_TILES.get(n.attrs.get("algorithm"))
    stored = count // 9 * (m + 2) ** 2 if m else count   # Winograd F(m x m) keeps G w G^T: (m + 2)^2 per 3x3
    return Cost(float_macs=count * _spatial(n.shape), fp32_weight_bytes=4 * count, stored_weight_bytes=4 * stored)


def _conv_ref(values, n):
    x, w, b = np.asarray(values[0], np.float64), np.asarray(n.attrs["weight"], np.float64), n.attrs.get("bias")
    pad, pv = n.attrs["padding"], n.attrs.get("pad_value")
    if pv is not None:   # pad here with each channel's value, then convolve without padding
        ph, pw = pad
        v = np.broadcast_to(np.asarray(pv, np.float64)[None, :, None, None],
                            x.shape[:2] + (x.shape[2] + 2 * ph, x.shape[3] + 2 * pw)).copy()
        v[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = x
        x, pad = v, (0, 0)

    def one(k=None):
        y = refmath.conv2d(x, w if k is None else w[k], n.attrs["stride"], pad)
        if b is not None:
            y = y + np.asarray(b if k is None else b[k], np.float64)[None, :, None, None]
        return y
    y = refmath.per_sample([one(0), one(1)], values[1]) if w.ndim == 5 else one()
    return y.astype(np.float32)


CONV2D = declare(OpSpec(
    "conv2d", "2-D cross-correlation, NCHW. Per-modality weights (2, O, I, kh, kw) and bias (2, O) "
              "take the modality vector as a second input and pick per sample.",
    _conv_ref, modal=True,
    attrs={"weight": Attr("array", "(O, I, kh, kw), or (2, O, I, kh, kw) per modality"),
           "bias": Attr("array", "(O,) or (2, O)", required=False),
           "stride": Attr("pair", "(sh, sw)"), "padding": Attr("pair", "(ph, pw), zeros unless pad_value"),
           "pad_value": Attr("array", "(I,) the border's value per input channel (an input normalisation "
                                      "folded into the conv), default zeros", required=False),
           "algorithm": Attr("str", "direct (default), winograd_f2 or winograd_f4: how the kernel computes it "
                                    "(F(2x2, 3x3) or F(4x4, 3x3) Winograd; compiler/passes/choose_winograd.py), the "
                                    "same maths", required=False)},
    shape=lambda ins, a: conv_out(ins[0], a["weight"].shape, a["stride"], a["padding"]),
    check=_check_conv, cost=_conv_cost))


def _check_dense(n, ins, modal):
    x, w, b = ins[0].shape, n.attrs["weight"], n.attrs.get("bias")
    if len(x) != 2 or w.ndim != 2 or w.shape[1] != x[1]:
        return f"dense {w.shape} does not fit input {x}"
    if b is not None and b.shape != (w.shape[0],):
        return f"bias shape {b.shape} does not fit {w.shape[0]} outputs"
    return None


def _dense_cost(n) -> Cost:
    count = int(np.prod(n.attrs["weight"].shape))
    return Cost(float_macs=count, fp32_weight_bytes=4 * count, stored_weight_bytes=4 * count)


def _dense_ref(values, n):
    y = np.asarray(values[0], np.float64) @ np.asarray(n.attrs["weight"], np.float64).T
    b = n.attrs.get("bias")
    return (y if b is None else y + np.asarray(b, np.float64)).astype(np.float32)


DENSE = declare(OpSpec(
    "dense", "Fully connected: (N, I) -> (N, O), y = x W^T + b.", _dense_ref,
    attrs={"weight": Attr("array", "(O, I)"), "bias": Attr("array", "(O,)", required=False)},
    shape=lambda ins, a: (ins[0][0], a["weight"].shape[0]), check=_check_dense, cost=_dense_cost))


def _check_depthwise(n, ins, modal):
    x, w, b = ins[0].shape, n.attrs["weight"], n.attrs.get("bias")
    if len(x) != 4 or w.ndim != 4 or w.shape[:2] != (x[1], 1):
        return f"depthwise weight must be (C, 1, kh, kw) for C = {x[1] if len(x) == 4 else '?'} channels, is {w.shape}"
    if b is not None and b.shape != (x[1],):
        return f"bias shape {b.shape} does not fit {x[1]} channels"
    return None


def _depthwise_cost(n) -> Cost:
    count = int(np.prod(n.attrs["weight"].shape))
    return Cost(float_macs=int(np.prod(n.attrs["weight"].shape[2:])) * int(np.prod(n.shape[1:])),
                fp32_weight_bytes=4 * count, stored_weight_bytes=4 * count)


def _depthwise_ref(values, n):
    x, w = np.asarray(values[0], np.float64), np.asarray(n.attrs["weight"], np.float64)[:, 0]
    y = np.einsum("nchwij,cij->nchw", refmath.windows(x, w.shape[1:], n.attrs["stride"], n.attrs["padding"]), w)
    b = n.attrs.get("bias")
    return (y if b is None else y + np.asarray(b, np.float64)[None, :, None, None]).astype(np.float32)


DEPTHWISE_CONV2D = declare(OpSpec(
    "depthwise_conv2d", "Depthwise 2-D cross-correlation (PyTorch's groups = channels): output "
                        "channel c sees only input channel c.",
    _depthwise_ref,
    attrs={"weight": Attr("array", "(C, 1, kh, kw)"), "bias": Attr("array", "(C,)", required=False),
           "stride": Attr("pair", "(sh, sw)"), "padding": Attr("pair", "(ph, pw), zeros")},
    shape=lambda ins, a: conv_out(ins[0], a["weight"].shape, a["stride"], a["padding"]),
    check=_check_depthwise, cost=_depthwise_cost))


def _check_group(n, ins, modal):
    x, w, b, g = ins[0].shape, n.attrs["weight"], n.attrs.get("bias"), n.attrs["groups"]
    if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 2:
        return f"groups must be an integer >= 2, is {g!r}"
    if len(x) != 4 or w.ndim != 4:
        return f"grouped weight must be (O, I/groups, kh, kw) for a 4-D input, is {w.shape}"
    o, ig = w.shape[:2]
    if x[1] % g or o % g:
        return f"{g} groups must divide the {x[1]} input and the {o} output channels"
    if ig * g != x[1]:
        return f"weight expects {ig} x {g} groups = {ig * g} input channels, input has {x[1]}"
    if b is not None and b.shape != (o,):
        return f"bias shape {b.shape} does not fit {o} channels"
    return None


def _group_ref(values, n):
    x, w, g = np.asarray(values[0], np.float64), np.asarray(n.attrs["weight"], np.float64), int(n.attrs["groups"])
    o, ig, kh, kw = w.shape
    win = refmath.windows(x, (kh, kw), n.attrs["stride"], n.attrs["padding"])   # (N, C, OH, OW, kh, kw)
    win = win.reshape((win.shape[0], g, ig) + win.shape[2:])
    y = np.einsum("ngchwij,gocij->ngohw", win, w.reshape(g, o // g, ig, kh, kw), optimize=True)
    y = y.reshape((y.shape[0], o) + y.shape[3:])
    b = n.attrs.get("bias")
    return (y if b is None else y + np.asarray(b, np.float64)[None, :, None, None]).astype(np.float32)


GROUP_CONV2D = declare(OpSpec(
    "group_conv2d", "Grouped 2-D cross-correlation (PyTorch's 1 < groups, not depthwise): the "
                    "channels split into `groups` equal groups; output channel o sees only the input "
                    "channels of its group, o // (O / groups).",
    _group_ref,
    attrs={"weight": Attr("array", "(O, I/groups, kh, kw)"), "bias": Attr("array", "(O,)", required=False),
           "stride": Attr("pair", "(sh, sw)"), "padding": Attr("pair", "(ph, pw), zeros"),
           "groups": Attr("float", "the number of groups, an integer >= 2 dividing I and O")},
    shape=lambda ins, a: conv_out(ins[0], a["weight"].shape, a["stride"], a["padding"]),
    check=_check_group, cost=_conv_cost))
