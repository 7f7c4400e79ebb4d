"""The IR's text form reads back: dump -> parse -> dump is the identity, small constants keep
their exact values, and `ir_diff` finds what differs (the tool of the Before/Expected pass tests)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from reidc.compiler.ir import Graph, Node, Op, dump, verify
from reidc.compiler.ir.compare import assert_ir, ir_diff, parse_expected
from reidc.compiler.ir.dump import fmt_value
from reidc.compiler.ir.parse import ParseError, parse, parse_attrs
from reidc.frontend.capture import capture_module

SMALL = """
graph tiny {
  %x: float32[Nx2x4x4] = input() {name='x'}
  %modality: int32[N] = input() {name='modality'}
  %c: float32[Nx2x4x4] = conv2d(%x) {padding=(1, 1), stride=(1, 1), weight=<2x2x3x3 float32>}  # conv
  %bn: float32[Nx2x4x4] = batch_norm @split(%c, %modality) {eps=1e-05, params={visible: (<2 float32: 1 2>, <2 float32: 0 0.5>, <2 float32: 0 0>, <2 float32: 1 4>), infrared: (<2 float32: 1 1>, <2 float32: 0 0>, <2 float32: 0 1>, <2 float32: 1 1>)}}  # bn
  %r: float32[Nx2x4x4] = relu(%bn)
  return %r
}
"""


def test_text_round_trips_on_a_captured_network(small_r18):
    g = capture_module(small_r18["random:7"], (3, 64, 32))
    text = dump(g)
    back = verify(parse(text))
    assert dump(back) == text
    assert ir_diff(g, parse_expected(text)) is None


def test_small_constants_are_exact_and_large_ones_are_filled():
    g = verify(parse(SMALL))
    bn = g["bn"]
    assert bn.modality == "split" and bn.source == "bn" and bn.attrs["eps"] == 1e-5
    np.testing.assert_array_equal(bn.attrs["params"]["visible"][3], np.array([1, 4], np.float32))
    assert g["c"].attrs["weight"].shape == (2, 2, 3, 3) and g["c"].attrs["weight"].std() > 0.1 and (g["c"].attrs["weight"] > 0).all()
    assert ir_diff(parse(dump(g)), g, rtol=0) is None


def test_ir_diff_names_the_first_difference():
    g = parse(SMALL)
    other = g.copy()
    other.replace("r", other["r"].with_(op=Op.SIGN))
    assert ir_diff(other, g) == "%r (expected %r): op sign, expected relu"
    params = dict(g["bn"].attrs["params"])
    params["visible"] = params["visible"][:3] + (np.array([1, 5], np.float32),)
    other = g.copy()
    other.replace("bn", g["bn"].with_(attrs={**g["bn"].attrs, "params": params}))
    assert "%bn (expected %bn): params=" in ir_diff(other, g)
    renamed = parse(SMALL.replace("%c", "%conv_1"))
    assert ir_diff(renamed, parse_expected(SMALL)) is None   # ids may differ
    with pytest.raises(AssertionError, match="source 'conv', expected 'layer1.conv'"):
        assert_ir(g, SMALL.replace("# conv", "# layer1.conv"))


def test_unreached_nodes_are_a_difference():
    g = parse(SMALL)
    g.add("dead", Node(Op.RELU, ("x",), ("N", 2, 4, 4)))
    assert "not reached from the outputs: ['dead']" in ir_diff(g, parse_expected(SMALL))


def test_parse_errors_name_the_line():
    with pytest.raises(ParseError, match="line 3: not a node"):
        parse("graph g {\n  %x: float32[Nx3] = input() {name='x'}\n  nonsense\n}")
    with pytest.raises(ParseError, match="unknown input 'y'"):
        parse("graph g {\n  %r: float32[Nx3] = relu(%y)\n  return %r\n}")
    with pytest.raises(ParseError, match="no `graph NAME"):
        parse("")


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(st.sampled_from([np.float32, np.int8, np.int32, np.uint64]),
                  hnp.array_shapes(min_dims=1, max_dims=3, max_side=3),
                  elements={"allow_nan": False, "allow_infinity": False}))
def test_constants_round_trip_exactly(a):
    a = np.asarray(a)
    got = parse_attrs(f"v={fmt_value(a, inline=64)}", "n")["v"]
    assert got.dtype == a.dtype and got.shape == a.shape
    np.testing.assert_array_equal(got, a)


def test_sources_with_braces_and_hashes_round_trip():
    g = parse(SMALL)
    g.replace("r", g["r"].with_(source="blocks.0}  # odd {name}"))
    g.replace("c", g["c"].with_(source="stem{0}"))
    back = parse(dump(g))
    assert back["r"].source == "blocks.0}  # odd {name}" and back["c"].source == "stem{0}"
    assert ir_diff(back, g, rtol=0) is None
