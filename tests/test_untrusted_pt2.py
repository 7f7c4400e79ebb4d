"""An untrusted .pt2 must not run code inside `reidc compile`. The crafted archives below hold
a pickle whose loading creates a file; a plain `torch.export.load` runs it (checked, so the
payload is real), reidc refuses the archive with one line and the file never appears."""
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reidc.compiler.cli import app
from reidc.compiler.base.errors import CaptureError
from reidc.frontend.pt2 import check_archive, load_program


class _Payload:
    """Unpickling this opens (creates) `marker`: what any code execution could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)

    def forward(self, x):
        return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.bn(self.conv(x))), 1), 1)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    d = tmp_path_factory.mktemp("pt2")
    ep = torch.export.export(_Net().eval(), (torch.randn(2, 3, 16, 8),))
    torch.export.save(ep, str(d / "plain.pt2"))
    return d / "plain.pt2"


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy a zip, letting `edit(name, bytes) -> bytes | None` change or drop entries; `edit`
    may return extra entries under the key None."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            data = edit(info.filename[len(root) + 1:], zin.read(info))
            if data is not None:
                zout.writestr(info, data)
        for name, data in (edit(None, None) or {}).items():
            zout.writestr(f"{root}/{name}", data)
    return dst


def _pickled_weight(marker):
    def edit(name, data):
        if name is None:
            return {}
        if name == "data/weights/model_weights_config.json":
            cfg = json.loads(data)
            first = next(iter(cfg["config"]))
            cfg["config"][first]["use_pickle"] = True
            return json.dumps(cfg).encode()
        if name == "data/weights/weight_0":
            return pickle.dumps(_Payload(marker), protocol=2)
        return data
    return edit


def _pickled_sample_inputs(marker):
    return lambda name, data: {} if name is None else (
        pickle.dumps(_Payload(marker), protocol=2) if name == "data/sample_inputs/model.pt" else data)


def _custom_object(marker):
    def edit(name, data):
        if name is None:
            return {"data/constants/opaque_obj_0": pickle.dumps(_Payload(marker))}
        if name == "data/constants/model_constants_config.json":
            return json.dumps({"config": {"evil": {"path_name": "opaque_obj_0", "is_param": False,
                                                   "use_pickle": True, "tensor_meta": None}}}).encode()
        return data
    return edit


def _aoti_library(marker):
    return lambda name, data: {"data/aotinductor/model/model.so": b"\x7fELF"} if name is None else data


def _legacy_weights(marker):
    return lambda name, data: {"data/weights/model.pt": pickle.dumps(_Payload(marker))} if name is None else data


CRAFTED = {"a pickled weight": (_pickled_weight, "stored as a pickle"),
           "pickled sample inputs": (_pickled_sample_inputs, "sample inputs"),
           "an opaque object constant": (_custom_object, "pickled objects"),
           "an AOTInductor library": (_aoti_library, "AOTInductor"),
           "a legacy weights pickle": (_legacy_weights, "legacy pickled weights")}


@pytest.mark.parametrize("kind", list(CRAFTED))
def test_a_crafted_pt2_is_refused_and_its_payload_never_runs(plain, tmp_path, kind):
    craft, message = CRAFTED[kind]
    marker = tmp_path / "pwned"
    evil = _rewrite(plain, tmp_path / "evil.pt2", craft(marker))
    r = CliRunner().invoke(app, ["compile", str(evil), "-o", str(tmp_path / "out")])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    text = " ".join(r.output.split())
    assert "refused to load" in text and message in text, text
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["a pickled weight", "pickled sample inputs"])
def test_the_payloads_are_real(plain, tmp_path, kind):
    """Without reidc's check, torch.export.load runs them (in a child process, not here)."""
    marker = tmp_path / "pwned"
    evil = _rewrite(plain, tmp_path / "evil.pt2", CRAFTED[kind][0](marker))
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_untrusted_pt2, torch\n"
            f"try:\n    torch.export.load({str(evil)!r})\nexcept Exception:\n    pass\n")
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert marker.exists()


def test_a_plain_pt2_still_loads(plain):
    check_archive(plain)
    ep = load_program(plain)
    x = torch.randn(2, 3, 16, 8)
    assert ep.module()(x).shape == (2, 8)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 3], "not a torch.export archive"),
    (lambda b: b"PK\x03\x04" + b"\x00" * 40, "not a torch.export archive"),
])
def test_damaged_archives_are_one_line(plain, tmp_path, damage, message):
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(damage(plain.read_bytes()))
    with pytest.raises(CaptureError, match=message):
        load_program(bad)


def test_a_path_escaping_the_archive_is_refused(plain, tmp_path):
    evil = _rewrite(plain, tmp_path / "evil.pt2", lambda n, d: {"extra/../../x": b"1"} if n is None else d)
    with pytest.raises(CaptureError, match="unsafe path"):
        check_archive(evil)


def test_a_compile_reads_and_loads_the_pt2_once(plain, tmp_path, monkeypatch):
    """One read of the file, checked and loaded from the same bytes (a file swapped between the
    check and the load is never loaded), and one torch.export.load, for a whole compile
    including its verification."""
    import io
    from reidc.compiler.compile import CompileOptions, compile_checkpoint
    opened, loaded = [], []
    real_open, real_load = io.open, torch.export.load

    def counting_open(file, *a, **k):
        if str(file) == str(plain):
            opened.append(file)
        return real_open(file, *a, **k)
    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr("builtins.open", counting_open)
    monkeypatch.setattr(torch.export, "load", lambda f, *a, **k: loaded.append(f) or real_load(f, *a, **k))
    man = compile_checkpoint(plain, tmp_path / "art", CompileOptions(verify_batch=2))
    assert man["verification"]["status"] == "passed"
    assert len(opened) == 1 and len(loaded) == 1 and not isinstance(loaded[0], (str, Path))
