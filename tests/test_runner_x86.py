"""The C++ runner (targets/runner/reidc_run.cc) built for this x86 machine, as the README says
to build it on a board: it refuses an artifact whose CPU features the host lacks (the x86
`flags` line), and it requests the AMX tile state an AMX build needs (without it the first
tile instruction is SIGILL), matching the Python runtime's output exactly."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import reidc
from reidc.targets.presets import host_features

SRC = Path(reidc.__file__).parent / "targets" / "runner" / "reidc_run.cc"
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no host g++")


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Path:
    import tvm
    import tvm_ffi
    tvm_lib, ffi = Path(tvm.__file__).parent / "lib", Path(tvm_ffi.__file__).parent
    out = tmp_path_factory.mktemp("runner") / "reidc_run"
    subprocess.run(["g++", "-std=c++17", "-O2", str(SRC), f"-I{ffi / 'include'}", f"-L{tvm_lib}", f"-L{ffi / 'lib'}",
                    "-ltvm_runtime", "-ltvm_ffi", f"-Wl,-rpath,{tvm_lib}", f"-Wl,-rpath,{ffi / 'lib'}", "-o", str(out)],
                   check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def int8_artifact(tmp_path_factory) -> Path:
    """64-channel stride-1 convs: where the host has AMX, the int8 build runs them on AMX tiles."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    out = tmp_path_factory.mktemp("art") / "a"
    reidc.compile(net, output=out, input_shape=(3, 16, 16), precision="int8", calibration_images=4)
    return out


def _run(runner, art, tmp_path, env=None):
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    entry = reidc.load(art).modes[0]
    r = subprocess.run([str(runner), str(art / "model.so"), entry, str(tmp_path), f"{tmp_path / 'x.bin'}:float32:2x3x16x16"],
                       capture_output=True, text=True, env={**os.environ, **(env or {})})
    return r, x, entry


@pytest.mark.skipif("amx_tile" not in host_features(), reason="the host has no AMX")
def test_an_amx_build_runs_under_the_runner_and_matches_python(runner, int8_artifact, tmp_path):
    assert "amxtile" in reidc.load(int8_artifact).manifest["target"]["cpuinfo_flags"]
    r, x, entry = _run(runner, int8_artifact, tmp_path)
    assert r.returncode == 0, r.stderr       # was -4 (SIGILL) before the runner requested the tile state
    got = np.fromfile(tmp_path / "out0.bin", np.float32).reshape(2, -1)
    np.testing.assert_array_equal(got, reidc.load(int8_artifact).run(x, entry))


def test_the_runner_refuses_an_x86_cpu_without_the_artifacts_features(runner, int8_artifact, tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2\n")
    r, _, _ = _run(runner, int8_artifact, tmp_path, {"REIDC_CPUINFO": str(fake)})
    assert r.returncode == 2 and "this CPU lacks" in r.stderr and "avx2" in r.stderr, r.stderr
    assert not (tmp_path / "out0.bin").exists()


def test_the_runner_runs_on_every_cpu_unless_told(runner, int8_artifact, tmp_path):
    """TVM's pool, without TVM_NUM_THREADS, takes half the logical CPUs on x86 (one thread on a
    2-core machine): the runner sets it to the CPUs it may use, and a user's setting stands."""
    from reidc.compiler.runtime import usable_cpus
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    entry = reidc.load(int8_artifact).modes[0]
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    for extra, want in (({}, usable_cpus()), ({"TVM_NUM_THREADS": "1"}, 1), ({"OMP_NUM_THREADS": "1"}, 1),
                        ({"TVM_NUM_THREADS": "two"}, usable_cpus())):
        r = subprocess.run([str(runner), str(int8_artifact / "model.so"), entry, str(tmp_path), "--repeat", "2",
                            f"{tmp_path / 'x.bin'}:float32:2x3x16x16"], capture_output=True, text=True,
                           env={**env, **extra})
        assert r.returncode == 0, r.stderr
        assert f"threads {want}" in r.stdout.splitlines(), r.stdout
