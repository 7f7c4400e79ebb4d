"""Target presets. A preset is data: the TVM target dict, the SIMD width reidc's schedules use,
the toolchain that links the library, how the code can be run from this machine, and the CPU
features a machine needs to run it (checked before local verification)."""
from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from functools import lru_cache


class TargetError(ValueError):
    """A target the user named that does not exist or is not supported."""


class ToolchainError(RuntimeError):
    """A tool a target needs (cross compiler, qemu, TVM's aarch64 runtime) is missing or failed."""


# How an artifact is executed from this (x86-64) machine.
LOCAL, QEMU_AARCH64, CUDA = "local", "qemu-aarch64", "cuda"


@dataclass(frozen=True)
class TargetPreset:
    name: str
    description: str
    tvm: dict
    vector_bits: int          # SIMD register width the CPU schedules tile for (GPU: the host's)
    requires: tuple[str, ...] = ()   # /proc/cpuinfo flags needed to run the code here
    features: tuple[str, ...] = field(default_factory=tuple)  # what the preset enables, for `reidc targets`
    cross_compiler: str | None = None  # C++ driver that links the library (None: the host's g++)
    runs_via: str = LOCAL              # local | qemu-aarch64 | cuda
    vector_registers: int = 16         # architectural SIMD registers (AVX2 16, NEON and AVX-512 32)

    @property
    def vector_lanes(self) -> int:
        """float32 lanes per SIMD register."""
        return self.vector_bits // 32

    @property
    def kind(self) -> str:
        return self.tvm["kind"]

    @property
    def arch(self) -> str:
        """The CPU architecture the library's host code is for."""
        host = self.tvm.get("host", self.tvm) if self.kind == "cuda" else self.tvm
        return "aarch64" if str(host.get("mtriple", "")).startswith("aarch64") else "x86_64"

    @property
    def cuda_arch(self) -> str | None:
        return self.tvm.get("arch") if self.kind == "cuda" else None

    def tvm_target(self):
        import tvm  # targets/ is one of the layers allowed to import TVM
        return tvm.target.Target(self.tvm)

    def missing_on_host(self) -> list[str]:
        """What this machine lacks to run (and so verify) code built for the preset."""
        machine = platform.machine()
        if self.runs_via == QEMU_AARCH64:
            if machine == "aarch64":
                return []
            need = [t for t in ("qemu-aarch64", self.cross_compiler or "aarch64-linux-gnu-g++") if not shutil.which(t)]
            return [f"{t} (apt-get install qemu-user g++-aarch64-linux-gnu)" for t in need]
        if self.runs_via == CUDA:
            from .devices import cuda_device_count
            missing = [] if cuda_device_count() else ["an NVIDIA GPU"]
            if self.arch != ("aarch64" if machine == "aarch64" else "x86_64"):
                missing.append(f"an {self.arch} host CPU")
            return missing
        if machine not in ("x86_64", "AMD64"):
            return [f"an x86-64 CPU (this is {machine})"]
        have = host_features()
        return [f for f in self.requires if f not in have]


@lru_cache(maxsize=1)
def host_features() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


_AVX2 = ("avx2", "fma", "f16c", "bmi2", "movbe")
_AVX512 = _AVX2 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
_A64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}
_A64_CXX = "aarch64-linux-gnu-g++"


def _arm(name, description, mcpu, mattr, features):
    tvm = {**_A64, **({"mcpu": mcpu} if mcpu else {}), "mattr": list(mattr)}
    return TargetPreset(name, description, tvm, 128, (), features, _A64_CXX, QEMU_AARCH64, 32)


def _cuda(sm, description, host_arm=False):
    host = {**_A64, "mcpu": "cortex-a78ae", "mattr": ["+neon"]} if host_arm else {"kind": "llvm", "mcpu": "x86-64"}
    return TargetPreset(f"sm{sm}", description, {"kind": "cuda", "arch": f"sm_{sm}", "host": host},
                        128, (), (f"sm_{sm}", "__popcll", "shared-memory conv tiles", "dlight GPU rules") + (("aarch64 host",) if host_arm else ()),
                        _A64_CXX if host_arm else None, CUDA, 32 if host_arm else 16)


PRESETS: dict[str, TargetPreset] = {p.name: p for p in (
    TargetPreset("x86-64", "any x86-64 CPU (SSE2 only)", {"kind": "llvm", "mcpu": "x86-64"}, 128,
                 (), ("sse2",)),
    TargetPreset("x86-avx2", "x86-64-v3: Haswell / Zen and newer", {"kind": "llvm", "mcpu": "x86-64-v3"}, 256,
                 _AVX2, ("avx2", "fma", "popcnt")),
    TargetPreset("x86-avx512", "x86-64-v4: Skylake-SP / Zen 4 and newer, +VPOPCNTDQ",
                 {"kind": "llvm", "mcpu": "x86-64-v4", "mattr": ["+avx512vpopcntdq"]}, 512,
                 _AVX512 + ("avx512_vpopcntdq",), ("avx512f", "avx512bw", "avx512vl", "avx512vpopcntdq"),
                 vector_registers=32),
    _arm("aarch64", "any 64-bit ARM CPU with NEON (ARMv8-A)", None, ("+neon",), ("neon", "cnt popcount")),
    _arm("rpi4", "Raspberry Pi 4 (Cortex-A72)", "cortex-a72", ("+neon",), ("neon", "cnt popcount", "cortex-a72")),
    _arm("rpi5", "Raspberry Pi 5 (Cortex-A76)", "cortex-a76", ("+neon", "+dotprod"),
         ("neon", "dotprod", "fp16", "cnt popcount", "cortex-a76")),
    _arm("orin-cpu", "Jetson Orin CPU (Cortex-A78AE)", "cortex-a78ae", ("+neon", "+dotprod"),
         ("neon", "dotprod", "fp16", "cnt popcount", "cortex-a78ae")),
    _cuda(75, "NVIDIA T4 (Turing)"),
    _cuda(86, "NVIDIA A10 / RTX 30 (Ampere)"),
    _cuda(87, "Jetson Orin GPU (Ampere), aarch64 host", host_arm=True),
    _cuda(89, "NVIDIA L4 / RTX 40 (Ada)"),
    _cuda(90, "NVIDIA H100 (Hopper)"),
)}


def _host_preset() -> TargetPreset:
    have = host_features()
    base = next((PRESETS[n] for n in ("x86-avx512", "x86-avx2") if all(f in have for f in PRESETS[n].requires)),
                PRESETS["x86-64"])
    cores = os.cpu_count() or 1
    return TargetPreset("host", f"this machine: {base.name} ({cores} cores)", {**base.tvm, "num-cores": cores},
                        base.vector_bits, base.requires, base.features, vector_registers=base.vector_registers)


def _from_dict(d: dict) -> TargetPreset:
    """A user's TVM target dict for hardware the presets miss: llvm (x86 or aarch64) or cuda."""
    kind = d.get("kind")
    if kind == "cuda":
        if not str(d.get("arch", "")).startswith("sm_"):
            raise TargetError('a cuda target needs "arch": "sm_XY"')
        host = d.get("host", {"kind": "llvm"})
        arm = str(host.get("mtriple", "")).startswith("aarch64")
        return TargetPreset("custom", "user-supplied TVM target", d, 128, (), (d["arch"],),
                            _A64_CXX if arm else None, CUDA, 32 if arm else 16)
    if kind != "llvm":
        raise TargetError(f"target kind {kind!r} is not supported (llvm for x86-64 / aarch64, or cuda)")
    triple = str(d.get("mtriple", ""))
    if triple.startswith("aarch64"):
        return TargetPreset("custom", "user-supplied TVM target", d, 128, (), (), _A64_CXX, QEMU_AARCH64, 32)
    if triple and not triple.startswith("x86_64"):
        raise TargetError(f"target triple {triple!r} is not supported (x86_64-* or aarch64-*)")
    bits = 512 if "v4" in str(d.get("mcpu", "")) or "avx512" in str(d.get("mattr", "")) else 256
    return TargetPreset("custom", "user-supplied TVM target", d, bits, vector_registers=32 if bits == 512 else 16)


def get_target(name_or_json: str) -> TargetPreset:
    """A preset name, `host`, or a TVM target dict as JSON (for hardware the presets miss)."""
    if name_or_json == "host":
        return _host_preset()
    if name_or_json in PRESETS:
        return PRESETS[name_or_json]
    if name_or_json.lstrip().startswith("{"):
        try:
            d = json.loads(name_or_json)
        except json.JSONDecodeError as e:
            raise TargetError(f"target JSON does not parse: {e}") from None
        if not isinstance(d, dict):
            raise TargetError("target JSON must be an object such as {\"kind\": \"llvm\", \"mcpu\": \"x86-64-v3\"}")
        return _from_dict(d)
    raise TargetError(f"unknown target {name_or_json!r}; known: host, {', '.join(PRESETS)} (or a TVM target JSON)")


def preset_from_manifest(entry: dict) -> TargetPreset:
    """The preset an artifact was built for, from its manifest's "target" entry."""
    name, d = entry.get("preset"), entry.get("tvm", {})
    if name in PRESETS and PRESETS[name].tvm == d:
        return PRESETS[name]
    return _from_dict(d) if name != "host" else get_target("host")
