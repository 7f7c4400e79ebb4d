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
    assert all(k["ms_per_call"] > 0 and k["unit"] == "fp32" and 0 < k["gmac_per_s"] for k in convs)
    assert r["kernels_alone_ms"] == pytest.approx(sum(k["ms"] for k in r["kernels"]), abs=1e-2)
    assert r["whole_run_ms"] > 0 and r["batch"] == 2 and r["entry"] == "visible"
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
    assert conv_macs("max_pool2d", []) is None


def test_cli_prints_the_table_and_writes_json(r18, tmp_path):
    cli = [str(Path(sys.executable).parent / "reidc"), "profile", str(r18.path), "--top", "3",
           "--json", str(tmp_path / "p.json")]
    res = subprocess.run(cli, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "GMAC/s" in res.stdout and "whole run" in res.stdout and "of peak" in res.stdout
    assert json.loads((tmp_path / "p.json").read_text())["model"] == "cmnas-resnet18"
