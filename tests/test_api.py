"""The Python API (`reidc.*`): compile a module held in memory or a checkpoint, run, save, load,
verify; errors as classes; importing it loads no PyTorch."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import reidc


class Head(nn.Module):
    """Not one of reidc's networks: a module of supported ops, compiled through torch.export."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.mean(dim=(2, 3)))


def test_compile_a_module_in_memory_run_save_load_verify(tmp_path):
    torch.manual_seed(0)
    m = Head().eval()
    art = reidc.compile(m, input_shape=(3, 16, 8))
    assert art.modes == ("main",) and art.input_shape == (3, 16, 8)
    assert art.manifest["verification"]["status"] == "passed" and art.manifest["checkpoint"] is None
    x = torch.randn(4, 3, 16, 8)
    with torch.no_grad():
        ref = m(x).numpy()
    np.testing.assert_allclose(art.run(x), ref, rtol=1e-4, atol=1e-5)       # a torch tensor in, numpy out
    np.testing.assert_allclose(art(x.numpy()[:1]), ref[:1], rtol=1e-4, atol=1e-5)   # any batch
    saved = art.save(tmp_path / "art")
    tmp_dir = art.path.parent
    del art                                   # the temporary folder goes with the object
    assert not tmp_dir.exists()
    again = reidc.load(tmp_path / "art")
    np.testing.assert_allclose(again.run(x), ref, rtol=1e-4, atol=1e-5)
    assert saved.verify()["status"] == "passed"                  # against the module it came from
    with pytest.raises(reidc.ArtifactError, match="compiled from a module in memory"):
        again.verify()                         # a fresh load does not have the module
    with torch.no_grad():
        m.fc.bias.add_(1)
    with pytest.raises(reidc.ArtifactError, match="not compiled from this module"):
        saved.verify()


def test_compile_a_reidc_network_and_a_checkpoint(tmp_path, small_r18):
    m = small_r18["all-shared"]
    art = reidc.compile(m, modes=["visible", "mixed"], output=tmp_path / "a")
    assert art.modes == ("visible", "mixed") and art.path == tmp_path / "a"
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 32)).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x), "visible").numpy()
    np.testing.assert_allclose(art.run(x, "visible"), ref, rtol=1e-4, atol=1e-4)
    assert "cmnas-resnet18" in repr(art)
    _images_and_inspect(art, tmp_path)
    ck = reidc.export_zoo("bire-resnet18", tmp_path / "ck", input_size=(64, 32))
    assert ck["model"] == "bire-resnet18" and ck["split_bns"] == ck["bns"]
    art = reidc.compile(tmp_path / "ck", modes=["infrared"], output=tmp_path / "b")
    assert art.manifest["binary_layers"] == 16 and reidc.verify(art)["verification"]["status"] == "passed"


def test_errors_are_classes_with_the_cli_line(tmp_path):
    with pytest.raises(reidc.CheckpointError):
        reidc.compile(tmp_path / "missing")
    with pytest.raises(reidc.UnsupportedOpError, match="unsupported op"):
        reidc.compile(nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU()), input_shape=(3, 8, 8))
    with pytest.raises(reidc.CaptureError, match="input_shape"):
        reidc.compile(nn.Conv2d(3, 4, 3))
    with pytest.raises(reidc.ArtifactError):
        reidc.load(tmp_path)
    with pytest.raises(reidc.TargetError, match="unknown target"):
        reidc.compile(nn.Conv2d(3, 4, 3), target="pdp11", input_shape=(3, 8, 8))
    assert issubclass(reidc.UnsupportedOpError, reidc.CaptureError) and issubclass(reidc.CaptureError, reidc.UserError)
    with pytest.raises(reidc.ArchError, match="unknown zoo model"):
        reidc.export_zoo("resnet9000", tmp_path / "z")


def test_importing_reidc_loads_no_torch():
    code = "import sys, reidc; print(sorted(m for m in ('torch', 'networkx', 'reidc.frontend.capture') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert reidc.__version__ and all(getattr(reidc, n).__doc__ for n in reidc.__all__ if n != "__version__")


def _images_and_inspect(art, tmp_path):
    """`run` on a folder of image files (preprocessed as the manifest says), --normalize l2, and
    `inspect` as a table and as JSON."""
    from PIL import Image
    pre = art.manifest["preprocess"]
    assert pre["resize"] == [64, 32] and pre["color"] == "RGB"
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    pix = {f"{k}.png": rng.integers(0, 256, (64, 32, 3), dtype=np.uint8) for k in (2, 0, 1)}
    for name, p in pix.items():
        Image.fromarray(p).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    res = reidc.run_files(art.path, folder, "visible", tmp_path / "f.npy", normalize="l2")
    assert res == {"shape": (3, 512), "files": ["0.png", "1.png", "2.png"]}
    x = np.stack([(p.transpose(2, 0, 1) / np.float32(255) - np.array(pre["mean"], np.float32)[:, None, None])
                  / np.array(pre["std"], np.float32)[:, None, None] for _, p in sorted(pix.items())]).astype(np.float32)
    want = art.run(x, "visible")
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    got = np.load(tmp_path / "f.npy")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, rtol=1e-5)
    (folder / "bad.jpg").write_bytes(b"no jpeg")
    with pytest.raises(reidc.InputError, match="bad.jpg: not a readable image"):
        reidc.run_files(art.path, folder, "visible", tmp_path / "g.npy")
    assert not (tmp_path / "g.npy").exists()
    info = reidc.inspect(art.path)
    assert info["entries"] == {"visible": "(x)", "mixed": "(x, modality)"} and info["verification"]["status"] == "passed"
    cli = [sys.executable, "-m", "reidc.compiler.cli", "inspect", str(art.path)]
    js = subprocess.run(cli + ["--json"], capture_output=True, text=True, check=True).stdout
    import json
    assert json.loads(js)["target"]["preset"] == "host"
    table = subprocess.run(cli, capture_output=True, text=True, check=True).stdout
    assert "verification" in table and "passed" in table


def test_options_are_checked_before_any_work(tmp_path):
    m = nn.Conv2d(3, 4, 3)
    for kw, msg in [({"precision": "fp16"}, "precision='fp16'"), ({"mixed_strategy": "weight"}, "mixed_strategy"),
                    ({"arch": "spec.json"}, "arch: only for a checkpoint on disk"),
                    ({"feature": "pool"}, "feature: only for a checkpoint")]:
        with pytest.raises(reidc.InputError, match=msg):
            reidc.compile(m, input_shape=(3, 8, 8), **kw)
    with pytest.raises(reidc.InputError, match="unknown modes 'thermal'; expected one of main"):
        reidc.compile(m, input_shape=(3, 8, 8), modes="thermal")


def test_a_job_without_the_compilers_packages_says_how_to_get_them():
    from reidc.compiler.api.needs import needs_compiler
    with pytest.raises(reidc.UserError, match=r"compiling needs torch, which is not installed: pip install 'reidc\[compile\]'"):
        with needs_compiler("compiling"):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")


def test_an_artifact_for_another_machine_opens_and_is_refused_only_when_run(tmp_path):
    import json
    art = reidc.compile(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), input_shape=(3, 6, 6),
                        output=tmp_path / "a")
    assert art.run(np.zeros((1, 3, 6, 6), np.float32)).shape == (1, 4)
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    man["target"]["cpu_features"].append("amx-fp16")  # a feature this machine lacks
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(man))
    other = reidc.load(tmp_path / "a")
    assert other.modes == ("main",) and reidc.inspect(other.path)["target"]["cpu_features"][-1] == "amx-fp16"
    other.save(tmp_path / "copy")
    with pytest.raises(reidc.ArtifactError, match="amx-fp16"):
        other.run(np.zeros((1, 3, 6, 6), np.float32))
