"""`reidc profile`: every kernel of a run is listed with its calls; the convs' multiply-
accumulates add up to what the manifest counts; the CLI prints the table and writes JSON."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import reidc
from reidc.compiler.profile import Peak, conv_macs, kernel_kind


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    model = reidc.zoo_model("cmnas-resnet18", input_size=(64, 32))
    return reidc.compile(model, output=tmp_path_factory.mktemp("p") / "a", modes="visible,mixed")


def test_profile_lists_every_kernel_and_the_convs_macs_add_up(r18):
    r = reidc.profile(r18, batch=2)
    per_sample = r18.manifest["per_sample"]
    convs = [k for k in r["kernels"] if "macs_per_call" in k]
    assert sum(k["macs_per_call"] * k["calls"] for k in convs) == 2 * per_sample["float_macs"]
    assert sum(k["calls"] for k in convs) == 20           # the stem and 19 block convs, each once
    # the stride-1 3x3 convs run as Winograd (their MACs counted as the direct conv's, so the sum holds;
    # the last stage keeps stride 1, as CM-NAS's does)
    wino = [row["layer"] for row in r18.manifest["precision"]["layers"] if row.get("algorithm")]
    assert len(wino) == 14 and sum(k["calls"] for k in convs if "winograd" in k["kernel"]) == 14  # 16 less 2 strided
    assert all(("winograd" in k["kernel"]) == ("effective" in k) for k in convs)   # their rate says how it counts
    assert all(k["ms_per_call"] > 0 and k["unit"] == "fp32" and 0 < k["gmac_per_s"] for k in convs)
    assert r["kernels_alone_ms"] == pytest.approx(sum(k["ms"] for k in r["kernels"]), abs=1e-2)
    assert r["whole_run_ms"] > 0 and r["batch"] == 2 and r["entry"] == "visible"
    assert r["ghz_source"].startswith("measured") and r["ghz"] > 0   # not /proc/cpuinfo's base clock
    mixed = reidc.profile(r18, batch=2, mode="mixed")     # per-modality weight sets count once
    assert sum(k["macs_per_call"] * k["calls"] for k in mixed["kernels"] if "macs_per_call" in k) == \
        2 * per_sample["float_macs"]
    with pytest.raises(reidc.InputError, match="has no infrared entry"):
        reidc.profile(r18, mode="infrared")


def test_kernel_kinds_and_peaks():
    assert [kernel_kind(n) for n in ("fused_conv2d_bf162_add", "fused_conv2d_int8_1", "fused_bconv2d_add",
                                     "fused_depthwise_conv2d", "fused_conv2d_add_relu", "max_pool2d")] == \
        ["bf16", "int8", "binary", "fp32", "fp32", None]
    amx = Peak.of(("avx512f", "avx512vnni", "amx-int8", "amx-bf16"), 512)
    assert (amx.fp32, amx.int8, amx.bf16) == (32, 1024, 512)
    assert Peak.of(("avx2",), 256).fp32 == 16 and Peak.of(("avx512vnni",), 512).int8 == 128
    # AVX2 int8: one vpmaddubsw + vpmaddwd per 32 MACs on 2 ports; with 6-bit weights 2 + 1 per 64
    assert Peak.of(("avx2",), 256, 63).int8 == 32 and Peak.of(("avx2",), 256, 31).int8 == pytest.approx(128 / 3)
    assert Peak.of(("avx512vnni", "avx2"), 512, 31).int8 == 128
    assert conv_macs("max_pool2d", []) is None


def test_split_512_bit_units_give_half_the_peak():
    """A Zen 4 issues one 512-bit FMA or vpdpbusd a cycle (as two 256-bit halves): its 512-bit FMA
    loop ran 117 G lane-FMAs/s, as its 256-bit loop did (117), which read 1.83 GHz as two ports
    instead of its 3.67 GHz. Split, the clock is taken over one port and the 512-bit SIMD units'
    peaks halve; a two-port Xeon (about twice the rate, or 1.5x with Skylake-SP's AVX-512 clock
    drop) is not split; AMX and 256-bit units are untouched."""
    from reidc.compiler.clock import splits_512
    assert splits_512(117.3e9, 117.4e9) and not splits_512(1.5e9, 1e9) and not splits_512(2e9, 1e9)
    split = Peak.of(("avx512f", "avx512vnni"), 512, split_512=True)
    assert (split.fp32, split.int8, split.bf16, split.binary) == (16, 64, 16, 512)
    zen4 = Peak.of(("avx512f", "avx512vnni", "avx512bf16"), 512, split_512=True)
    assert (zen4.fp32, zen4.bf16) == (16, 32)   # vdpbf16ps: one 512-bit a cycle, 16 lanes x a pair
    assert Peak.of(("avx512f",), 512, split_512=True).int8 == Peak.of(("avx512f",), 512).int8 / 2   # vpmaddubsw
    assert Peak.of(("avx2",), 256, split_512=True) == Peak.of(("avx2",), 256)   # 256-bit units: whole
    amx = Peak.of(("avx512f", "avx512vnni", "amx-int8", "amx-bf16"), 512, split_512=True)
    assert (amx.int8, amx.bf16) == (1024, 512)


def test_the_measured_clock_agrees_with_the_256_bit_loop_on_any_core():
    """On the host: the clock agrees with what the 256-bit FMA loop reads as two ports, whatever
    the preset's width (taken as two ports, a Zen 4's 512-bit loop read half: 0.5 here)."""
    from reidc.compiler import clock
    from reidc.targets import get_target
    preset = get_target("host")
    c = clock.measured_clock(preset, 1)
    narrow = clock._lane_fmas_per_s(preset, 1, 8) / (2 * 8) / 1e9
    assert 0.6 < c.ghz / narrow < 1.6, (c, narrow)
    assert not c.split_512 or preset.vector_bits == 512


def test_the_512_bit_clock_loop_is_zmm_on_the_avx512_presets():
    """The split check compares a 512-bit loop with a 256-bit one: on the AVX-512 presets (which
    keep LLVM's 256-bit preference) the 16-lane loop must still be zmm FMAs, or every two-port
    Xeon would read as split."""
    import re
    from reidc.compiler.clock import build_fma_loop
    from reidc.targets import get_target
    for name in ("x86-avx512", "x86-avx512-vnni", "x86-amx"):
        asm = build_fma_loop(get_target(name), 2, iters=10).inspect_source("asm")
        assert re.findall(r"^\s*vfmadd\w+\s+.*%zmm", asm, re.M), name


@pytest.mark.parametrize("name,weight,dtype,per_image", [
    ("fused_conv2d3_add2", (4, 2, 3, 3, 32, 16), "float32", 4 * 2 * 9 * 32 * 16 * 32),
    ("fused_conv2d3_add2", (2, 4, 2, 3, 3, 32, 16), "float32", 4 * 2 * 9 * 32 * 16 * 32),     # two modality sets
    ("fused_conv2d_int82_add", (1, 2, 3, 3, 16, 64, 4), "int8", 2 * 9 * 16 * 64 * 4 * 32),   # dot4, one set
    ("fused_conv2d_int82_add", (2, 1, 2, 3, 3, 16, 64, 4), "int8", 2 * 9 * 16 * 64 * 4 * 32),
    ("fused_conv2d_bf161_add", (1, 2, 3, 3, 32, 64, 2), "uint16", 2 * 9 * 32 * 64 * 2 * 32),  # 7-D, one set
    ("fused_bconv2d_add", (4, 3, 3, 2, 16), "uint64", 4 * 9 * 2 * 16 * 64 * 32)])
def test_the_kernel_listing_and_the_profile_count_macs_alike(name, weight, dtype, per_image):
    """One MAC rule (compiler/lower/kernel_macs.py) for the profile's arrays and the listing's
    shape strings; the listing sees TVM's name (its family drops the digits of int8 and bf16)."""
    from reidc.compiler.lower.kernel_list import _macs
    out = (3, 4, 8, 4, 16)

    class A:
        def __init__(self, shape, dt):
            self.shape, self.dtype = shape, dt
    assert conv_macs(name, [A((3, 1), "float32"), A(weight, dtype), A(out, "float32")]) == 3 * per_image
    listed = [("n", "1", "float32"), tuple(map(str, weight)) + (dtype,), ("n",) + tuple(map(str, out[1:])) + ("float32",)]
    assert _macs(name, listed) == per_image


def test_cli_prints_the_table_and_writes_json(r18, tmp_path):
    cli = [str(Path(sys.executable).parent / "reidc"), "profile", str(r18.path), "--top", "3",
           "--json", str(tmp_path / "p.json")]
    res = subprocess.run(cli, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "GMAC/s" in res.stdout and "whole run" in res.stdout and "of peak" in res.stdout
    assert json.loads((tmp_path / "p.json").read_text())["model"] == "cmnas-resnet18"


def test_the_clock_loop_keeps_its_chains_in_registers():
    """The peak's clock is measured with FMAs on registers only: with an accumulator in memory (or
    an operand the compiler must reload) the loop ran at 2.5x fewer FMAs per cycle and the clock
    came out at 1.6 GHz on a 3.85 GHz Xeon."""
    import re
    from reidc.compiler.clock import CHAINS, build_fma_loop
    from reidc.targets import get_target
    asm = build_fma_loop(get_target("host"), 2, iters=10).inspect_source("asm")
    fmas = re.findall(r"^\s*vfmadd\w+\s+(.*)$", asm, re.M)
    assert len(fmas) >= CHAINS and not [f for f in fmas if "(" in f]
