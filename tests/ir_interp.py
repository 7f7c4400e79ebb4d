"""A reference interpreter for reidc's IR in PyTorch (tests only): lets every pass be checked
numerically against the original model without going through TVM."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from compiler.ir import Graph, Op


def _per(v, m, ndim):
    t = torch.from_numpy(np.array(v))
    if t.ndim == 2:  # per-modality table (2, C) -> per-sample (N, C)
        t = t[m.long()]
    else:
        t = t.unsqueeze(0)
    return t.reshape(t.shape + (1,) * (ndim - 2))


def run_ir(g: Graph, x: np.ndarray, modality: np.ndarray | None = None) -> np.ndarray:
    vals = {}
    m = torch.from_numpy(modality) if modality is not None else None
    for nid, n in g.items():
        ins = [vals[i] for i in n.inputs]
        if n.op == Op.INPUT:
            vals[nid] = torch.from_numpy(x) if n.attrs["name"] == "x" else m
        elif n.op == Op.CONV2D:
            w = torch.from_numpy(np.array(n.attrs["weight"]))
            b = n.attr("bias")
            kw = dict(stride=n.attrs["stride"], padding=n.attrs["padding"])
            if w.ndim == 5:
                y = torch.stack([F.conv2d(ins[0], w[k], None if b is None else torch.from_numpy(np.array(b[k])), **kw)
                                 for k in range(2)])
                y = torch.where(ins[1].view(1, -1, 1, 1, 1).bool(), y[1:2], y[0:1])[0]
            else:
                y = F.conv2d(ins[0], w, None if b is None else torch.from_numpy(np.array(b)), **kw)
            vals[nid] = y
        elif n.op == Op.BATCH_NORM:
            outs = {}
            for k, (ga, be, mu, var) in n.attrs["params"].items():
                outs[k] = F.batch_norm(ins[0], *(torch.from_numpy(np.array(a)) for a in (mu, var, ga, be)),
                                       training=False, eps=n.attrs["eps"])
            if n.modality == "split":
                sel = ins[1].view((-1,) + (1,) * (ins[0].ndim - 1)).bool()
                vals[nid] = torch.where(sel, outs["infrared"], outs["visible"])
            else:
                vals[nid] = outs["shared"]
        elif n.op == Op.AFFINE:
            mm = ins[1] if len(ins) > 1 else m
            vals[nid] = ins[0] * _per(n.attrs["scale"], mm, ins[0].ndim) + _per(n.attrs["bias"], mm, ins[0].ndim)
        elif n.op == Op.RELU:
            vals[nid] = torch.relu(ins[0])
        elif n.op == Op.ADD:
            vals[nid] = ins[0] + ins[1]
        elif n.op == Op.MAXPOOL2D:
            vals[nid] = F.max_pool2d(ins[0], n.attrs["kernel"], n.attrs["stride"], n.attrs["padding"])
        elif n.op == Op.GLOBAL_AVGPOOL:
            vals[nid] = ins[0].mean(dim=(2, 3))
        elif n.op == Op.DENSE:
            b = n.attr("bias")
            vals[nid] = F.linear(ins[0], torch.from_numpy(np.array(n.attrs["weight"])),
                                 None if b is None else torch.from_numpy(np.array(b)))
        elif n.op == Op.SIGN:
            vals[nid] = torch.where(ins[0] >= 0, 1.0, -1.0).to(ins[0].dtype)
        elif n.op == Op.PRELU:
            slope = torch.from_numpy(np.array(n.attrs["slope"])).view(1, -1, 1, 1)
            vals[nid] = torch.where(ins[0] >= 0, ins[0], ins[0] * slope)
        elif n.op == Op.AVGPOOL2D:
            vals[nid] = F.avg_pool2d(ins[0], n.attrs["kernel"], n.attrs["stride"])
        elif n.op == Op.BITPACK:  # bits are represented by the +-1 values they stand for
            mm = ins[1] if len(ins) > 1 else m
            nd = ins[0].ndim
            thr, flip = _per(n.attrs["threshold"], mm, nd).to(ins[0].dtype), _per(n.attrs["flip"], mm, nd).bool()
            neg = torch.where(flip, ins[0] > thr, ins[0] < thr)
            vals[nid] = torch.where(neg, -1.0, 1.0).to(torch.float64)
        elif n.op == Op.BCONV2D:
            w = torch.from_numpy(np.array(n.attrs["signs"], dtype=np.float64))
            x4 = ins[0].to(torch.float64)
            x4 = x4.reshape(x4.shape + (1, 1)) if x4.ndim == 2 else x4
            dot = F.conv2d(x4, w, stride=n.attrs["stride"], padding=n.attrs["padding"])
            dot = dot.reshape(dot.shape[:2]) if ins[0].ndim == 2 else dot
            mm = ins[1] if len(ins) > 1 else m
            if n.attr("accumulator"):
                vals[nid] = dot  # exact integers (float64)
                continue
            out = dot * _per(n.attrs["scale"], mm, dot.ndim).double() + _per(n.attrs["bias"], mm, dot.ndim).double()
            vals[nid] = out.to(torch.float32)
        else:
            raise NotImplementedError(n.op)
    return vals[g.outputs[0]].detach().numpy()
