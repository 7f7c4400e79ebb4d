"""--precision int8: the quantization maths, the pass (the IR it produces, its numbers against
the fp32 graph and PyTorch, where it fires and where it does not), calibration, and compiled
networks verified by feature cosine against PyTorch fp32."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import reidc
from reidc.compiler.base.errors import InputError
from reidc.compiler.ir import Graph, Node, Op, RunMode, const, verify
from reidc.compiler.ir.interp import run, run_all
from reidc.compiler.passes.quant_math import ActivationRange, quantize_weight, shared_weight, summarise
from reidc.compiler.passes.quantize_int8 import calibration_sites, int8_blocker, quantize_int8

RNG = np.random.default_rng(7)


# --- the maths ------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.floats(1e-3, 1e3))
def test_weight_quantization_is_within_half_a_step(o, i, mag):
    w = np.random.default_rng(o * 10 + i).standard_normal((o, i, 3, 3)) * mag
    q, s = quantize_weight(w)
    assert q.dtype == np.int8 and np.abs(q).max() <= 127 and s.shape == (o,)
    assert np.all(np.abs(q * s[:, None, None, None] - w) <= s[:, None, None, None] / 2 * (1 + 1e-6))
    assert (np.abs(q).reshape(o, -1).max(1) == 127).all()   # each channel's largest weight is +-127


def test_split_bn_folds_share_int8_weights_with_signed_scales():
    w = RNG.standard_normal((4, 3, 3, 3))
    r = np.array([0.5, -2.0, 1.0, 3.0])                    # a modality-1 BN scale that flips channel 1
    q, s = shared_weight(np.stack([w, w * r[:, None, None, None]]))
    q0, s0 = quantize_weight(w)
    assert q.shape == (4, 3, 3, 3) and np.array_equal(q, q0)
    np.testing.assert_allclose(s, np.stack([s0, s0 * r]), rtol=1e-6)
    other = np.stack([w, RNG.standard_normal(w.shape)])
    assert shared_weight(other) is None                     # not proportional: two weight sets


def test_activation_range_picks_zero_point_and_step():
    pos = ActivationRange(0.0, (2.55, 5.1))
    assert pos.zero_point == 0 and np.allclose(pos.scales(), [0.01, 0.02])
    signed = summarise([np.linspace(-1.27, 1.27, 10001, dtype=np.float32)], -1.27)
    assert signed.zero_point == 128 and np.allclose(signed.scales(), [0.01], rtol=1e-2)  # uniform: (almost) no clipping


def test_mse_threshold_beats_the_max_and_a_percentile():
    """The chosen threshold's squared quantization error is no worse than taking the maximum
    (no clipping) or the 99.9th percentile (clipping the tail) on a long-tailed sample."""
    from reidc.compiler.passes.quant_math import mse_threshold
    v = np.random.default_rng(0).lognormal(0, 1, 50000).astype(np.float32)

    def err(t):
        step = t / 255
        return float(np.mean((v - np.clip(np.rint(v / step), 0, 255) * step) ** 2))
    t = mse_threshold(v, 255, signed=False)
    assert v.max() > t and err(t) <= err(float(v.max())) and err(t) <= err(float(np.percentile(v, 99.9))) * 1.0001
    assert summarise([v], 0.0).threshold == (t,)


# --- the pass -------------------------------------------------------------------------------
def _net(o2=32, modal=False):
    """x(3 ch) -> stem conv -> relu -> conv a (16) -> relu -> {conv b, conv c} -> add."""
    g = Graph("t")
    g.add("x", Node(Op.INPUT, (), ("N", 3, 8, 8), attrs={"name": "x"}))
    extra = ()
    if modal:
        g.add("modality", Node(Op.INPUT, (), ("N",), "int32", {"name": "modality"}))
        extra = ("modality",)

    def conv(nid, src, o, i, lead=()):
        w = RNG.standard_normal((o, i, 3, 3)).astype(np.float32) * 0.2
        if lead:   # a split BN folded into the weights: modality 1 = modality 0 times a factor per channel
            w = np.stack([w, w * RNG.uniform(-1.5, 1.5, o).astype(np.float32)[:, None, None, None]])
        b = RNG.standard_normal(lead + (o,)).astype(np.float32) * 0.1
        g.add(nid, Node(Op.CONV2D, (src,) + (extra if lead else ()), ("N", o, 8, 8),
                        attrs={"weight": const(w), "bias": const(b), "stride": (1, 1), "padding": (1, 1)},
                        source=nid, modality="split" if lead else "any"))
    conv("stem", "x", 16, 3)
    g.add("r0", Node(Op.RELU, ("stem",), ("N", 16, 8, 8)))
    conv("a", "r0", 16, 16, (2,) if modal else ())
    g.add("r1", Node(Op.RELU, ("a",), ("N", 16, 8, 8)))
    conv("b", "r1", o2, 16)
    conv("c", "r1", o2, 16)
    g.add("s", Node(Op.ADD, ("b", "c"), ("N", o2, 8, 8)))
    g.outputs = ["s"]
    return verify(g)


def _ranges(g, x, m=None):
    from reidc.compiler.calibration import calibrate
    return calibrate(g, calibration_sites(g), x, m)


def test_pass_quantizes_convs_shares_one_quantize_per_tensor_and_pads_the_stem():
    g = _net()
    x = RNG.standard_normal((6, 3, 8, 8)).astype(np.float32)
    q, facts = quantize_int8(g, _ranges(g, x))
    q = verify(q)
    assert q.count(Op.CONV2D_INT8) == 4 and q.count(Op.CONV2D) == 0 and q.count(Op.QUANTIZE) == 3 and facts == {}
    stem = next(node for _, node in q.items() if node.source == "stem")
    assert stem.attrs["weight"].shape == (16, 4, 3, 3) and not stem.attrs["weight"][:, 3].any()  # a zero 4th channel
    assert q[stem.inputs[0]].attrs["zero_point"] == 128                    # the image takes both signs
    qb, qc = (q[n] for n, node in q.items() if node.source in ("b", "c"))
    assert qb.inputs == qc.inputs and q[qb.inputs[0]].op == Op.QUANTIZE   # r1 quantized once, read twice
    assert q[qb.inputs[0]].attrs["zero_point"] == 0                       # after a ReLU
    assert qb.attrs["weight"].dtype == np.int8 and qb.attrs["input_scale"].shape == (1,)
    # numbers: the int8 graph's output against the fp32 graph's on other inputs of the same kind
    y = RNG.standard_normal((4, 3, 8, 8)).astype(np.float32)
    a, b = run(g, y), run(q, y)
    cos = (a * b).sum((1, 2, 3)) / np.linalg.norm(a.reshape(4, -1), axis=1) / np.linalg.norm(b.reshape(4, -1), axis=1)
    assert cos.min() > 0.99   # the compile budget


def test_pass_leaves_alone_what_the_kernel_cannot_take():
    g = _net(o2=24)                                  # 24 output channels: not a multiple of 16
    q, facts = quantize_int8(g, _ranges(g, RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)))
    assert [q[n].source for n, node in q.items() if node.op == Op.CONV2D_INT8] == ["stem", "a"]
    assert facts["fp32_convs"]["b"] == "24 output channels: the int8 kernel writes blocks of 16"
    assert int8_blocker(g, "b") and int8_blocker(g, "a") is None
    empty, none = quantize_int8(g, {})                   # nothing calibrated: nothing changes
    assert empty.count(Op.CONV2D_INT8) == 0 and set(none["fp32_convs"]) == {"stem", "a", "b", "c"}


def test_pass_in_a_mixed_graph_scales_per_modality_and_shares_folded_weights():
    g = _net(modal=True)
    x = RNG.standard_normal((6, 3, 8, 8)).astype(np.float32)
    m = np.array([0, 1, 0, 1, 1, 0], np.int32)
    q = verify(quantize_int8(g, _ranges(g, x, m)).graph)
    qa = next(node for _, node in q.items() if node.source == "a")
    assert qa.op == Op.CONV2D_INT8 and qa.attrs["weight"].ndim == 4 and qa.attrs["weight_scale"].shape == (2, 16)
    assert qa.attrs["input_scale"].shape == (2,) and qa.inputs[-1] == "modality"
    a, b = run(g, x, m), run(q, x, m)
    assert np.abs(a - b).max() <= 0.05 * np.abs(a).max()


def test_a_residual_add_reads_the_uint8_copy_so_the_stream_is_stored_in_int8():
    """r = relu(conv a) feeds conv b (int8) and the add b + r: the add reads dequantize of r's
    shared quantize (same scale and zero point), so r's producer writes uint8 only."""
    g = Graph("t")
    g.add("x", Node(Op.INPUT, (), ("N", 16, 8, 8), attrs={"name": "x"}))
    w = lambda: const(RNG.standard_normal((16, 16, 3, 3)).astype(np.float32) * 0.2)
    g.add("a", Node(Op.CONV2D, ("x",), ("N", 16, 8, 8), attrs={"weight": w(), "stride": (1, 1), "padding": (1, 1)},
                    source="a"))
    g.add("r", Node(Op.RELU, ("a",), ("N", 16, 8, 8)))
    g.add("b", Node(Op.CONV2D, ("r",), ("N", 16, 8, 8), attrs={"weight": w(), "stride": (1, 1), "padding": (1, 1)},
                    source="b"))
    g.add("s", Node(Op.ADD, ("b", "r"), ("N", 16, 8, 8)))
    g.outputs = ["s"]
    g = verify(g)
    x = RNG.standard_normal((6, 16, 8, 8)).astype(np.float32)
    ranges = _ranges(g, x)
    peak = run_all(g, {"x": x})["r"].max()
    assert np.isclose(ranges["r"].peak[0], peak, rtol=1e-6)
    ranges["r"] = ActivationRange(0.0, (peak / 2,), (peak,))   # calibration clipped r's tail at half its peak
    q = verify(quantize_int8(g, ranges, fold_steps=False).graph)
    back = q["s"].inputs[1]
    assert q[back].op == Op.DEQUANTIZE and q[q[back].inputs[0]].op == Op.QUANTIZE
    assert q[back].attrs["scale"] is q[q[back].inputs[0]].attrs["scale"] and q[back].attrs["zero_point"] == 0
    folded = verify(quantize_int8(g, ranges).graph)   # conv a took r's step: its quantize's is 1
    assert np.array_equal(folded[back].attrs["scale"], q[back].attrs["scale"])
    assert folded[folded[back].inputs[0]].attrs["scale"].tolist() == [1.0]
    assert "r" not in q and [q[c].op for c in q.consumers("a")] == [Op.QUANTIZE]   # r: uint8 only, its
    # ReLU left to the quantize's clip (test_a_relu_read_only_by_a_zero_point_0_quantize_goes)
    # the residual's copy keeps its tail: r's step is its peak / 255, not the MSE-clipped one
    assert np.allclose(np.asarray(q[back].attrs["scale"]), peak / 255)
    kept = verify(quantize_int8(g, ranges, residual=False).graph)
    assert kept.count(Op.DEQUANTIZE) == 0 and "r" in kept["s"].inputs
    qk = next(c for c in kept.consumers("r") if kept[c].op == Op.QUANTIZE)   # no residual copy: clipped
    assert np.allclose(np.asarray(kept[qk].attrs["scale"]), peak / 2 / 255)
    y = RNG.standard_normal((4, 16, 8, 8)).astype(np.float32)
    a, b = run(g, y), run(q, y)
    cos = (a * b).sum((1, 2, 3)) / np.linalg.norm(a.reshape(4, -1), axis=1) / np.linalg.norm(b.reshape(4, -1), axis=1)
    assert cos.min() > 0.99


def test_a_relu_read_only_by_a_zero_point_0_quantize_goes():
    """quantize clips at its zero point, so with zero point 0 a ReLU before it changes nothing:
    the rule drops it (the conv epilogue it fuses into does one vector max fewer), not where the
    ReLU has another reader or the zero point is not 0."""
    g = Graph("t")
    g.add("x", Node(Op.INPUT, (), ("N", 16, 8, 8), attrs={"name": "x"}))
    w = lambda: const(RNG.standard_normal((16, 16, 3, 3)).astype(np.float32) * 0.2)
    for conv, src in (("a", "x"), ("b", "ra"), ("c", "rb"), ("d", "rc")):
        g.add(conv, Node(Op.CONV2D, (src,), ("N", 16, 8, 8),
                         attrs={"weight": w(), "stride": (1, 1), "padding": (1, 1)}, source=conv))
        g.add("r" + conv, Node(Op.RELU, (conv,), ("N", 16, 8, 8)))
    g.add("p", Node(Op.GLOBAL_AVGPOOL, ("rb",), ("N", 16)))   # rb has a float reader too
    g.outputs = ["rd", "p"]
    g = verify(g)
    x = RNG.standard_normal((6, 16, 8, 8)).astype(np.float32)
    ranges = _ranges(g, x)
    ranges["rc"] = ActivationRange(-1.0, ranges["rc"].threshold, ranges["rc"].peak)   # as if signed: zero point 128
    stats = Counter()
    q = verify(quantize_int8(g, ranges, stats).graph)
    # the IR: ra's quantize reads conv a itself, ra is gone; rb (pooled too) and rc (zero point 128) stay
    qa = next(c for c in q.consumers("a"))
    assert "ra" not in q and q[qa].op == Op.QUANTIZE and q[qa].attrs["zero_point"] == 0
    assert [q[q[c].inputs[0]].op for c in ("rb", "rc")] == [Op.CONV2D_INT8, Op.CONV2D_INT8]
    assert {q[c].op for c in q.consumers("rb")} == {Op.QUANTIZE, Op.GLOBAL_AVGPOOL}
    assert [q[c].attrs["zero_point"] for c in q.consumers("rc")] == [128]
    assert stats["relu_into_quantize_clip"] == 1
    assert stats["relu_into_quantize_clip:skipped:the ReLU's only reader"] == 1
    assert stats["relu_into_quantize_clip:skipped:zero point 0"] == 1
    # the numbers: the uint8 tensor is exactly the quantized ReLU
    y = RNG.standard_normal((4, 16, 8, 8)).astype(np.float32)
    got = run_all(q, {"x": y})
    scale = np.float32(1) / np.asarray(q[qa].attrs["scale"], np.float32)[0]
    want = np.clip(np.rint(np.maximum(got["a"], 0) * scale), 0, 255).astype(np.uint8)
    assert (got["a"] < 0).any() and np.array_equal(got[qa], want)


def test_a_quantize_step_goes_into_the_convs_and_dequantizes_that_feed_it():
    """y / s is what a conv computes with weight_scale / s and bias / s (and a residual
    dequantize with scale / s), so a quantize they alone feed multiplies by nothing: one vector
    multiply fewer in the epilogue. Not where the quantize reads a ReLU that stays (another
    reader), nor for a conv or dequantize no quantize follows (a graph output)."""
    g = Graph("t")
    g.add("x", Node(Op.INPUT, (), ("N", 16, 8, 8), attrs={"name": "x"}))
    w = lambda: const(RNG.standard_normal((16, 16, 3, 3)).astype(np.float32) * 0.2)
    conv = lambda nid, src: g.add(nid, Node(Op.CONV2D, (src,), ("N", 16, 8, 8), source=nid,
                                            attrs={"weight": w(), "bias": const(RNG.standard_normal(16).astype(
                                                np.float32)), "stride": (1, 1), "padding": (1, 1)}))
    unary = lambda nid, op, src: g.add(nid, Node(op, (src,), ("N", 16, 8, 8)))
    conv("a", "x"), unary("ra", Op.RELU, "a"), conv("b", "ra")
    g.add("s", Node(Op.ADD, ("b", "ra"), ("N", 16, 8, 8)))
    unary("rs", Op.RELU, "s"), conv("c", "rs"), unary("rc", Op.RELU, "c"), conv("d", "rc")
    g.add("t", Node(Op.ADD, ("d", "rs"), ("N", 16, 8, 8)))
    g.add("p", Node(Op.GLOBAL_AVGPOOL, ("rc",), ("N", 16)))   # rc keeps its ReLU: a float reader
    g.outputs = ["t", "p"]
    g = verify(g)
    x = RNG.standard_normal((6, 16, 8, 8)).astype(np.float32)
    ranges = _ranges(g, x)
    stats = Counter()
    q = verify(quantize_int8(g, ranges, stats).graph)
    plain = verify(quantize_int8(g, ranges, fold_steps=False).graph)
    # the IR: a's and s's quantizes have step 1, and what feeds them took the old step
    qa, qs = q.consumers("a")[0], q.consumers("s")[0]
    step_a, step_s = (plain[plain.consumers(k)[0]].attrs["scale"][0] for k in ("a", "s"))
    assert [q[k].attrs["scale"].tolist() for k in (qa, qs)] == [[1.0], [1.0]]
    np.testing.assert_allclose(q["a"].attrs["weight_scale"], plain["a"].attrs["weight_scale"] / step_a, rtol=1e-6)
    np.testing.assert_allclose(q["b"].attrs["bias"], plain["b"].attrs["bias"] / step_s, rtol=1e-6)
    deq = next(i for i in q["s"].inputs if q[i].op == Op.DEQUANTIZE)
    np.testing.assert_allclose(q[deq].attrs["scale"], plain[deq].attrs["scale"] / step_s, rtol=1e-6)
    for k in ("c", "d"):   # c feeds a kept ReLU, d a graph output: unchanged
        assert np.array_equal(q[k].attrs["weight_scale"], plain[k].attrs["weight_scale"])
    assert stats["quantize_step_into_conv"] == 2 and stats["quantize_step_into_dequantize"] == 1
    assert stats["quantize_step_taken"] == 2
    assert stats["quantize_step_into_conv:skipped:feeds a quantize whose per-tensor step folds"] == 2
    assert stats["quantize_step_taken:skipped:its producers took its per-tensor step"] == 2   # x's, rc's
    # the numbers: the uint8 tensors are the unfolded graph's up to float rounding (off by one at
    # a tie, rarely), and so are the outputs
    y = RNG.standard_normal((8, 16, 8, 8)).astype(np.float32)
    got, want = run_all(q, {"x": y}), run_all(plain, {"x": y})
    for k in (qa, qs):
        diff = np.abs(got[k].astype(np.int32) - want[k].astype(np.int32))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    for o in q.outputs:
        np.testing.assert_allclose(got[o], want[o], rtol=1e-2, atol=step_s)


def test_binary_convs_stay_binary_and_the_int8_shortcuts_join_them(tmp_path):
    """bire-resnet18 at int8: 16 binary convs stay 1-bit; the stem (its 3 image channels padded to
    4) and the 3 downsample convs go int8, whose 64-channel output blocks meet the binary convs'
    16-channel ones at the residual adds. A random-weight BNN at 64x32 is chaotic (an int8 step
    flips signs downstream: cosine ~0.96-0.98 here, 0.996 at 256x128), so this checks the numbers
    against PyTorch with a looser bound than the compile's budget and builds unverified."""
    from reidc.compiler.reference import torch_forward
    model = reidc.zoo_model("bire-resnet18", input_size=(64, 32))
    art = reidc.compile(model, output=tmp_path / "b", precision="int8", modes="visible", calibration_images=4,
                        verify=False)
    count = Counter(r["precision"] for r in art.manifest["precision"]["layers"])
    assert count == {"1-bit": 16, "int8": 4}
    from reidc.compiler.calibration import synthetic_images
    x = synthetic_images((64, 32), 4, False, seed=5)
    got, ref = art.run(x, "visible"), torch_forward(model.eval(), x, "visible")
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.9


# --- calibration inputs -----------------------------------------------------------------------
def test_calibration_images_come_from_the_synthetic_persons_or_a_folder(tmp_path):
    from PIL import Image
    from reidc.compiler.calibration import calibration_batch
    from reidc.frontend.arch import preprocess_for
    x, m = calibration_batch("synthetic", RunMode.MIXED, (3, 32, 16), None, 4)
    assert x.shape == (4, 3, 32, 16) and m.tolist() == [0, 0, 1, 1]
    for sub in ("visible", "infrared"):
        (tmp_path / sub).mkdir()
        for k in range(3):
            Image.fromarray(RNG.integers(0, 255, (40, 20, 3), dtype=np.uint8)).save(tmp_path / sub / f"{k}.png")
    x, m = calibration_batch(str(tmp_path), RunMode.MIXED, (3, 32, 16), preprocess_for((32, 16)), 4)
    assert x.shape == (4, 3, 32, 16) and m.tolist() == [0, 0, 1, 1]
    x, m = calibration_batch(str(tmp_path / "visible"), RunMode.VISIBLE, (3, 32, 16), preprocess_for((32, 16)), 2)
    assert x.shape == (2, 3, 32, 16) and m is None
    x, m = calibration_batch(str(tmp_path / "visible"), RunMode.MIXED, (3, 32, 16), preprocess_for((32, 16)), 4)
    assert m.tolist() == [0, 0, 1, 1]   # no subfolders: every image calibrates both modalities
    (tmp_path / "infrared").rename(tmp_path / "other")
    with pytest.raises(InputError, match="has no infrared/ subfolder"):
        calibration_batch(str(tmp_path), RunMode.MIXED, (3, 32, 16), preprocess_for((32, 16)), 2)
    with pytest.raises(InputError, match="expected 'synthetic' or a folder"):
        calibration_batch(str(tmp_path / "nope"), RunMode.VISIBLE, (3, 32, 16), preprocess_for((32, 16)), 2)


# --- compiled networks ------------------------------------------------------------------------
def test_int8_cmnas_compiles_verifies_by_cosine_and_states_each_layer(tmp_path):
    model = reidc.zoo_model("cmnas-resnet18", input_size=(64, 32))
    art = reidc.compile(model, output=tmp_path / "a", precision="int8", modes="visible,mixed", calibration_images=8)
    v = art.manifest["verification"]
    assert v["status"] == "passed" and v["precision"] == "int8"
    assert min(v["min_cosine"].values()) >= 0.99 and v["budget"] == {"min_feature_cosine": 0.99}
    p = art.manifest["precision"]
    assert p["real_valued"] == "int8" and "mean squared" in p["int8"]["activations"]
    from reidc.compiler.lower.build import int8_kernel
    from reidc.targets import get_target
    assert p["int8"]["kernel"] == int8_kernel(get_target(art.manifest["target"]["preset"]))   # what the host preset runs
    rows = {r["layer"]: r for r in p["layers"]}
    assert rows["conv1"]["precision"] == "int8" and len(rows) == 20
    assert all(r["precision"] == "int8" for r in rows.values())
    assert art.manifest["per_sample"]["float_macs"] == 0 and art.manifest["per_sample"]["int8_macs"] > 0
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 32), dtype=np.float32)
    assert art.run(x, "visible").shape == (2, 512)


def test_int8_options_are_checked(tmp_path):
    model = reidc.zoo_model("cmnas-resnet18", input_size=(64, 32))
    with pytest.raises(InputError, match="precision='int4'"):
        reidc.compile(model, output=tmp_path / "a", precision="int4")
    with pytest.raises(InputError, match="calibration_images=0"):
        reidc.compile(model, output=tmp_path / "a", precision="int8", calibration_images=0)
    with pytest.raises(InputError, match="expected 'synthetic' or a folder"):
        reidc.compile(model, output=tmp_path / "a", precision="int8", calibration=tmp_path / "missing")
    assert not (tmp_path / "a").exists()


def test_retrieval_check_ranks_the_test_protocol_with_both(tmp_path, monkeypatch):
    """--retrieval: the dataset's test protocol ranked with PyTorch fp32 and with the int8 build;
    the figures land in the manifest. A random network ranks near chance, where int8's noise
    moves a query or two of the 48 either way (2.08 points each), so the budget's decision is
    checked with budgets the figures cannot straddle: a wide one passes and records them, a
    negative one refuses the build, naming the setting and the protocol's resolution."""
    import reidc.compiler.verify_reduced as vr
    model = reidc.zoo_model("cmnas-resnet18", input_size=(64, 32))
    monkeypatch.setattr(vr, "RETRIEVAL_BUDGET", 100.0)
    art = reidc.compile(model, output=tmp_path / "a", precision="int8", modes="visible,infrared",
                        calibration_images=4, retrieval="synthetic:16")
    r = art.manifest["verification"]["retrieval"]
    assert r["budget_points"] == 100.0 and r["images"] == 144 and set(r["settings"]) == {"all-search", "indoor-search"}
    for row in r["settings"].values():
        assert set(row) == {"rank1", "mAP", "queries"} and row["queries"] == 48
        assert all(0 <= row[k][p] <= 100 for k in ("rank1", "mAP") for p in ("fp32", "int8"))
    monkeypatch.setattr(vr, "RETRIEVAL_BUDGET", -100.0)
    with pytest.raises(reidc.VerificationError, match=r"all-search rank1 falls -?[0-9.]+ points below PyTorch fp32's "
                                                      r".*one of its 48 queries moves rank-1 by 2.08 points"):
        reidc.compile(model, output=tmp_path / "c", precision="int8", modes="visible,infrared", calibration_images=4,
                      retrieval="synthetic:16")
    assert not (tmp_path / "c").exists()
    with pytest.raises(InputError, match="needs the visible and infrared entries"):
        reidc.compile(model, output=tmp_path / "b", precision="int8", modes="visible", calibration_images=4,
                      retrieval="synthetic:16")
    with pytest.raises(InputError, match="judges reduced precision"):
        reidc.compile(model, output=tmp_path / "b", retrieval="synthetic")
    assert not (tmp_path / "b").exists()


def test_auto_keeps_the_faster_verified_build(tmp_path):
    """--precision auto builds both, times both here and keeps the faster, saying why; for a
    target this machine cannot run it decides by the target's int8 dot product."""
    model = reidc.zoo_model("cmnas-resnet18", input_size=(64, 32))
    art = reidc.compile(model, output=tmp_path / "a", precision="auto", modes="visible", calibration_images=4)
    auto = art.manifest["precision"]["auto"]
    from reidc.targets import get_target
    bf16_unit = {"amx-bf16", "avx512bf16"} & set(get_target("host").cpu_features())
    assert set(auto["ms"]) == ({"int8", "bf16", "fp32"} if bf16_unit else {"int8", "fp32"})   # bf16 on its units only
    assert auto["chose"] == min(auto["ms"], key=auto["ms"].get)
    assert art.manifest["precision"]["real_valued"] == auto["chose"] and art.manifest["verification"]["status"] == "passed"
    from reidc.compiler.lower.build import int8_flavour
    blind = reidc.compile(model, output=tmp_path / "b", precision="auto", modes="visible", calibration_images=4,
                          verify=False)   # unverified builds are not timed: the target's ISA decides
    dot = int8_flavour(get_target("host")).order == "dot4"
    assert blind.manifest["precision"]["auto"]["chose"] == ("int8" if dot else "fp32")
    assert "not timed" in blind.manifest["precision"]["auto"]["why"]


@pytest.mark.parametrize("target, candidates, chosen", [
    ("sm86", ("int8", "bf16", "fp32"), "int8"),     # tensor cores for both
    ("sm75", ("int8", "fp32"), "int8"),             # Turing: s8 tensor cores, no bf16 ones
    ("x86-avx512-bf16", ("int8", "bf16", "fp32"), "int8"),   # vdpbf16ps; vpdpbusd for int8
    ("x86-avx512-vnni", ("int8", "fp32"), "int8"),
    ("rpi4", ("int8", "fp32"), "fp32"),             # no dotprod: int8 on widening multiplies
    ("rpi5", ("int8", "fp32"), "int8"),             # sdot
])
def test_auto_without_timing_decides_by_the_targets_units(target, candidates, chosen):
    """--precision auto on a target whose builds cannot be timed here: bf16 is built only where a
    bf16 unit runs it, and int8 is kept where the target has a 4-way int8 dot product (every
    CUDA GPU: int8 tensor cores from sm_72, dp4a before), else bf16 where built, else fp32."""
    from reidc.compiler.compile import auto_candidates, untimed_choice
    from reidc.targets import get_target
    preset = get_target(target)
    assert auto_candidates(preset) == candidates
    built = dict.fromkeys(candidates)
    assert untimed_choice(preset, built)[0] == chosen and "not timed" in untimed_choice(preset, built)[1]
    without_int8 = {p: None for p in candidates if p != "int8"}   # int8 failed verification
    assert untimed_choice(preset, without_int8)[0] == ("bf16" if "bf16" in candidates else "fp32")
