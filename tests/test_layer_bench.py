"""`python -m reidc.compiler.layer_bench`: one binary layer timed against its peers (each in a
bench worker process); here on a small layer, so it stays cheap: the command runs, every
engine's output is the exact integer conv, and the check catches one that is not."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from reidc.compiler.layer_engines import LAYER_ENGINES, exact, layer, reference

SMALL = {"threads": 1, "layer": {"channels": 64, "out": 64, "size": 5, "seed": 0}}


def test_reference_is_the_plus_minus_one_conv():
    d = layer(SMALL)
    import torch
    s = torch.from_numpy(np.where(d["x"] < d["threshold"][None, :, None, None], -1.0, 1.0))
    want = torch.nn.functional.conv2d(s, torch.from_numpy(d["signs"].astype(np.float64)), padding=1).numpy()
    assert np.array_equal(reference(d), want.astype(np.int64))


def test_exact_catches_one_wrong_output():
    d = layer(SMALL)
    good = reference(d) * d["scale"][None, :, None, None]
    assert exact(good.astype(np.float32), d)
    bad = good.copy()
    bad[0, 3, 2, 2] += 2 * d["scale"][3]   # one output off by one +-1 product pair
    assert not exact(bad.astype(np.float32), d)


@pytest.mark.parametrize("name", sorted(n for n in LAYER_ENGINES if n != "layer_torch"))
def test_binary_engines_are_exact(name):
    if name == "layer_openvino" and importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is in the bench extra")
    d = layer(SMALL)
    engine = LAYER_ENGINES[name](SMALL)
    assert exact(engine.call_for("visible", d["x"], None)(), d)


def test_the_command_writes_its_figures(tmp_path):
    out = tmp_path / "layer.json"
    r = subprocess.run([sys.executable, "-m", "reidc.compiler.layer_bench", "--no-peers", "--repeat", "1",
                        "--channels", "64", "--size", "5", "--json", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    fig = json.loads(out.read_text())
    row = fig["engines"]["layer_reidc"]
    assert row["exact"] and row["ms"] > 0 and fig["binary_macs"] == 64 * 64 * 9 * 25
    assert row["kernel"]["ms"] > 0 and row["kernel"]["gmac_per_s"] > 0
    assert "reidc (binary)" in r.stdout and "the conv kernel alone" in r.stdout


@pytest.mark.parametrize("name", sorted(n for n in LAYER_ENGINES if n != "layer_torch"))
def test_binary_engines_time_their_conv_kernel_alone(name):
    if name == "layer_openvino" and importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is in the bench extra")
    engine = LAYER_ENGINES[name](SMALL)
    if name == "layer_reidc":   # the fused popcount conv, not the bit-packing or a layout change
        (kernel, _), (func, args, _) = engine.kernel()
        assert "bconv2d" in kernel and "bitpack" not in kernel and "transpose" not in kernel
        func(*args)
    assert engine.kernel_ms(0.01) > 0   # OpenVINO: its profiler timed a BinaryConvolution node


def test_bad_arguments_are_named(tmp_path):
    r = subprocess.run([sys.executable, "-m", "reidc.compiler.layer_bench", "--channels", "100"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--channels must be a multiple of 64" in r.stderr
