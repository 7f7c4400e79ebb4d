"""The distribution: one top-level package `reidc`, and an artifact that loads and runs where
PyTorch is not installed (TVM's runtime and numpy only)."""
from __future__ import annotations

import site
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import reidc

ROOT = Path(__file__).resolve().parents[1]
# what `reidc.load` + `Artifact.run` import, besides reidc itself
RUNTIME_DEPS = ("tvm", "tvm_ffi", "numpy", "numpy.libs", "ml_dtypes", "typing_extensions.py", "psutil")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install .` (no dependencies) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return target


def test_one_top_level_package(installed):
    top = {p.name for p in installed.iterdir()} - {"bin"}   # bin: the `reidc` script
    assert top == {"reidc", f"reidc-{reidc.__version__}.dist-info"}
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {"reidc"} | {".".join(("reidc",) + p.parent.relative_to(ROOT).parts)
                           for top in ("compiler", "frontend", "kernels", "targets")
                           for p in (ROOT / top).rglob("__init__.py")}
    assert declared == on_disk
    assert (installed / "reidc" / "targets" / "runner" / "reidc_run.cc").is_file()


def test_an_artifact_runs_where_torch_is_absent(installed, tmp_path):
    """A venv with no PyTorch (nor networkx, nor anything of the compiler's extras): only TVM, numpy
    and what they import, plus the installed reidc. It loads an artifact and runs it."""
    from torch import nn
    art = reidc.compile(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                        input_shape=(3, 8, 8), output=tmp_path / "art")
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "want.npy", art.run(x))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    deps = tmp_path / "deps"
    deps.mkdir()
    ours = Path(site.getsitepackages()[0])
    for name in RUNTIME_DEPS:
        if (ours / name).exists():
            (deps / name).symlink_to(ours / name)
    py = venv / "bin" / "python"
    venv_site = subprocess.run([str(py), "-c", "import site; print(site.getsitepackages()[0])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    (Path(venv_site) / "reidc.pth").write_text(f"{deps}\n{installed}\n")
    code = (
        "import sys, numpy as np\n"
        "try:\n    import torch\nexcept ModuleNotFoundError:\n    pass\nelse:\n    raise SystemExit('torch is here')\n"
        "import reidc\n"
        f"a = reidc.load({str(tmp_path / 'art')!r})\n"
        f"got = a.run(np.load({str(tmp_path / 'x.npy')!r}))\n"
        f"assert np.array_equal(got, np.load({str(tmp_path / 'want.npy')!r})), 'features differ'\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'networkx')]\n"
        "print('ran', got.shape)\n")
    r = subprocess.run([str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ran (2, 4)", r.stderr[-3000:]
