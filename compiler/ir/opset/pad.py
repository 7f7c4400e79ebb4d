"""Spatial padding with a value per channel: what folding an input normalisation into the stem
conv leaves before it (compiler/passes/fold_input_norm.py), so the border the conv sees is
the value the normalisation maps to zero."""
from __future__ import annotations

import numpy as np

from ..spec import Attr, OpSpec, declare


def _check_pad(n, ins, modal):
    x = ins[0].shape
    if len(x) != 4:
        return f"expects (N, C, H, W), got {x}"
    if n.attrs["value"].shape != (x[1],):
        return f"value has shape {n.attrs['value'].shape}, expected ({x[1]},)"
    if min(n.attrs["padding"]) < 0:
        return f"padding must be >= 0, is {n.attrs['padding']}"
    return None


def _pad_ref(values, n):
    x, (ph, pw) = np.asarray(values[0], np.float32), n.attrs["padding"]
    v = np.asarray(n.attrs["value"], np.float32)[None, :, None, None]
    y = np.broadcast_to(v, x.shape[:2] + (x.shape[2] + 2 * ph, x.shape[3] + 2 * pw)).copy()
    y[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = x
    return y


PAD = declare(OpSpec(
    "pad", "x with ph rows above and below and pw columns left and right, filled with value[c].",
    _pad_ref, attrs={"padding": Attr("pair", "(ph, pw)"), "value": Attr("array", "(C,) the fill per channel")},
    shape=lambda ins, a: ins[0][:2] + (ins[0][2] + 2 * a["padding"][0], ins[0][3] + 2 * a["padding"][1]),
    check=_check_pad))
