"""The `arm` tier: aarch64 builds cross-compiled here, run under qemu-user through reidc's C++
runner (TVM's aarch64 runtime), compared with PyTorch. Needs qemu-user and the aarch64 GNU
toolchain (the Makefile's set-up installs them); with REIDC_REQUIRE_TOOLS=1 (CI) a missing tool
fails the tier instead of skipping it."""
import os
import re
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from reidc.compiler.cli import app
from reidc.compiler.compile import CompileOptions, compile_checkpoint
from reidc.compiler.reference import torch_forward
from reidc.compiler.runtime import Compiled
from reidc.frontend.checkpoint import save_checkpoint
from reidc.frontend.zoo import zoo_model
from reidc.targets import PRESETS

pytestmark = pytest.mark.arm
SIZE = (64, 32)


@pytest.fixture(scope="module", autouse=True)
def tools():
    missing = PRESETS["rpi4"].missing_on_host()
    if missing:
        msg = f"the arm tier needs {', '.join(missing)}"
        if os.environ.get("REIDC_REQUIRE_TOOLS"):
            pytest.fail(msg)
        pytest.skip(msg)


def _build(d, name, split, target, **kw):
    model = zoo_model(name, split, seed=1, input_size=SIZE)
    save_checkpoint(model, d / "ck")
    man = compile_checkpoint(d / "ck", d / "art", CompileOptions(target=target, **kw))
    return model, man, d / "art"


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("arm-r18"), "cmnas-resnet18", "random:7", "rpi4")


@pytest.fixture(scope="module")
def bire18(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("arm-bire"), "bire-resnet18", "random:3", "rpi5")


def _x(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3) + SIZE, dtype=np.float32)


def test_cmnas_resnet18_verifies_in_all_modes_under_qemu(r18):
    model, man, art = r18
    v = man["verification"]
    assert v["status"] == "passed" and set(v["max_rel_err"]) == {"visible", "infrared", "mixed"}
    assert max(v["max_rel_err"].values()) < 1e-4
    comp = Compiled(art)
    assert type(comp.executor).__name__ == "QemuExecutor"
    x, m = _x(3, seed=5), np.array([1, 0, 1], np.int32)
    ref = torch_forward(model, x, "mixed", m)
    np.testing.assert_allclose(comp.run(x, m), ref, rtol=1e-4, atol=1e-5)


def test_bire_resnet18_verifies_bit_exactly_under_qemu(bire18):
    model, man, art = bire18
    v = man["verification"]
    assert v["status"] == "passed" and set(v["max_rel_err"]) == {"visible", "infrared", "mixed"}
    assert max(v["max_rel_err"].values()) < 1e-4
    # every flipped bit, if any, was a float-rounding tie at the first binary layer it reached
    assert all(f["rounding_only"] for rows in v["sign_flips"].values() for f in rows)
    assert man["binary_layers"] > 0
    feats, *bits = Compiled(art).run_bits(_x(2), "infrared")
    assert feats.shape == (2, 512) and bits and all(b.dtype == np.uint64 for b in bits)


def _disassemble(lib):
    return subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(lib)], capture_output=True, text=True,
                          check=True).stdout


def test_neon_instructions_in_the_libraries(r18, bire18):
    float_asm, bin_asm = _disassemble(r18[2] / "model.so"), _disassemble(bire18[2] / "model.so")
    assert re.search(r"\bfmla\s+v\d+\.4s", float_asm)            # NEON fp32 FMA in the convs
    assert len(re.findall(r"\bcnt\s+v\d+\.(8|16)b", bin_asm)) > 10  # NEON popcount in the binary convs
    assert "cnt" not in re.findall(r"\b(cnt)\s+v", float_asm)     # and none where nothing is binary


def test_cli_run_on_an_aarch64_artifact_uses_qemu(tmp_path, r18):
    model, _, art = r18
    x = _x(2, seed=3)
    np.save(tmp_path / "x.npy", x)
    r = CliRunner().invoke(app, ["run", str(art), "--input", str(tmp_path / "x.npy"), "--modality", "infrared",
                                 "-o", str(tmp_path / "f.npy")])
    assert r.exit_code == 0, r.output
    ref = torch_forward(model, x, "infrared")
    np.testing.assert_allclose(np.load(tmp_path / "f.npy"), ref, rtol=1e-4, atol=1e-5)


def test_bench_refuses_qemu_timings(r18):
    r = CliRunner().invoke(app, ["bench", str(r18[2]), "--batch", "1", "--mode", "visible"])
    assert r.exit_code == 1 and "qemu" in r.output


def test_runner_reports_a_missing_entry(r18):
    from reidc.targets.qemu import QemuError
    comp = Compiled(r18[2])
    with pytest.raises(QemuError, match="has no entry nope"):
        comp.executor.call("nope", [_x(1)])


def test_runner_bundle_is_aarch64(tmp_path):
    r = CliRunner().invoke(app, ["runner", "-o", str(tmp_path / "bundle")])
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "bundle").iterdir())
    assert names == ["libtvm_ffi.so", "libtvm_runtime.so", "reidc_run"]
    head = (tmp_path / "bundle" / "reidc_run").read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64


def test_the_runner_refuses_a_board_that_lacks_the_manifests_cpu_features(bire18, tmp_path):
    """rpi5 code uses dotprod and fp16: on a Cortex-A72 (rpi4) it would die with SIGILL; the
    runner reads the manifest's cpuinfo_flags and refuses first (board cpuinfo simulated)."""
    from reidc.targets.arm_runtime import SYSROOT, ensure_runner, runtime_dir
    _, man, art = bire18
    assert {"asimddp", "asimdhp"} <= set(man["target"]["cpuinfo_flags"])
    _x(1).tofile(tmp_path / "x.bin")
    a72, a76 = tmp_path / "a72", tmp_path / "a76"
    a72.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\n")
    a76.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid fphp asimdhp asimdrdm lrcpc asimddp\n")
    cmd = ["qemu-aarch64", "-L", SYSROOT, str(ensure_runner()), str(art / "model.so"), "visible", str(tmp_path),
           f"{tmp_path / 'x.bin'}:float32:1x3x{SIZE[0]}x{SIZE[1]}"]
    env = {**os.environ, "LD_LIBRARY_PATH": str(runtime_dir() / "lib")}
    r = subprocess.run(cmd, capture_output=True, text=True, env={**env, "REIDC_CPUINFO": str(a72)})
    assert r.returncode == 2 and "this CPU lacks asimddp, asimdhp" in r.stderr, r.stderr
    assert not (tmp_path / "out0.bin").exists()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**env, "REIDC_CPUINFO": str(a76)})
    assert r.returncode == 0 and (tmp_path / "out0.bin").exists(), r.stderr


def test_int8_on_dotprod_boards_is_sdot_and_verifies_under_qemu(tmp_path):
    """--precision int8 for rpi5 (Cortex-A76, dotprod): the int8 convs take s8 inputs and run
    sdot (in the library's assembly); verification under qemu passes the cosine budget and the
    artifact runs. rpi4 (no dotprod) builds the same convs on NEON's widening multiplies."""
    model, man, art = _build(tmp_path / "a", "cmnas-resnet18", "random:7", "rpi5", precision="int8",
                             calibration_images=4, modes=("visible",))
    v = man["verification"]
    assert v["status"] == "passed" and v["min_cosine"]["visible"] >= 0.99
    assert len(re.findall(r"\bsdot\s+v\d+\.4s", _disassemble(art / "model.so"))) > 20
    assert man["precision"]["int8"]["kernel"].startswith("sdot")
    x = _x(2, seed=3)
    got, ref = Compiled(art).run(x, "visible"), torch_forward(model, x, "visible")
    assert ((got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)).min() > 0.95
    man4 = compile_checkpoint(tmp_path / "a" / "ck", tmp_path / "r4", CompileOptions(
        target="rpi4", precision="int8", calibration_images=4, modes=("visible",), verify=False))
    assert man4["precision"]["real_valued"] == "int8"
    assert "sdot" not in _disassemble(tmp_path / "r4" / "model.so")


def test_bf16_on_a_board_verifies_under_qemu(tmp_path):
    """--precision bf16 for rpi5 (Cortex-A76: no bf16 dot product): the AMX build's graph, its
    convs NEON float32 convs of the decoded values; verification under qemu passes the cosine
    budget and the manifest says what runs."""
    model, man, art = _build(tmp_path / "a", "cmnas-resnet18", "random:7", "rpi5", precision="bf16",
                             modes=("visible",))
    v = man["verification"]
    assert v["status"] == "passed" and v["min_cosine"]["visible"] >= 0.999
    kernel = man["precision"]["bf16"]["kernel"]
    assert kernel.startswith("float32 convs (SIMD FMAs)") and "rpi5 has no bf16 dot product" in kernel
    assert sum(r["precision"] == "bf16" for r in man["precision"]["layers"]) == 19
    x = _x(2, seed=3)
    got, ref = Compiled(art).run(x, "visible"), torch_forward(model, x, "visible")
    assert ((got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)).min() > 0.999


def test_grouped_convs_verify_under_qemu(tmp_path):
    """A tiny ResNeXt's grouped convs (reidc's conv schedule in NEON lanes) on aarch64, against PyTorch."""
    import reidc
    from resnext_tiny import SHAPE, resnext_tiny
    art = reidc.compile(resnext_tiny(), "rpi5", output=tmp_path / "art", input_shape=SHAPE)
    v = art.manifest["verification"]
    assert v["status"] == "passed" and max(v["max_rel_err"].values()) < 1e-4


def test_hard_gates_verify_under_qemu(tmp_path):
    """ReLU6, hardtanh, hard-sigmoid, hard-swish and sigmoid on aarch64, against PyTorch."""
    import reidc
    import torch
    from test_head_ops import Gates
    torch.manual_seed(0)
    art = reidc.compile(Gates().eval(), "rpi5", output=tmp_path / "art", input_shape=(3, 8, 8))
    v = art.manifest["verification"]
    assert v["status"] == "passed" and max(v["max_rel_err"].values()) < 1e-4


@pytest.mark.parametrize("values", [dict(depth="18x", ibn=True, se=True, pool="GeneralizedMeanPoolingP", emb=64),
                                    dict(backbone="osnet", depth="x0_25", ibn=True),
                                    dict(backbone="mobilenetv2", depth="0.35x", pool="GeneralizedMeanPooling")],
                         ids=["r18-ibn-se-gemp-emb", "osnet-x0_25-ibn", "mobilenetv2-0.35x-gem"])
def test_fastreid_r18_ibn_se_gem_verifies_under_qemu(tmp_path, values):
    """fast-reid's layers on aarch64: the input pad, InstanceNorm, SE gates, GeM, the embedding
    dense, OSNet's and MobileNetV2's backbones, against fast-reid's own forward on raw 0-255 images."""
    from fastreid_runs import fastreid_features, fastreid_run, images
    model, _ = fastreid_run(tmp_path / "run", **values)
    man = compile_checkpoint(tmp_path / "run" / "model_final.pth", tmp_path / "art", CompileOptions(target="rpi5"))
    assert man["verification"]["status"] == "passed" and man["verification"]["max_rel_err"]["main"] < 1e-4
    x = images(2)
    want = fastreid_features(model, x)
    got = Compiled(tmp_path / "art").run(x, "main")
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4


@pytest.mark.parametrize("arch", ["osnet_x0_25", "osnet_ain_x0_25", "mobilenetv2_x1_0"])
def test_torchreid_osnet_verifies_under_qemu(tmp_path, arch):
    """OSNet's depthwise convs and channel gates, AIN's InstanceNorms and MobileNetV2's ReLU6 on
    aarch64, against torchreid's forward."""
    from torchreid_runs import features, torchreid_run
    model, path = torchreid_run(tmp_path / "run", arch, data_parallel=True)
    man = compile_checkpoint(path, tmp_path / "art", CompileOptions(target="rpi5", torchreid_arch=arch,
                                                                    input_size=SIZE))
    assert man["verification"]["status"] == "passed"
    x = _x(2, seed=3)
    want = features(model, x)
    got = Compiled(tmp_path / "art").run(x, "main")
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4
