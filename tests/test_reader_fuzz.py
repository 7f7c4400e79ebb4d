"""Every reader of a file reidc did not write, fed damaged files: truncated, bit-flipped, wrong
dtype, NaN/Inf, huge shapes. Each load either succeeds with a sound result (a flipped bit can
leave a valid file) or raises one of reidc's user errors naming the file; never another
exception, never a crash. A few go through the CLI as well, onto an existing artifact that must
stay byte for byte."""
import json
import shutil
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from reidc.compiler.cli import app
from reidc.compiler.base.errors import UserError
from reidc.frontend.arch import load_spec, read_cmnas_config
from reidc.frontend.checkpoint import load_checkpoint
from reidc.frontend.pt2 import load_program

pytestmark = pytest.mark.fuzz
H, W = 64, 32


def mutations(data: bytes, seed: int, n: int = 12):
    """Truncations at several points, single and burst bit flips, zeroed and garbage spans."""
    rng = np.random.default_rng(seed)
    size = len(data)
    for cut in (0, 1, 8, size // 7, size // 2, size - 1):
        yield f"truncated to {cut}", data[:cut]
    for k in range(n):
        b = bytearray(data)
        pos = int(rng.integers(0, min(size, 512) if k % 2 else size))  # half in the header
        b[pos] ^= 1 << int(rng.integers(0, 8))
        yield f"bit flip at {pos}", bytes(b)
    b = bytearray(data)
    start = int(rng.integers(0, max(1, size - 64)))
    b[start:start + 64] = rng.integers(0, 256, min(64, size - start), dtype=np.uint8).tobytes()
    yield f"garbage at {start}", bytes(b)


def _loads_or_user_error(fn, what):
    try:
        return fn()
    except UserError as e:
        assert "\n" not in str(e).strip() and str(e).strip(), (what, str(e))
        return None


@pytest.fixture(scope="module")
def ck(tmp_path_factory):
    from reidc.frontend.checkpoint import save_checkpoint
    from reidc.frontend.zoo import zoo_model
    d = tmp_path_factory.mktemp("fz")
    model = zoo_model("cmnas-resnet18", "random:7", seed=1, input_size=(H, W))
    save_checkpoint(model, d / "ck")
    torch.save(model.state_dict(), d / "model.pth")
    (d / "config.cfg").write_text(" ".join(map(str, model.spec.split)) + "\n")
    return d, model


def _finite_or_refused(model):
    if model is not None:
        assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


@pytest.mark.parametrize("reader", ["safetensors", "torch", "arch.json", "config.cfg"])
def test_checkpoint_readers(ck, tmp_path, reader):
    d, _ = ck
    src = {"safetensors": d / "ck" / "model.safetensors", "torch": d / "model.pth",
           "arch.json": d / "ck" / "arch.json", "config.cfg": d / "config.cfg"}[reader]
    for what, data in mutations(src.read_bytes(), seed=hash(reader) % 1000):
        bad = tmp_path / "bad"
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(d / "ck", bad)
        target = bad / src.name
        target.write_bytes(data)
        if reader == "arch.json":
            _loads_or_user_error(lambda: load_spec(target), what)
            fn = lambda: load_checkpoint(bad)  # noqa: E731
        elif reader == "config.cfg":
            _loads_or_user_error(lambda: read_cmnas_config(target), what)
            fn = lambda: load_checkpoint(d / "model.pth", split_config=target)  # noqa: E731
        elif reader == "torch":
            fn = lambda: load_checkpoint(target, split_config=d / "config.cfg")  # noqa: E731
        else:
            fn = lambda: load_checkpoint(bad)  # noqa: E731
        _finite_or_refused(_loads_or_user_error(fn, f"{reader}: {what}"))


def test_weights_with_wrong_dtypes_nan_and_huge_shapes(ck, tmp_path):
    d, model = ck
    sd = model.state_dict()
    k = "layer1.0.conv1.weight"
    cases = {
        "nan": {**sd, k: torch.full_like(sd[k], float("nan"))},
        "inf": {**sd, "bn1.sharable_bn.running_var": torch.full_like(sd["bn1.sharable_bn.running_var"], float("inf"))},
        "int": {**sd, k: sd[k].to(torch.int64)},
        "complex": {**sd, k: sd[k].to(torch.complex64)},
        "shape": {**sd, k: sd[k].reshape(-1)},
    }
    for name, state in cases.items():
        bad = tmp_path / name
        shutil.copytree(d / "ck", bad)
        save_file({kk: v.contiguous() for kk, v in state.items()}, str(bad / "model.safetensors"))
        assert _loads_or_user_error(lambda: load_checkpoint(bad), name) is None, name
    # a safetensors header that claims a huge tensor
    bad = tmp_path / "huge"
    shutil.copytree(d / "ck", bad)
    header = json.dumps({k: {"dtype": "F32", "shape": [1 << 20, 1 << 20, 1 << 10], "data_offsets": [0, 16]}}).encode()
    (bad / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    assert _loads_or_user_error(lambda: load_checkpoint(bad), "huge") is None


def test_pt2_reader(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3))
    torch.export.save(torch.export.export(Net().eval(), (torch.randn(1, 3, 8, 8),)), str(tmp_path / "m.pt2"))
    for what, data in mutations((tmp_path / "m.pt2").read_bytes(), seed=5, n=16):
        (tmp_path / "bad.pt2").write_bytes(data)
        _loads_or_user_error(lambda: load_program(tmp_path / "bad.pt2"), what)


@pytest.fixture(scope="module")
def art(ck):
    d, _ = ck
    r = CliRunner().invoke(app, ["compile", str(d / "ck"), "--modes", "visible,mixed", "-o", str(d / "art")])
    assert r.exit_code == 0, r.output
    return d / "art"


def test_npy_inputs_and_modality_files(art, tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 3, H, W), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "m.npy", np.array([0, 1], np.int32))
    for name in ("x.npy", "m.npy"):
        for what, data in mutations((tmp_path / name).read_bytes(), seed=len(name)):
            (tmp_path / "bad.npy").write_bytes(data)
            args = (["--input", tmp_path / "bad.npy"] if name == "x.npy"
                    else ["--input", tmp_path / "x.npy", "--modality", tmp_path / "bad.npy"])
            r = CliRunner().invoke(app, ["run", str(art), *map(str, args), "-o", str(tmp_path / "f.npy")])
            assert r.exit_code in (0, 1) and "Traceback" not in r.output, (name, what, r.output)
            if r.exit_code == 1:
                assert r.output.count("error:") == 1 and not (tmp_path / "f.npy").exists(), (what, r.output)
            else:
                feats = np.load(tmp_path / "f.npy")
                assert feats.shape == (2, 512) and np.isfinite(feats).all()
                (tmp_path / "f.npy").unlink()
    # a header that claims a huge array over a short file
    hdr = b"{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 3, 64, 32), }"
    hdr += b" " * (118 - len(hdr)) + b"\n"
    (tmp_path / "huge.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr + b"\0" * 64)
    r = CliRunner().invoke(app, ["run", str(art), "--input", str(tmp_path / "huge.npy"), "-o", str(tmp_path / "f.npy")])
    assert r.exit_code == 1 and "cannot read as .npy" in r.output and "Traceback" not in r.output, r.output


def test_cli_damaged_checkpoints_leave_the_existing_artifact(ck, art, tmp_path):
    d, _ = ck
    out = tmp_path / "out"
    shutil.copytree(art, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    data = (d / "ck" / "model.safetensors").read_bytes()
    for what, bad in list(mutations(data, seed=11, n=2))[:6]:
        shutil.rmtree(tmp_path / "bad", ignore_errors=True)
        shutil.copytree(d / "ck", tmp_path / "bad")
        (tmp_path / "bad" / "model.safetensors").write_bytes(bad)
        r = CliRunner().invoke(app, ["compile", str(tmp_path / "bad"), "--modes", "visible", "-o", str(out)])
        assert r.exit_code == 1 and "Traceback" not in r.output and r.output.count("error:") == 1, (what, r.output)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]
