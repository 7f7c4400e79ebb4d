"""An aarch64 Python with TVM's runtime, run under qemu-user: TVM's RPC server on it is an
emulated ARM device, so tuning and remote runs go through the same tracker path as a board.

Built once into the cache (REIDC_CACHE, default ~/.cache/reidc): Debian's arm64 python3.11 and
the libraries it links, unpacked with `dpkg -x` into a sysroot (needs `dpkg --add-architecture
arm64` and an apt index, so root or sudo), plus the aarch64 wheels of TVM, tvm-ffi and the RPC
server's Python dependencies. `python_command()` is a wrapper script that re-executes itself
under qemu, so the server's worker processes (which re-run sys.executable) are emulated too.
Timings under qemu say nothing about ARM speed."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from reidc.compiler.base.atomic import EXEC_MODE, cache_directory

from .arm_runtime import _versions, cache_root
from .presets import ToolchainError
from .rpc import free_port

DEBS = ("python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 libstdc++6 libbz2-1.0 "
        "libcrypt1 libdb5.3 libexpat1 libffi8 liblzma5 libncursesw6 libnsl2 libreadline8 libsqlite3-0 libssl3 "
        "libtinfo6 libtirpc3 libuuid1 zlib1g libgssapi-krb5-2 libkrb5-3 libk5crypto3 libcom-err2 libkrb5support0 "
        "libkeyutils1").split()
WHEELS = ("numpy", "ml_dtypes", "typing_extensions", "psutil", "cloudpickle", "tornado")


def home() -> Path:
    tvm_v, ffi_v = _versions()
    return cache_root() / f"aarch64-python3.11-tvm-{tvm_v}-ffi-{ffi_v}"


def _run(cmd, what, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise ToolchainError(f"{what} failed: {(r.stderr or r.stdout).strip()[-500:]}")
    return r


def _sudo() -> list[str]:
    return [] if os.geteuid() == 0 else ["sudo", "-n"]


def ensure_arm_python(progress=lambda msg: None) -> Path:
    """The directory holding `python` (the qemu wrapper), `sysroot/` and `site/`."""
    dest = home()
    if (dest / "python").is_file():
        return dest
    if not shutil.which("qemu-aarch64"):
        raise ToolchainError("qemu-aarch64 is not installed (apt-get install qemu-user)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="reidc-armpy-", dir=dest.parent) as d, cache_directory(dest) as stage:
        debs = Path(d) / "debs"
        debs.mkdir()
        (stage / "sysroot").mkdir(parents=True)
        if "arm64" not in _run(["dpkg", "--print-foreign-architectures"], "dpkg").stdout.split():
            progress("adding the arm64 architecture to dpkg and updating apt's index")
            _run(_sudo() + ["dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture arm64")
            _run(_sudo() + ["apt-get", "update", "-qq"], "apt-get update")
        progress(f"downloading Debian's arm64 python3.11 ({len(DEBS)} packages)")
        _run(["apt-get", "download", *[f"{p}:arm64" for p in DEBS]], "apt-get download", cwd=debs)
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg", "-x", str(deb), str(stage / "sysroot")], f"dpkg -x {deb.name}")
        tvm_v, ffi_v = _versions()
        progress("installing the aarch64 wheels of TVM, tvm-ffi and the RPC server's dependencies")
        _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--only-binary=:all:",
              "--platform", "manylinux_2_28_aarch64", "--platform", "manylinux2014_aarch64",
              "--platform", "manylinux_2_17_aarch64", "--python-version", "3.11", "--implementation", "cp",
              "--target", str(stage / "site"), f"apache-tvm=={tvm_v}", f"apache-tvm-ffi=={ffi_v}", *WHEELS],
             "pip install (aarch64 wheels)")
        wrapper = stage / "python"
        wrapper.write_text("#!/bin/sh\n# an aarch64 python3.11 under qemu; re-executes itself for child processes\n"
                           f'exec qemu-aarch64 -L "{dest}/sysroot" -0 "$0" "{dest}/sysroot/usr/bin/python3.11" "$@"\n')
        wrapper.chmod(EXEC_MODE)
    return dest


def server_command(progress=lambda msg: None) -> tuple[list[str], dict, list[str]]:
    """(python command, environment, extra rpc_server arguments) for an emulated ARM server."""
    d = ensure_arm_python(progress)
    env = {"PYTHONPATH": str(d / "site"), "TVM_USE_RUNTIME_LIB": "1"}
    return [str(d / "python")], env, ["--load-library", str(d / "site" / "tvm" / "lib" / "libtvm_runtime_extra.so")]


def serve(tracker: str, key: str, progress=lambda msg: None, announce=lambda msg: None) -> int:
    """`reidc qemu-server`: TVM's RPC server on the emulated aarch64 Python, registered with
    the tracker HOST:PORT under `key`, until it exits (its exit status; Ctrl-C stops it)."""
    python, env, extra = server_command(progress)
    port = free_port()
    cmd = python + ["-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port), "--port-end",
                    str(port + 1), "--tracker", tracker, "--key", key] + extra
    announce(f"serving key {key!r} to {tracker} under qemu (Ctrl-C stops)")
    return subprocess.run(cmd, env={**os.environ, **env}).returncode
