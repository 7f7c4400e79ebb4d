"""Fault injection: everyday mistakes and faults a user meets. Each ends in one `error:` line
(exit 1) or one `interrupted` line (exit 130), never a traceback, never a user's file lost,
never a half-written output, never a wrong answer with exit 0."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from reidc.compiler.cli import app
from reidc.compiler.base.atomic import (EXEC_MODE, OutputError, atomic_directory, atomic_file, cache_directory,
                                  guard_output_dir)

runner = CliRunner()
H, W = 64, 32


def cli(*args, code=0, env=None):
    r = runner.invoke(app, [str(a) for a in args], env=env)
    text = r.output
    assert "Traceback" not in text, text
    assert r.exit_code == code, (r.exit_code, text, r.exception)
    if code == 1:
        assert text.count("error:") == 1, text
    return " ".join(text.split())


def tree(path: Path) -> dict:
    """Every file under `path` with its bytes (to prove nothing changed)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def no_partials(folder: Path):
    assert not [p for p in folder.iterdir() if ".partial" in p.name or ".old-" in p.name]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    cli("zoo", "export", "cmnas-resnet18", "--split", "random:7", "--input-size", f"{H}x{W}", "-o", d / "ck")
    cli("compile", d / "ck", "--modes", "visible,mixed", "-o", d / "art")
    x = np.random.default_rng(0).standard_normal((2, 3, H, W)).astype(np.float32)
    np.save(d / "x.npy", x)
    return d


@pytest.fixture
def art(work, tmp_path):
    """A private copy of the compiled artifact to damage."""
    shutil.copytree(work / "art", tmp_path / "art")
    return tmp_path / "art"


# -- output folders ---------------------------------------------------------------------------

def test_o_never_deletes_a_users_folder(work, tmp_path, monkeypatch):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    before = tree(tmp_path)
    monkeypatch.chdir(user)
    assert "current folder" in cli("zoo", "export", "cmnas-resnet18", "-o", ".", code=1)
    assert "current folder" in cli("compile", work / "ck", "-o", tmp_path, code=1)
    monkeypatch.chdir(tmp_path)
    assert "files reidc did not write" in cli("compile", work / "ck", "-o", user, code=1)
    assert "thesis.tex" in cli("zoo", "export", "cmnas-resnet18", "-o", user, code=1)
    (tmp_path / "afile").write_text("x")
    assert "not a folder" in cli("compile", work / "ck", "-o", tmp_path / "afile", code=1)
    assert "is a file" in cli("compile", work / "ck", "-o", tmp_path / "afile" / "sub", code=1)
    assert tree(tmp_path) == {**before, "afile": b"x"}
    no_partials(tmp_path)


def test_o_never_names_the_input(work, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(work / "ck", ck)
    before = tree(ck)
    assert "holds the input" in cli("compile", ck, "-o", ck, code=1)
    assert "holds the input" in cli("compile", ck / "model.safetensors", "--arch", ck / "arch.json", "-o", ck, code=1)
    assert "holds the input" in cli("compile", ck, "-o", tmp_path, code=1)  # a parent of the input
    assert "inside the input folder" in cli("compile", ck, "-o", ck / "art", code=1)
    cfg = tmp_path / "cfgdir"
    cfg.mkdir()
    (cfg / "config.cfg").write_text(" ".join(["1"] * 20))
    assert "holds the input" in cli("zoo", "export", "cmnas-resnet18", "--split-config", cfg / "config.cfg",
                                    "-o", cfg, code=1)
    assert tree(ck) == before


def test_an_artifact_is_replaced_whole_and_only_if_it_is_reidcs(work, tmp_path):
    out = tmp_path / "art"
    shutil.copytree(work / "art", out)
    old = tree(out)
    # a failing compile (bad weights) leaves the old artifact byte for byte
    bad = tmp_path / "bad"
    shutil.copytree(work / "ck", bad)
    w = bad / "model.safetensors"
    w.write_bytes(w.read_bytes()[:500])
    assert "corrupt or truncated" in cli("compile", bad, "-o", out, code=1)
    assert tree(out) == old
    # success replaces it (with a visible-only build: the old mixed entry is gone)
    cli("compile", work / "ck", "--modes", "visible", "-o", out)
    assert json.loads((out / "manifest.json").read_text())["modes"] == ["visible"]
    # a file of the user's inside: refused, kept
    (out / "notes.txt").write_text("mine")
    assert "notes.txt" in cli("compile", work / "ck", "--modes", "visible", "-o", out, code=1)
    assert (out / "notes.txt").read_text() == "mine"
    no_partials(tmp_path)


def test_the_swap_keeps_the_old_output_when_the_work_fails(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as tmp:
            (tmp / "manifest.json").write_text("new")
            raise RuntimeError("build failed")
    assert (out / "manifest.json").read_text() == "{}"
    with atomic_directory(out) as tmp:
        (tmp / "manifest.json").write_text("new")
    assert (out / "manifest.json").read_text() == "new"
    no_partials(tmp_path)
    with pytest.raises(OutputError, match="symbolic link"):
        (tmp_path / "link").symlink_to(out)
        guard_output_dir(tmp_path / "link", "artifact")


def test_one_file_mode_whatever_wrote_the_files(tmp_path):
    """Files 0644, programs and folders 0755, whatever the umask or the writer (a library
    writing with its own mode); a tool's output file and a cache entry likewise."""
    old = os.umask(0o077)
    try:
        with atomic_directory(tmp_path / "art") as tmp:
            (tmp / "manifest.json").write_text("{}")
            (tmp / "model.so").write_bytes(b"\x7fELF")
            os.chmod(tmp / "model.so", 0o700)
        with atomic_file(tmp_path / "prog", mode=EXEC_MODE) as tmp:
            tmp.write_text("#!/bin/sh\n")
        with cache_directory(tmp_path / "cache") as tmp:
            (tmp / "lib").mkdir()
            (tmp / "lib" / "f").write_text("x")
    finally:
        os.umask(old)
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in sorted(tmp_path.rglob("*"))}
    assert modes == {"art": "0o755", "art/manifest.json": "0o644", "art/model.so": "0o755", "prog": "0o755",
                     "cache": "0o755", "cache/lib": "0o755", "cache/lib/f": "0o644"}


def test_a_cache_entry_is_published_once_and_a_failed_one_never(tmp_path):
    with cache_directory(tmp_path / "c") as tmp:
        (tmp / "f").write_text("first")
    with cache_directory(tmp_path / "c") as tmp:   # another process got there first: theirs is kept
        (tmp / "f").write_text("second")
    assert (tmp_path / "c" / "f").read_text() == "first"
    (tmp_path / "out").write_text("old")
    for make in (lambda: cache_directory(tmp_path / "d"), lambda: atomic_file(tmp_path / "out")):
        with pytest.raises(RuntimeError):
            with make() as tmp:
                (tmp / "f" if tmp.is_dir() else tmp).write_text("half")
                raise RuntimeError("the tool failed")
    assert not (tmp_path / "d").exists() and (tmp_path / "out").read_text() == "old"
    no_partials(tmp_path)


def test_read_only_outputs_are_one_line(work, readonly):
    np_in = work / "x.npy"
    assert "read-only" in cli("compile", work / "ck", "-o", readonly / "a", code=1)
    assert "read-only" in cli("zoo", "export", "cmnas-resnet18", "-o", readonly / "c", code=1)
    assert "read-only" in cli("run", work / "art", "--input", np_in, "-o", readonly / "f.npy", code=1)
    assert "read-only" in cli("runner", "-o", readonly / "r", code=1)


def test_run_output_paths(work, tmp_path):
    x = work / "x.npy"
    assert "does not exist" in cli("run", work / "art", "--input", x, "-o", tmp_path / "no" / "f.npy", code=1)
    assert "is a folder" in cli("run", work / "art", "--input", x, "-o", tmp_path, code=1)
    (tmp_path / "f.npy").write_text("old")
    cli("run", work / "art", "--input", x, "-o", tmp_path / "f.npy")
    assert np.load(tmp_path / "f.npy").shape == (2, 512)
    assert oct((tmp_path / "f.npy").stat().st_mode & 0o777) == "0o644"
    no_partials(tmp_path)


# -- Ctrl-C -----------------------------------------------------------------------------------

@pytest.mark.parametrize("phase, delay", [("loading", 0.5), ("lowering to Relax", 1.0),
                                          ("verifying the visible entry", 0.0)])  # verification takes ~1 s
def test_ctrl_c_during_compile_keeps_the_old_artifact(work, tmp_path, phase, delay):
    """SIGINT in each phase of `reidc compile` (PyTorch import and capture, TVM's C++ build,
    verification): one line, exit 130, the previous artifact byte for byte, nothing partial."""
    out = tmp_path / "art"
    shutil.copytree(work / "art", out)
    old = tree(out)
    reidc = Path(sys.executable).parent / "reidc"
    p = subprocess.Popen([str(reidc), "compile", str(work / "ck"), "-o", str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    lines = []
    for line in p.stderr:  # progress lines; wait for the phase, then interrupt inside it
        lines.append(line)
        if phase in line:
            time.sleep(delay)
            p.send_signal(signal.SIGINT)
            break
    _, rest = p.communicate(timeout=120)
    err = "".join(lines) + rest
    assert p.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted"), err
    assert tree(out) == old
    no_partials(tmp_path)


# -- the CPU contract ---------------------------------------------------------------------------

def _lacking_feature():
    """An x86 feature LLVM knows that this CPU lacks (AMD-only ones on Intel, AVX-512 on Zen 3)."""
    from reidc.targets.presets import missing_cpu_features
    for f in ("sse4a", "xop", "fma4", "avx512f", "amx-tile", "avx512vp2intersect"):
        if missing_cpu_features([f], "x86_64"):
            return f
    pytest.fail("this CPU has every feature tried; extend the list")


def test_a_build_for_features_this_cpu_lacks_never_runs_here(work, tmp_path):
    feat = _lacking_feature()
    target = json.dumps({"kind": "llvm", "mcpu": "x86-64", "mattr": [f"+{feat}"]})
    t0 = time.monotonic()
    msg = cli("compile", work / "ck", "--modes", "visible", "--target", target, "-o", tmp_path / "a", code=1)
    assert "cannot be verified on this machine" in msg and feat in msg
    assert time.monotonic() - t0 < 20 and not (tmp_path / "a").exists()  # refused before building
    cli("compile", work / "ck", "--modes", "visible", "--target", target, "--no-verify", "-o", tmp_path / "a")
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert feat in man["target"]["cpu_features"] and "sse2" in man["target"]["cpu_features"]
    msg = cli("run", tmp_path / "a", "--input", work / "x.npy", "-o", tmp_path / "f.npy", code=1)
    # LLVM may add what the feature implies (+xop brings fma4): the list names it among them
    needs = msg.split("needs ", 1)[1].split(", which")[0].split(", ")
    assert feat in needs and not (tmp_path / "f.npy").exists()
    assert feat in cli("verify", tmp_path / "a", code=1)


def test_a_host_build_records_what_host_was(work, art, tmp_path):
    """An artifact built for `host` elsewhere (simulated: its manifest says it needs a feature
    this CPU lacks) is refused here instead of resolving `host` to this machine."""
    from reidc.targets import get_target
    man = json.loads((art / "manifest.json").read_text())
    assert man["target"]["preset"] == "host"
    assert man["target"]["cpu_features"] == list(get_target("host").cpu_features())
    feat = _lacking_feature()
    man["target"]["cpu_features"].append(feat)
    (art / "manifest.json").write_text(json.dumps(man))
    assert feat in cli("run", art, "--input", work / "x.npy", "-o", tmp_path / "f.npy", code=1)


@pytest.mark.parametrize("target, message", [
    ('{"kind": "llvm", "mcpu": "pentium-9000"}', "mcpu 'pentium-9000' is not a CPU LLVM knows"),
    ('{"kind": "llvm", "mcpu": "x86-64", "mattr": ["+avx9"]}', "'avx9' is not a feature LLVM knows"),
    ('{"kind": "llvm", "mattr": ["avx2"]}', "expected +feature or -feature"),
    ('{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-z1"}', "cortex-z1"),
])
def test_unknown_cpu_names_are_refused_before_building(work, tmp_path, target, message):
    assert message in cli("compile", work / "ck", "--target", target, "-o", tmp_path / "a", code=1)
    assert not (tmp_path / "a").exists()


def test_a_missing_cross_compiler_is_refused_before_building(work, tmp_path):
    t0 = time.monotonic()
    msg = cli("compile", work / "ck", "--target", "rpi4", "-o", tmp_path / "a", code=1, env={"PATH": "/nonexistent"})
    assert "aarch64-linux-gnu-g++" in msg and "not installed" in msg
    assert time.monotonic() - t0 < 10 and not (tmp_path / "a").exists()


# -- integrity of artifacts ---------------------------------------------------------------------

def _flip_byte(path: Path, at: int):
    b = bytearray(path.read_bytes())
    b[at] ^= 0x01
    path.write_bytes(bytes(b))


@pytest.mark.parametrize("damage, message", [
    (lambda a: _flip_byte(a / "model.so", (a / "model.so").stat().st_size // 2), "differs from what was compiled"),
    (lambda a: (a / "model.so").write_bytes((a / "model.so").read_bytes()[:4096]), "differs from what was compiled"),
    (lambda a: (a / "model.so").unlink(), "not a reidc artifact"),
    (lambda a: (a / "manifest.json").write_text('{"modes": '), "corrupt manifest"),
    (lambda a: (a / "manifest.json").write_text("[]"), "not a JSON object"),
    (lambda a: _edit(a, lambda m: m.pop("modes")), "'modes'"),
    (lambda a: _edit(a, lambda m: m.update(modes="visible")), "'modes'"),
    (lambda a: _edit(a, lambda m: m.update(input_shape=[3, -1, 32])), "'input_shape'"),
    (lambda a: _edit(a, lambda m: m.update(target=None)), "'target'"),
    (lambda a: _edit(a, lambda m: m.update(batch="two")), "'batch'"),
    (lambda a: _edit(a, lambda m: m["files"].update({"kernels.cu": "0" * 64})), "kernels.cu is missing"),
])
def test_damaged_artifacts_are_refused_before_loading(work, art, tmp_path, damage, message):
    damage(art)
    assert message in cli("run", art, "--input", work / "x.npy", "-o", tmp_path / "f.npy", code=1)
    assert not (tmp_path / "f.npy").exists()


def _edit(art: Path, fn):
    man = json.loads((art / "manifest.json").read_text())
    fn(man)
    (art / "manifest.json").write_text(json.dumps(man))


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b"not an elf at all" * 10, "invalid ELF header"),
    (lambda b: b[:18] + bytes([40, 0]) + b[20:], "built for another CPU"),  # e_machine: ARM32
    # a sound x86-64 shared library that TVM's loader refuses (once an AttributeError traceback)
    (lambda b: min(Path(np.__file__).parent.rglob("*.so"), key=lambda p: p.stat().st_size).read_bytes(),
     "TVM cannot load the library"),
])
def test_a_damaged_library_without_digests_is_refused_not_a_crash(work, art, tmp_path, damage, message):
    """Older manifests have no digests: the library's ELF structure is still checked (a
    truncated library used to end in a bus error)."""
    _edit(art, lambda m: m.pop("files"))
    lib = art / "model.so"
    lib.write_bytes(damage(lib.read_bytes()))
    assert message in cli("run", art, "--input", work / "x.npy", "-o", tmp_path / "f.npy", code=1)


# -- inputs that are numbers --------------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x).astype(np.float32), "NaN or Inf"),
    (lambda x: np.full_like(x, np.nan), "NaN or Inf"),
    (lambda x: np.where(x > 2, np.inf, x).astype(np.float32), "NaN or Inf"),
    (lambda x: x.astype(np.float64) * 1e300, "NaN or Inf"),  # beyond float32
    (lambda x: x.astype(np.complex64), "dtype complex64"),
    (lambda x: x.astype(bool), "dtype bool"),
    (lambda x: x[:, :2], "input has shape"),
])
def test_bad_input_numbers_are_refused(work, tmp_path, make, message):
    x = np.load(work / "x.npy")
    np.save(tmp_path / "bad.npy", make(x))
    assert message in cli("run", work / "art", "--input", tmp_path / "bad.npy", "-o", tmp_path / "f.npy", code=1)
    assert not (tmp_path / "f.npy").exists()


def test_object_and_integer_inputs(work, tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "cannot read as .npy" in cli("run", work / "art", "--input", tmp_path / "obj.npy", "-o", tmp_path / "f.npy",
                                        code=1)
    np.save(tmp_path / "u8.npy", np.zeros((1, 3, H, W), np.uint8))
    out = cli("run", work / "art", "--input", tmp_path / "u8.npy", "-o", tmp_path / "g.npy")
    assert "warning: input has integer dtype uint8" in out and "no scaling" in out


@pytest.mark.parametrize("vector, message", [
    (np.array([0.5, 1.0]), "values of 0 (visible) or 1 (infrared)"),
    (np.array([0, 1, 1]), "must hold 2 values"),
    (np.array([0j, 1j]), "dtype complex128"),
])
def test_bad_modality_vectors(work, tmp_path, vector, message):
    np.save(tmp_path / "m.npy", vector)
    assert message in cli("run", work / "art", "--input", work / "x.npy", "--modality", tmp_path / "m.npy",
                          "-o", tmp_path / "f.npy", code=1)


def test_the_input_contract_is_in_the_manifest_and_help(work):
    from reidc.compiler.runtime import INPUT_CONTRACT
    assert json.loads((work / "art" / "manifest.json").read_text())["input_contract"] == INPUT_CONTRACT
    assert "finite values" in cli("run", "--help")


# -- weights ------------------------------------------------------------------------------------

def test_blank_weights(work, tmp_path):
    from safetensors.torch import load_file, save_file
    w = load_file(str(work / "ck" / "model.safetensors"))
    for name, zero in (("blank", lambda k, v: k.endswith(".weight") and v.ndim >= 2), ("one", lambda k, v: k == "conv1.weight")):
        shutil.copytree(work / "ck", tmp_path / name)
        save_file({k: v * 0 if zero(k, v) else v for k, v in w.items()}, str(tmp_path / name / "model.safetensors"))
    assert "every convolution and dense weight is zero" in cli("compile", tmp_path / "blank", "-o", tmp_path / "a", code=1)
    out = cli("compile", tmp_path / "one", "--modes", "visible", "-o", tmp_path / "b")
    assert "warning:" in out and "1 of 21 conv/dense weights are all zero (first 'conv1.weight')" in out


# -- the top-level handler ----------------------------------------------------------------------

def test_an_internal_error_is_one_line_with_a_hint_and_debug_shows_it(work, tmp_path, monkeypatch):
    import reidc.compiler.compile as comp

    def broken(*a, **k):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(comp, "prepare", broken)
    out = cli("compile", work / "ck", "-o", tmp_path / "a", code=1)
    assert "error: ZeroDivisionError: a bug" in out and "--debug" in out
    r = runner.invoke(app, ["--debug", "compile", str(work / "ck"), "-o", str(tmp_path / "a")])
    assert isinstance(r.exception, ZeroDivisionError)


def test_file_system_errors_name_the_operation_and_path(tmp_path):
    from reidc.compiler.base.errors import one_line
    try:
        (tmp_path / "missing" / "f").write_text("x")
    except OSError as e:
        line = one_line(e)
    assert line.startswith("cannot open ") and str(tmp_path / "missing" / "f") in line and "No such file" in line


def test_version():
    from reidc.compiler.base.version import __version__
    assert cli("--version") == f"reidc {__version__}"


def test_the_runtime_runs_an_artifact_where_torch_is_absent(work):
    """A deployment host has TVM's runtime and numpy, not PyTorch: `torch` made unimportable
    (sys.modules['torch'] = None), the artifact still loads, checks and runs, and nothing of
    the frontend is loaded."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np\n"
            "from reidc.compiler.runtime import Compiled\n"
            f"c = Compiled({str(work / 'art')!r})\n"
            f"f = c.run(np.load({str(work / 'x.npy')!r}), np.array([1, 0]))\n"
            "assert f.shape == (2, 512) and np.isfinite(f).all()\n"
            "assert not [m for m in sys.modules if m.startswith('torch') and sys.modules[m] is not None]\n"
            "assert not [m for m in sys.modules if m.startswith('reidc.frontend')]\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
