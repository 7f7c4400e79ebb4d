"""What an op is, declared once: `OpSpec`. The verifier, shape inference, the cost model and the
IR interpreter read the spec; the lowering to TVM is registered per op with `@lowers` in
compiler/lower/ops/. The specs themselves live in compiler/ir/opset/, one small file per
family of ops, and the `Op` enum is built from them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

F32, I32, BITS = "float32", "int32", "bits"  # BITS: a bit-packed tensor; its shape stays logical


@dataclass(frozen=True)
class Attr:
    """One attribute: its kind ("array", "pair" (two ints), "pairs", "float", "str", "bool",
    "params" (BN statistics per placement)), whether every node must carry it, and its meaning."""

    kind: str
    doc: str
    required: bool = True


@dataclass(frozen=True)
class Cost:
    """Per sample: multiply-accumulates on +-1 values, on floats and on int8, and the weight
    bytes as fp32 and as reidc stores them (binary weights packed, int8 weights a byte)."""

    binary_macs: int = 0
    float_macs: int = 0
    int8_macs: int = 0
    fp32_weight_bytes: int = 0
    stored_weight_bytes: int = 0


def _same_shape(ins: list[tuple], attrs: Mapping) -> tuple:
    return ins[0]


def _no_cost(node) -> Cost:
    return Cost()


@dataclass(frozen=True)
class OpSpec:
    """name: the op's name in the IR and its dumps. inputs: names of its data inputs. modal:
    whether per-modality constants (a leading axis of 2) may come with the modality vector as
    one more, last input. in_dtypes: allowed dtypes of the first input. out_dtype(attrs): the
    output dtype. shape(input shapes, attrs): the output shape (None: given by the node, as
    for graph inputs). check(node, input nodes, modal): an error message for a node whose
    attributes do not fit its inputs, else None. cost(node): a `Cost`. reference(values,
    node): the op's meaning on numpy arrays (values are the inputs' values, the modality
    codes last where modal), what the interpreter runs and the kernels are tested against."""

    name: str
    doc: str
    reference: Callable[[list[np.ndarray], Any], np.ndarray]
    inputs: tuple[str, ...] = ("x",)
    attrs: Mapping[str, Attr] = field(default_factory=dict)
    modal: bool = False
    in_dtypes: tuple[str, ...] = (F32,)
    out_dtype: Callable[[Mapping], str] = lambda attrs: F32
    shape: Callable[[list[tuple], Mapping], tuple] | None = _same_shape
    check: Callable[[Any, list, bool], str | None] | None = None
    cost: Callable[[Any], Cost] = _no_cost


#: every declared op, by name, in declaration order
SPECS: dict[str, OpSpec] = {}


def declare(spec: OpSpec) -> OpSpec:
    if spec.name in SPECS:
        raise ValueError(f"op {spec.name!r} declared twice")
    SPECS[spec.name] = spec
    return spec


def spec_of(op) -> OpSpec:
    try:
        return SPECS[str(op)]
    except KeyError:
        raise ValueError(f"unknown op {op!r}; the IR has {', '.join(SPECS)}") from None


# --- shape arithmetic shared by several ops ---------------------------------------------------
def window_out(size: int, kernel: int, stride: int, pad: int = 0) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def conv_out(x: tuple, weight_shape: tuple, stride, padding) -> tuple:
    o, _, kh, kw = weight_shape[-4:]
    return (x[0], o, window_out(x[2], kh, stride[0], padding[0]), window_out(x[3], kw, stride[1], padding[1]))


def per_channel_shape(channels: int, modal: bool) -> tuple:
    """The shape of a per-channel constant: (C,), or (2, C) per modality."""
    return (2, channels) if modal else (channels,)


def check_vectors(node, names, channels: int, modal: bool) -> str | None:
    want = per_channel_shape(channels, modal)
    for k in names:
        if node.attrs[k].shape != want:
            return f"{k} has shape {node.attrs[k].shape}, expected {want}"
    return None
