"""TVM's aarch64 runtime on this x86 machine, and reidc's C++ runner built against it.

`fetch_runtime` downloads the aarch64 wheels of the pinned TVM and tvm-ffi from PyPI and keeps
only what a board needs: libtvm_runtime.so, libtvm_ffi.so and the tvm-ffi headers (~20 MB).
`ensure_runner` cross-compiles targets/runner/reidc_run.cc against them once per source
version. Both land in a cache directory (REIDC_CACHE, default ~/.cache/reidc) atomically."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from reidc.compiler.base.atomic import EXEC_MODE, atomic_directory, atomic_file, cache_directory, guard_output_dir

from .presets import ToolchainError

SYSROOT = "/usr/aarch64-linux-gnu"
CXX = "aarch64-linux-gnu-g++"
RUNNER_SRC = Path(__file__).parent / "runner" / "reidc_run.cc"
_KEEP = {"tvm/lib/libtvm_runtime.so": "lib", "tvm_ffi/lib/libtvm_ffi.so": "lib"}


class ArmRuntimeError(ToolchainError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("REIDC_CACHE", Path.home() / ".cache" / "reidc"))


def _versions() -> tuple[str, str]:
    return metadata.version("apache-tvm"), metadata.version("apache-tvm-ffi")


def runtime_dir() -> Path:
    tvm_v, ffi_v = _versions()
    return cache_root() / f"aarch64-tvm-{tvm_v}-ffi-{ffi_v}"


def fetch_runtime(progress=lambda msg: None) -> Path:
    """Download and unpack TVM's aarch64 runtime for the installed TVM version (idempotent)."""
    dest = runtime_dir()
    if (dest / "lib" / "libtvm_runtime.so").is_file():
        return dest
    tvm_v, ffi_v = _versions()
    progress(f"downloading TVM {tvm_v} / tvm-ffi {ffi_v} aarch64 wheels from PyPI")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="reidc-wheels-", dir=dest.parent) as d, cache_directory(dest) as stage:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--platform", "manylinux_2_28_aarch64", "--python-version", "3.11", "-d", d,
               f"apache-tvm=={tvm_v}", f"apache-tvm-ffi=={ffi_v}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise ArmRuntimeError(f"could not download TVM's aarch64 wheels: {r.stderr.strip()[-400:]}")
        for whl in Path(d).glob("*.whl"):
            with zipfile.ZipFile(whl) as z:
                for name in z.namelist():
                    if name in _KEEP:
                        (stage / _KEEP[name]).mkdir(parents=True, exist_ok=True)
                        (stage / _KEEP[name] / Path(name).name).write_bytes(z.read(name))
                    elif name.startswith("tvm_ffi/include/") and not name.endswith("/"):
                        out = stage / "include" / name[len("tvm_ffi/include/"):]
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_bytes(z.read(name))
        if not (stage / "lib" / "libtvm_runtime.so").is_file() or not (stage / "lib" / "libtvm_ffi.so").is_file():
            raise ArmRuntimeError("the aarch64 wheels did not contain libtvm_runtime.so and libtvm_ffi.so")
    return dest


def build_runner(out: Path, cxx: str = CXX, progress=lambda msg: None) -> Path:
    """Cross-compile the C++ runner to `out` (the binary a board runs next to the artifact)."""
    rt = fetch_runtime(progress)
    if not shutil.which(cxx):
        raise ArmRuntimeError(f"{cxx} is not installed (apt-get install g++-aarch64-linux-gnu)")
    progress(f"building the aarch64 runner with {cxx}")
    with atomic_file(out, mode=EXEC_MODE) as tmp:
        r = subprocess.run([cxx, "-std=c++17", "-O2", str(RUNNER_SRC), f"-I{rt / 'include'}", f"-L{rt / 'lib'}",
                            "-ltvm_runtime", "-ltvm_ffi", "-Wl,-rpath,$ORIGIN", "-o", str(tmp)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise ArmRuntimeError(f"building {RUNNER_SRC.name} failed: {r.stderr.strip()[-600:]}")
    return out


def ensure_runner(progress=lambda msg: None) -> Path:
    """The cached runner binary for this runner source and TVM version."""
    tag = hashlib.sha256(RUNNER_SRC.read_bytes()).hexdigest()[:12]
    out = fetch_runtime(progress) / f"reidc_run-{tag}"
    if not out.is_file():
        build_runner(out, progress=progress)
    return out


def write_runner_bundle(out: str | Path, progress=lambda msg: None) -> list[str]:
    """`reidc runner`: the folder `out` with the aarch64 runner (`reidc_run`) and TVM's aarch64
    runtime libraries beside it, replaced whole (only if it is a bundle reidc wrote). Returns
    the libraries' names."""
    guard_output_dir(out, "runner")
    binary = ensure_runner(progress)
    libs = sorted((runtime_dir() / "lib").iterdir())
    with atomic_directory(out, "runner") as tmp:
        shutil.copy2(binary, tmp / "reidc_run")
        for lib in libs:
            shutil.copy2(lib, tmp / lib.name)
    return [lib.name for lib in libs]
