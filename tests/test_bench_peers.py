"""`reidc bench`'s optional reduced-precision peers (compiler/bench.py OPTIONAL_RUNTIMES): ONNX
Runtime int8 (static QDQ) and OpenVINO fp32 / bf16 / int8, skipped where onnxruntime or
openvino is not installed (CI installs neither's extra). Cheap: the tiny cmnas-resnet18 at 64x32
of tests/test_bench_isolation.py, its mixed entry only (the one fed two inputs, x and modality),
batch 2 (one visible, one infrared image), one short round per engine.

Nothing asserts on time: the outputs must agree with PyTorch eager (cosine >= 0.98 for int8),
and each engine must say which precision it ran in."""
import os

import pytest
from typer.testing import CliRunner

import reidc.compiler.bench as bench_mod
from reidc.compiler.cli import app

PEERS = ("onnxruntime_int8", "openvino", "openvino_bf16", "openvino_int8")


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_peers")
    runner = CliRunner()
    for args in (["zoo", "export", "cmnas-resnet18", "--split", "random:7", "--input-size", "64x32",
                  "-o", str(d / "ck")],
                 ["compile", str(d / "ck"), "--modes", "mixed", "-o", str(d / "art")]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
    return d / "art"


def test_reduced_precision_peers_agree_with_eager(art):
    pytest.importorskip("onnxruntime.quantization")
    ov = pytest.importorskip("openvino")
    assert set(PEERS) == set(bench_mod.OPTIONAL_RUNTIMES) and not set(PEERS) & set(bench_mod.RUNTIMES)
    row, = bench_mod.bench(art, batches=(2,), modes=("mixed",), repeat=1, runtimes=PEERS,
                           round_s=0.02, pause_s=0.0)
    assert set(row["worker_pids"]) == {"reidc", "torch_eager", *PEERS}
    assert all(_gone(p) for p in row["worker_pids"].values())
    for n in PEERS:
        assert row[f"{n}_min_ms"] <= row[f"{n}_ms"] <= row[f"{n}_max_ms"], n
        assert row[f"speedup_vs_{n}"] == pytest.approx(row[f"{n}_ms"] / row["reidc_ms"])
    assert row["openvino_rel_err"] <= 1e-4 and row["openvino_precision"] == "f32"
    assert "onnxruntime_int8_conv_precisions" not in row and "onnxruntime_int8_precision" in row
    assert row["openvino_bf16_rel_err"] <= 5e-2 and row["openvino_bf16_cos_min"] >= 0.999
    for n in ("onnxruntime_int8", "openvino_int8"):
        assert row[f"{n}_cos_min"] >= 0.98 and row[f"{n}_rel_err"] <= 0.2, (n, row[f"{n}_cos_min"])
    assert "int8" in row["onnxruntime_int8_precision"]
    # what OpenVINO reports it ran: bf16 only where the CPU has it, int8 kernels where it has them
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert row["openvino_bf16_precision"] == row["openvino_bf16_inference_precision_hint"] \
        == ("bf16" if "BF16" in caps else "f32")
    assert set(row["openvino_conv_precisions"]) == {"f32"}
    assert set(row["openvino_bf16_conv_precisions"]) == {row["openvino_bf16_precision"]}
    assert row["openvino_int8_precision"] == "int8 QDQ, the rest f32"
    if "INT8" in caps:
        assert set(row["openvino_int8_conv_precisions"]) <= {"u8", "i8"}, row["openvino_int8_conv_precisions"]


def test_peers_are_optional_and_checked_before_any_worker(art, monkeypatch):
    started = []
    monkeypatch.setattr(bench_mod, "start_workers", lambda *a, **k: started.append(a) or {})
    assert set(bench_mod.plan(art, batches=(1,)).engines) == {"reidc", *bench_mod.RUNTIMES}
    with pytest.raises(bench_mod.InputError, match="runtime 'tensorrt': expected one of .*openvino_int8"):
        bench_mod.plan(art, batches=(1,), runtimes=("tensorrt",))
    with pytest.raises(bench_mod.InputError, match="runtime torch_fp16: PyTorch's fp16 autocast is a GPU engine"):
        bench_mod.plan(art, batches=(1,), runtimes=("torch_fp16",))
    assert bench_mod.plan(art, batches=(1,)).device == "cpu"
    real = bench_mod.importlib.util.find_spec
    monkeypatch.setattr(bench_mod.importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(bench_mod.InputError, match=r"runtime openvino_bf16: needs the openvino package.*reidc\[bench\]"):
        bench_mod.bench(art, batches=(1,), runtimes=("onnxruntime", "openvino_bf16"))
    assert not started


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)  # each worker leads its own process group
    except ProcessLookupError:
        return True
    return False
