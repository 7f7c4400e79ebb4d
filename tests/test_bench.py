"""Benchmarks (marker `bench`, out of the default run): `make bench`.

CM-NAS ResNet-50 at 256x128, batch 1 and 16, visible-only and mixed; reidc against PyTorch
eager, torch.compile and ONNX Runtime measured in this process. pytest-benchmark times reidc;
the other runtimes are timed by the same harness as `reidc bench` and recorded in extra_info
with the ratios. Nothing here asserts on time; it asserts the numbers agree.
"""
import os

import pytest

pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    from compiler.compile import compile_checkpoint
    from compiler.runtime import Compiled
    from frontend.checkpoint import save_checkpoint
    from frontend.zoo import zoo_model
    os.environ["TVM_NUM_THREADS"] = "2"
    d = tmp_path_factory.mktemp("bench")
    model = zoo_model("cmnas-resnet50", "all-split")
    save_checkpoint(model, d / "ck")
    compile_checkpoint(d / "ck", d / "art")
    return model, Compiled(d / "art")


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("mode", ["visible", "mixed"])
def test_cmnas_resnet50(benchmark, r50, batch, mode):
    from compiler.bench import bench
    from compiler.reference import seeded_inputs
    model, comp = r50
    row = bench(comp, model, (batch,), (mode,), threads=2, repeat=5)[0]
    x, m = seeded_inputs(comp.input_shape, batch, mode, seed=1)
    benchmark.pedantic(comp.run, args=(x, m if mode == "mixed" else mode), rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(row)
    assert row["max_rel_err"] <= 1e-4 and row["onnxruntime_rel_err"] <= 1e-3
