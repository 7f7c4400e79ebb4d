"""The CLI as a user meets it: one-line errors, non-zero exits, no partial artifacts."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from reidc.compiler.cli import app

runner = CliRunner()


def _ok(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return r


def _err(args, pattern):
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    assert "error:" in r.output and pattern in " ".join(r.output.split()), r.output
    return r


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    _ok(["zoo", "export", "cmnas-resnet18", "--split", "random:7", "--input-size", "64x32", "-o", str(d / "ck")])
    return d / "ck"


def test_compile_run_roundtrip(tmp_path, ckpt):
    _ok(["compile", str(ckpt), "--target", "host", "-o", str(tmp_path / "art")])
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 32), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "m.npy", np.array([1, 0], np.int32))
    _ok(["run", str(tmp_path / "art"), "--input", str(tmp_path / "x.npy"), "--modality", "infrared",
         "-o", str(tmp_path / "f.npy")])
    assert np.load(tmp_path / "f.npy").shape == (2, 512)
    _ok(["run", str(tmp_path / "art"), "--input", str(tmp_path / "x.npy"), "--modality", str(tmp_path / "m.npy"),
         "-o", str(tmp_path / "g.npy")])
    _err(["run", str(tmp_path / "art"), "--input", str(tmp_path / "m.npy"), "-o", str(tmp_path / "h.npy")],
         "input has shape (2,)")
    assert not (tmp_path / "h.npy").exists()


def test_explicit_preset_and_target_json(tmp_path, ckpt):
    from reidc.targets import PRESETS
    if PRESETS["x86-avx2"].missing_on_host():
        pytest.skip("this machine cannot run AVX2 code")  # deliberate: depends on the CPU
    _ok(["compile", str(ckpt), "--target", "x86-avx2", "-o", str(tmp_path / "a")])
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["target"]["tvm"]["mcpu"] == "x86-64-v3"
    _ok(["compile", str(ckpt), "--target", '{"kind": "llvm", "mcpu": "x86-64-v2"}', "-o", str(tmp_path / "b")])
    _err(["compile", str(ckpt), "--target", '{"kind": "llvm", "mcpu"', "-o", str(tmp_path / "c")],
         "target JSON does not parse")


def test_modes_subset_and_missing_entry(tmp_path, ckpt):
    _ok(["compile", str(ckpt), "--modes", "visible", "-o", str(tmp_path / "a")])
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["modes"] == ["visible"]
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 64, 32), np.float32))
    _err(["run", str(tmp_path / "a"), "--input", str(tmp_path / "x.npy"), "--modality", "infrared",
          "-o", str(tmp_path / "f.npy")], "has no infrared entry")
    _err(["compile", str(ckpt), "--modes", "thermal", "-o", str(tmp_path / "b")],
         "unknown modes 'thermal'; expected one of visible, infrared, mixed")
    assert not (tmp_path / "b").exists()


def test_unknown_target(tmp_path, ckpt):
    _err(["compile", str(ckpt), "--target", "pdp11", "-o", str(tmp_path / "a")], "unknown target 'pdp11'")
    assert not (tmp_path / "a").exists()


def test_unverifiable_target_is_refused_unless_asked(tmp_path, ckpt):
    from reidc.targets import PRESETS
    if not PRESETS["x86-avx512"].missing_on_host():
        pytest.skip("this machine runs AVX-512 code, so the build verifies")  # deliberate: depends on the CPU
    _err(["compile", str(ckpt), "--target", "x86-avx512", "-o", str(tmp_path / "a")], "cannot be verified on this machine")
    assert not (tmp_path / "a").exists()


def test_bad_checkpoints(tmp_path, ckpt):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    w = bad / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    _err(["compile", str(bad), "-o", str(tmp_path / "a")], "corrupt or truncated")
    spec = json.loads((ckpt / "arch.json").read_text())
    shutil.copy(ckpt / "model.safetensors", w)
    (bad / "arch.json").write_text(json.dumps({**spec, "split": spec["split"][:5]}))
    _err(["compile", str(bad), "-o", str(tmp_path / "a")], "5 entries but ResNet-18 has 20")
    (bad / "arch.json").write_text(json.dumps({**spec, "depth": 34, "split": [0] * 36}))
    _err(["compile", str(bad), "-o", str(tmp_path / "a")], "weights do not fit cmnas-resnet34")
    _err(["compile", str(tmp_path / "nope"), "-o", str(tmp_path / "a")], "no such checkpoint")
    assert not (tmp_path / "a").exists()


def test_targets_and_zoo_list():
    r = _ok(["targets"])
    assert "x86-avx2" in r.output and "x86-avx512" in r.output and "host" in r.output
    assert "cmnas-resnet50" in _ok(["zoo", "list"]).output
