"""Benchmarks (marker `bench`, out of the default run): `make bench`.

CM-NAS ResNet-50 at 256x128, batch 1 and 16, visible-only and mixed; reidc against PyTorch
eager, torch.compile and ONNX Runtime, each in a process of its own (the harness of `reidc
bench`, compiler/bench.py), recorded in extra_info with the ratios, medians, min/max and
spreads. pytest-benchmark times reidc in this process afterwards, when no worker is left.
Nothing here asserts on time; it asserts the numbers agree.
"""
import os

import pytest

pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    from reidc.compiler.compile import compile_checkpoint
    from reidc.compiler.runtime import Compiled
    from reidc.frontend.checkpoint import save_checkpoint
    from reidc.frontend.zoo import zoo_model
    os.environ["TVM_NUM_THREADS"] = "2"
    d = tmp_path_factory.mktemp("bench")
    model = zoo_model("cmnas-resnet50", "all-split")
    save_checkpoint(model, d / "ck")
    compile_checkpoint(d / "ck", d / "art")
    return d / "art", Compiled(d / "art")


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("mode", ["visible", "mixed"])
def test_cmnas_resnet50(benchmark, r50, batch, mode):
    from reidc.compiler.bench import bench
    from reidc.compiler.reference import seeded_inputs
    art, comp = r50
    row = bench(art, batches=(batch,), modes=(mode,), threads=2, repeat=5)[0]
    x, m = seeded_inputs(comp.input_shape, batch, mode, seed=1)
    benchmark.pedantic(comp.run, args=(x, m if mode == "mixed" else mode), rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(row)
    assert row["max_rel_err"] <= 1e-4 and row["onnxruntime_rel_err"] <= 1e-3
    assert all(row[f"{n}_min_ms"] <= row[f"{n}_ms"] <= row[f"{n}_max_ms"] for n in row["worker_pids"])


@pytest.fixture(scope="module")
def bire18(tmp_path_factory):
    """bire-resnet18 and the fp32 ResNet-18 it replaces (cmnas-resnet18, all BNs shared),
    both compiled for this machine, visible entry only: name -> (Compiled, artifact path)."""
    from reidc.compiler.compile import CompileOptions, compile_checkpoint
    from reidc.compiler.runtime import Compiled
    from reidc.frontend.checkpoint import save_checkpoint
    from reidc.frontend.zoo import zoo_model
    os.environ["TVM_NUM_THREADS"] = "2"
    d = tmp_path_factory.mktemp("bire")
    out = {}
    for name, split in (("bire-resnet18", "all-shared"), ("cmnas-resnet18", "all-shared")):
        model = zoo_model(name, split)
        save_checkpoint(model, d / name)
        compile_checkpoint(d / name, d / f"{name}.art", CompileOptions(modes=("visible",)))
        out[name] = (Compiled(d / f"{name}.art"), d / f"{name}.art")
    return out


@pytest.mark.parametrize("batch", [1, 16])
def test_bire_resnet18_end_to_end(benchmark, bire18, batch):
    """reidc bire-resnet18 vs PyTorch eager of the same network, and vs reidc / eager / ONNX
    Runtime of the fp32 ResNet-18 (ratios in extra_info)."""
    from reidc.compiler.bench import bench
    from reidc.compiler.reference import seeded_inputs
    comp, art = bire18["bire-resnet18"]
    row = bench(art, batches=(batch,), modes=("visible",), threads=2, repeat=5,
                runtimes=("torch_eager", "onnxruntime"), baseline=bire18["cmnas-resnet18"][1])[0]
    x, _ = seeded_inputs(comp.input_shape, batch, "visible", seed=1)
    benchmark.pedantic(comp.run, args=(x, "visible"), rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(row)
    assert comp.manifest["weights"]["artifact_bytes"] * 10 < bire18["cmnas-resnet18"][0].manifest["weights"]["artifact_bytes"]


@pytest.mark.parametrize("threads", [1, 2])
def test_binary_layer_14x14x256(benchmark, threads, tmp_path):
    """The ResNet-18 layer shape 14x14x256 -> 256, 3x3, batch 1: the whole binary layer
    (bit-packing, popcount conv, fused float epilogue) against OpenVINO's BinaryConvolution
    (where installed) and PyTorch's float conv, each engine in a process of its own."""
    import json
    import subprocess
    import sys
    out = tmp_path / "layer.json"
    subprocess.run([sys.executable, "-m", "reidc.compiler.layer_bench", "--threads", str(threads), "--json", str(out)],
                   capture_output=True, text=True, check=True)
    row = json.loads(out.read_text())
    benchmark.extra_info.update(row)
    benchmark.pedantic(lambda: None, rounds=1)
    assert all(e.get("exact", True) for e in row["engines"].values())
